//! What the policy tests share: a `[node]` that validates, shorthands for the tables tests
//! add to it, and the steps every test takes (parse a policy, expect its errors, make a job,
//! read a decision). Each test file includes it with `mod support;`.

// each test binary uses only some of these
#![allow(dead_code)]

use extnet_policy::{Decision, Groups, JobIdentity, Policy, PolicyError, ValidationError};

/// The least a valid policy needs: version and a node whose gateway is inside its one
/// internal network. Everything else takes its default.
pub const NODE: &str = r#"version = 1
[node]
interface = "eth0"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
"#;

/// [`NODE`], then `extra` (more `[node]` keys, or further tables).
pub fn with(extra: &str) -> String {
    format!("{NODE}{extra}")
}

/// [`NODE`] with `internal = list` instead of its one network.
pub fn with_internal(list: &str) -> String {
    NODE.replace("[\"10.99.0.0/24\"]", list)
}

/// A `[ports]` table: the default pool's range and block size.
pub fn ports(range: &str, block_size: u32) -> String {
    format!("[ports]\nrange = \"{range}\"\nblock_size = {block_size}\n")
}

/// A `[[profile]]` named `name`, then `body`.
pub fn profile(name: &str, body: &str) -> String {
    format!("[[profile]]\nname = \"{name}\"\n{body}")
}

/// A `[[profile]]` named `name` that allows user `x` (enough to be valid), then `rest`.
pub fn profile_x(name: &str, rest: &str) -> String {
    profile(name, &format!("users = [\"x\"]\n{rest}"))
}

/// The policy of `text`, which must be valid.
#[track_caller]
pub fn parse_ok(text: &str) -> Policy {
    Policy::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("{e}\nin:\n{text}"))
}

/// Why `text` is refused; it must be.
#[track_caller]
pub fn parse_err(text: &str) -> PolicyError {
    match Policy::from_toml(text, "test.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// The problems of `text`, which must not validate: at least one.
#[track_caller]
pub fn errors(text: &str) -> Vec<ValidationError> {
    let e = parse_err(text);
    let v = e.errors().to_vec();
    assert!(!v.is_empty(), "no validation errors in {e}");
    v
}

/// The problems the validator finds in `text`, which must parse as TOML but not validate.
#[track_caller]
pub fn invalid_errors(text: &str) -> Vec<ValidationError> {
    match parse_err(text) {
        PolicyError::Invalid { errors, .. } => errors,
        e => panic!("{e}"),
    }
}

/// A job of `user` whose groups are known to be `groups`.
pub fn job(user: &str, groups: &[&str]) -> JobIdentity {
    JobIdentity {
        user: user.into(),
        groups: Groups::known(groups.iter().map(|g| g.to_string()).collect()),
        ..Default::default()
    }
}

/// The profile, whether it came without asking, and the rule, of a decision that must be a
/// grant.
#[track_caller]
pub fn granted(d: Decision) -> (String, bool, String) {
    match d {
        Decision::Granted {
            profile,
            auto,
            rule,
        } => (profile, auto, rule),
        d => panic!("expected a grant: {d:?}"),
    }
}

/// The reason of a decision that must be a denial.
#[track_caller]
pub fn denied(d: Decision) -> String {
    match d {
        Decision::Denied { reason } => reason,
        d => panic!("expected a denial: {d:?}"),
    }
}

/// `text` must be refused with an error on `key` whose problem and hint contain these, and
/// that names its line.
#[track_caller]
pub fn refused(text: &str, key: &str, problem: &str, hint: &str) {
    let errors = invalid_errors(text);
    assert!(
        errors.iter().any(|e| e.key == key
            && e.problem.contains(problem)
            && e.hint.contains(hint)
            && e.line.is_some()),
        "no error on {key} with {problem:?} / {hint:?} in {errors:#?}"
    );
}

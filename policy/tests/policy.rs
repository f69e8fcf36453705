//! Unit tests for parsing, validation and decisions (no root needed).

mod support;

use extnet_policy::{decide, Decision, Mode, Policy, Request};
use support::{
    denied, granted, invalid_errors, job, parse_err, parse_ok, with, with_internal, NODE,
};

fn policy(extra: &str) -> Policy {
    parse_ok(&with(extra))
}

/// The message of a policy that must be refused.
fn invalid(text: &str) -> String {
    parse_err(text).to_string()
}

#[test]
fn defaults_are_filled_in() {
    let p = policy("");
    assert_eq!(p.node.mode, Mode::Cgroup);
    assert_eq!(p.node.route_table, 7700);
    assert_eq!(p.node.fwmark, 0x10000);
    assert_eq!(p.ports.first, 20000);
    assert_eq!(p.ports.block_size, 256);
    assert_eq!(p.ports.quarantine_secs, 120);
    assert_eq!(p.ports.blocks(), 156);
    assert_eq!(p.ports.block(1), (20256, 20511));
    assert!(p.profiles.is_empty());
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let e = invalid(&with("gatway = \"x\"\n"));
    assert!(e.contains("gatway"), "{e}");
    let e = invalid(&with("[[profile]]\nname = \"a\"\nuser = [\"x\"]\n"));
    assert!(e.contains("unknown field `user`"), "{e}");
}

#[test]
fn bad_values_name_key_line_and_hint() {
    // a blank first line counts: the range is on line 8
    let text = format!("\n{}", with("[ports]\nrange = \"30000-20000\"\n"));
    let e = invalid(&text);
    assert!(
        e.contains("ports.range") && e.contains("line 8") && e.contains("hint"),
        "{e}"
    );
    let e = invalid(&NODE.replace("10.99.0.254", "10.99.0.999"));
    assert!(
        e.contains("node.gateway") && e.contains("not an IPv4 address"),
        "{e}"
    );
    let e = invalid(&with_internal("[\"10.99.0.0/24\", \"10.99.0.0/16\"]"));
    assert!(e.contains("overlap"), "{e}");
    let e = invalid(&with_internal("[\"10.98.0.0/24\"]"));
    assert!(e.contains("gateway 10.99.0.254 is not inside"), "{e}");
    let e = invalid(&with("fwmark = 0x10001\n"));
    assert!(e.contains("node.fwmark"), "{e}");
    let e = invalid(&with("[ports]\nrange = \"20000-20010\"\n"));
    assert!(e.contains("smaller than one block"), "{e}");
}

#[test]
fn profiles_that_cannot_match_or_repeat_are_rejected() {
    let e = invalid(&with("[[profile]]\nname = \"empty\"\n"));
    assert!(e.contains("can never match"), "{e}");
    let e = invalid(&with(
        "[[profile]]\nname = \"a\"\nusers = [\"x\"]\n[[profile]]\nname = \"a\"\nusers = [\"y\"]\n",
    ));
    assert!(e.contains("used twice"), "{e}");
    let e = invalid(&with("[[profile]]\nname = \"a b\"\nusers = [\"x\"]\n"));
    assert!(e.contains("not a valid profile name"), "{e}");
    let e = invalid(&with(
        "[[profile]]\nname = \"a\"\nusers = [\"x\"]\n[profile.auto]\nusers = [\"y\"]\n",
    ));
    assert!(e.contains("not in its users"), "{e}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let errors = invalid_errors(&with("[ports]\nblock_size = 7\n[[profile]]\nname = \"\"\n"));
    assert!(errors.len() >= 3, "{errors:?}");
}

#[test]
fn not_asking_gets_nothing_unless_auto() {
    let p = policy("[[profile]]\nname = \"x\"\nusers = [\"alice\"]\n");
    assert_eq!(
        decide(&p, &job("alice", &[]), &Request::None),
        Decision::NotRequested
    );
    let p = policy("[[profile]]\nname = \"alice\"\ngroups = [\"alice\"]\n[profile.auto]\ngroups = [\"alice\"]\n");
    let (profile, auto, rule) = granted(decide(&p, &job("aliprod", &["alice"]), &Request::None));
    assert!(auto);
    assert_eq!(profile, "alice");
    assert!(rule.contains("group alice"), "{rule}");
    assert_eq!(
        decide(&p, &job("bob", &["users"]), &Request::None),
        Decision::NotRequested
    );
}

#[test]
fn asking_picks_first_profile_that_grants() {
    let p = policy(
        "[[profile]]\nname = \"a\"\nusers = [\"bob\"]\n[[profile]]\nname = \"b\"\nusers = [\"alice\"]\nmode = \"netns\"\n",
    );
    let (profile, auto, _) = granted(decide(&p, &job("alice", &[]), &Request::Any));
    assert!(!auto);
    assert_eq!(profile, "b");
    assert_eq!(p.profile("b").unwrap().mode, Mode::Netns);
    let reason = denied(decide(&p, &job("carol", &[]), &Request::Any));
    assert!(reason.contains("no profile grants user carol"), "{reason}");
}

#[test]
fn named_profile_must_exist_and_match() {
    let p = policy("[[profile]]\nname = \"a\"\nusers = [\"alice\"]\n");
    let reason = denied(decide(
        &p,
        &job("alice", &[]),
        &Request::Profile("nope".into()),
    ));
    assert!(
        reason.contains("no external-net profile named \"nope\"") && reason.contains("profiles: a"),
        "{reason}"
    );
    let reason = denied(decide(&p, &job("bob", &[]), &Request::Profile("a".into())));
    assert!(reason.contains("does not list user bob"), "{reason}");
}

#[test]
fn deny_wins_over_allow_and_auto() {
    let p = policy(
        "[[profile]]\nname = \"exp\"\ngroups = [\"exp\"]\n[profile.deny]\nusers = [\"mallory\"]\n[profile.auto]\ngroups = [\"exp\"]\n",
    );
    assert_eq!(
        decide(&p, &job("mallory", &["exp"]), &Request::None),
        Decision::NotRequested
    );
    let reason = denied(decide(&p, &job("mallory", &["exp"]), &Request::Any));
    assert!(reason.contains("denies user mallory"), "{reason}");
}

#[test]
fn account_partition_and_qos_restrict() {
    let p = policy("[[profile]]\nname = \"a\"\naccounts = [\"grid\"]\npartitions = [\"ext\"]\nqos = [\"normal\"]\n");
    let mut j = job("u", &[]);
    j.account = Some("grid".into());
    j.partition = Some("ext".into());
    j.qos = Some("normal".into());
    assert!(matches!(
        decide(&p, &j, &Request::Any),
        Decision::Granted { .. }
    ));
    j.partition = Some("batch".into());
    let reason = denied(decide(&p, &j, &Request::Any));
    assert!(reason.contains("partition(s) ext (job: batch)"), "{reason}");
    j.partition = Some("ext".into());
    j.qos = None;
    assert!(matches!(
        decide(&p, &j, &Request::Any),
        Decision::Denied { .. }
    ));
}

#[test]
fn request_values_from_the_plugin() {
    assert_eq!(Request::from_env_value(None), Request::None);
    assert_eq!(Request::from_env_value(Some("")), Request::None);
    assert_eq!(Request::from_env_value(Some("*")), Request::Any);
    assert_eq!(
        Request::from_env_value(Some("grid")),
        Request::Profile("grid".into())
    );
}

#[test]
fn accounting_log_and_interim_interval_have_defaults_and_can_be_set() {
    let p = policy("");
    assert_eq!(p.log.accounting, "/var/log/extnet/accounting.log");
    assert_eq!(p.log.interim_secs, 3600);
    let p = policy("[log]\naccounting = \"/srv/acct-%n.log\"\ninterim_secs = 0\n");
    assert_eq!(p.log.accounting, "/srv/acct-%n.log");
    assert_eq!(p.log.interim_secs, 0, "0 turns interim records off");
    let e = invalid(&with("[log]\ninterim_secs = -5\n"));
    assert!(e.contains("interim_secs"), "{e}");
}

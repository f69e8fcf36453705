//! `extnet policy check` and `extnet policy explain`: the policy file as the admin reads it.

use extnet_policy::{JobIdentity, Policy, Request};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

/// `extnet policy check`: validates `file`, prints what it grants, and warns of users and
/// groups this host does not know. An invalid file is the exit status 1 with the policy
/// crate's message alone (no `extnet:` prefix).
pub fn check(file: &Path) -> anyhow::Result<ExitCode> {
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("{}: valid", file.display());
    print!("{}", extnet_policy::report::summary(&policy));
    let unknown = unknown_principals(&policy);
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .into_iter()
            .map(|(who, mut profiles)| {
                profiles.dedup();
                format!("{who} (profile {})", profiles.join(", "))
            })
            .collect();
        println!(
            "warning: not known on this host (NSS): {}; check the spelling, or that this host sees the same users and groups as the compute nodes",
            list.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The users and groups the policy names that this host cannot resolve (a typo, or a name
/// only other hosts know through NSS), each with the profiles that name it, in order.
fn unknown_principals(policy: &Policy) -> BTreeMap<String, Vec<&str>> {
    let mut unknown: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in &policy.profiles {
        for pr in [&p.allow, &p.deny, &p.auto] {
            for u in pr.users.iter().filter(|u| *u != "*") {
                if nix::unistd::User::from_name(u).ok().flatten().is_none() {
                    unknown
                        .entry(format!("user {u}"))
                        .or_default()
                        .push(&p.name);
                }
            }
            for g in &pr.groups {
                if nix::unistd::Group::from_name(g).ok().flatten().is_none() {
                    unknown
                        .entry(format!("group {g}"))
                        .or_default()
                        .push(&p.name);
                }
            }
        }
    }
    unknown
}

/// `extnet policy explain`: the decision for a user's job and the rule, in one paragraph.
pub fn explain(
    policy_path: &Path,
    user: String,
    account: Option<String>,
    partition: Option<String>,
    qos: Option<String>,
    profile: Option<String>,
    not_asked: bool,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    // looked up as the prolog does (when a decision needs them); a user unknown here has none
    let groups = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .map(|u| extnet_policy::Groups::lookup(extnet::job::env::group_names, u.gid.as_raw()))
        .unwrap_or_default();
    let id = JobIdentity {
        user,
        groups,
        account,
        partition,
        qos,
    };
    let req = match (profile, not_asked) {
        (Some(p), _) => Request::Profile(p),
        (None, true) => Request::None,
        (None, false) => Request::Any,
    };
    println!("{}", extnet_policy::report::explain(&policy, &id, &req));
    Ok(ExitCode::SUCCESS)
}

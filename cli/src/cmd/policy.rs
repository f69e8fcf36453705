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
    if uses_account_or_qos(&policy) {
        match slurm_enforcement() {
            Ok(enforce) => {
                for w in enforcement_warnings(&policy, &enforce) {
                    println!("warning: {w}");
                }
            }
            Err(why) => println!(
                "note: cannot ask Slurm what it enforces ({why}); profiles here trust a job's account or QOS, so make sure slurm.conf's AccountingStorageEnforce includes associations (accounts) and qos (QOS)"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a profile decides by a job's account or QOS, which users choose at submission
/// (`--account`, `--qos`): Slurm must enforce them, or anyone may claim them.
fn uses_account_or_qos(policy: &Policy) -> bool {
    policy.profiles.iter().any(|p| {
        !p.qos.is_empty()
            || [&p.allow, &p.deny, &p.auto]
                .iter()
                .any(|pr| !pr.accounts.is_empty())
    })
}

/// `AccountingStorageEnforce` as `scontrol show config` prints it (`associations,limits,qos`,
/// or `none`).
fn slurm_enforcement() -> Result<String, String> {
    let out = std::process::Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .map_err(|e| format!("scontrol: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scontrol show config: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    enforce_setting(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| "no AccountingStorageEnforce in scontrol show config".into())
}

/// The value of `AccountingStorageEnforce` in `scontrol show config` output.
fn enforce_setting(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "AccountingStorageEnforce").then(|| v.trim().to_owned())
    })
}

/// What the policy trusts that Slurm's `enforce` (AccountingStorageEnforce) does not check:
/// a job's account (needs `associations`, which `limits`, `qos` and `safe` imply) and its QOS
/// (needs `qos`).
fn enforcement_warnings(policy: &Policy, enforce: &str) -> Vec<String> {
    let has = |w: &str| enforce.split(',').any(|e| e.trim() == w);
    let associations = ["associations", "limits", "qos", "safe"]
        .iter()
        .any(|w| has(w));
    let mut out = Vec::new();
    for p in &policy.profiles {
        let by_account = [&p.allow, &p.deny, &p.auto]
            .iter()
            .any(|pr| !pr.accounts.is_empty());
        if by_account && !associations {
            out.push(format!(
                "profile {:?} decides by account, but Slurm does not enforce associations (AccountingStorageEnforce={enforce}): any user can submit with that account; set AccountingStorageEnforce=associations (or limits, qos, safe)",
                p.name
            ));
        }
        if !p.qos.is_empty() && !has("qos") {
            out.push(format!(
                "profile {:?} applies to QOS {}, but Slurm does not enforce QOS (AccountingStorageEnforce={enforce}): any user can submit with it; add qos to AccountingStorageEnforce",
                p.name,
                p.qos.join(", ")
            ));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(profiles: &str) -> Policy {
        Policy::from_toml(
            &format!(
                "version = 1\n[node]\ninterface = \"eth0\"\ngateway = \"10.99.0.254\"\ninternal = [\"10.99.0.0/24\"]\n{profiles}"
            ),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn account_and_qos_grants_are_warned_of_unless_slurm_enforces_them() {
        let p = policy(
            "[[profile]]\nname = \"acct\"\naccounts = [\"grid\"]\n[[profile]]\nname = \"fast\"\nusers = [\"*\"]\nqos = [\"high\"]\n[[profile]]\nname = \"plain\"\nusers = [\"a\"]\n",
        );
        assert!(uses_account_or_qos(&p));
        let none = enforcement_warnings(&p, "none");
        assert_eq!(none.len(), 2, "{none:?}");
        assert!(
            none[0].contains("profile \"acct\" decides by account"),
            "{none:?}"
        );
        assert!(
            none[1].contains("profile \"fast\" applies to QOS high"),
            "{none:?}"
        );
        let assoc = enforcement_warnings(&p, "associations,limits");
        assert_eq!(assoc.len(), 1, "QOS is still not enforced: {assoc:?}");
        assert!(enforcement_warnings(&p, "associations,limits,qos").is_empty());
        assert!(!uses_account_or_qos(&policy(
            "[[profile]]\nname = \"plain\"\nusers = [\"a\"]\n"
        )));
    }

    #[test]
    fn the_setting_is_read_from_scontrol_output() {
        let out = "Configuration data as of 2026-12-07T01:00:00\nAccountingStorageBackupHost = (null)\nAccountingStorageEnforce = associations,limits\nAccountingStorageHost   = localhost\n";
        assert_eq!(enforce_setting(out).as_deref(), Some("associations,limits"));
        assert_eq!(enforce_setting("Foo = bar\n"), None);
    }
}

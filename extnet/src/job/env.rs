//! The job as Slurm describes it to the prolog and epilog, read once from the environment at
//! the edge. Identity comes from slurmd's variables (`SLURM_JOB_*`), never from anything the
//! user controls; the only user input is the request itself (`SPANK_EXTNET_REQUEST`).

use extnet_policy::{JobIdentity, Request};

/// The variable the SPANK plugin sets with `spank_job_control_setenv("EXTNET_REQUEST", ..)`;
/// slurmd hands it to the prolog and epilog with the `SPANK_` prefix.
pub const REQUEST_VAR: &str = "SPANK_EXTNET_REQUEST";

/// The variables [`JobEnv::from_env`] reads, and what each is for: the ENVIRONMENT section of
/// `extnet-prolog(8)` and `extnet-epilog(8)` (a unit test checks that the reader asks for
/// exactly these).
pub const VARIABLES: &[(&str, &str)] = &[
    ("SLURM_JOB_ID", "The job (required)."),
    ("SLURM_JOB_UID", "The job's user id (required)."),
    (
        "SLURM_JOB_GID",
        "The job's group id (default: the user's primary group).",
    ),
    (
        "SLURM_JOB_USER",
        "The job's user name (default: the name of SLURM_JOB_UID).",
    ),
    (
        "SLURMD_NODENAME",
        "The node's name in Slurm (default: the host name up to the first dot).",
    ),
    (
        "SLURM_JOB_PARTITION",
        "The job's partition, for the policy's partition grants.",
    ),
    (
        "SLURM_JOB_ACCOUNT",
        "The job's account, for the policy's account grants.",
    ),
    (
        "SLURM_JOB_QOS",
        "The job's QOS, for the policy's QOS grants.",
    ),
    (
        REQUEST_VAR,
        "What the job asked for (--external-net[=PROFILE]), set by the SPANK plugin.",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnv {
    pub job_id: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub node: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub request: Request,
}

#[derive(Debug, thiserror::Error)]
pub enum JobEnvError {
    #[error("{var} is not set: extnet-prolog and extnet-epilog must be run by slurmd (Prolog=/Epilog= in slurm.conf)")]
    Missing { var: &'static str },
    #[error("{var}={value:?} is not a number")]
    NotNumber { var: &'static str, value: String },
}

impl JobEnv {
    /// Reads the job from `get` (`std::env::var` in the binaries; a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<JobEnv, JobEnvError> {
        let req = |var: &'static str| {
            get(var)
                .filter(|v| !v.is_empty())
                .ok_or(JobEnvError::Missing { var })
        };
        let num = |var: &'static str| -> Result<u32, JobEnvError> {
            let v = req(var)?;
            v.trim()
                .parse()
                .map_err(|_| JobEnvError::NotNumber { var, value: v })
        };
        let job_id = num("SLURM_JOB_ID")?;
        let uid = num("SLURM_JOB_UID")?;
        let gid = match get("SLURM_JOB_GID") {
            Some(v) if !v.is_empty() => v.trim().parse().map_err(|_| JobEnvError::NotNumber {
                var: "SLURM_JOB_GID",
                value: v,
            })?,
            _ => nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw())
                .unwrap_or(u32::MAX),
        };
        let user = match get("SLURM_JOB_USER").filter(|v| !v.is_empty()) {
            Some(u) => u,
            None => nix::unistd::User::from_uid(uid.into())
                .ok()
                .flatten()
                .map(|u| u.name)
                .ok_or(JobEnvError::Missing {
                    var: "SLURM_JOB_USER",
                })?,
        };
        let node = match get("SLURMD_NODENAME").filter(|v| !v.is_empty()) {
            Some(n) => n,
            None => short_hostname().ok_or(JobEnvError::Missing {
                var: "SLURMD_NODENAME",
            })?,
        };
        let opt = |var: &str| get(var).filter(|v| !v.is_empty() && v != "(null)");
        Ok(JobEnv {
            job_id,
            uid,
            gid,
            user,
            node,
            partition: opt("SLURM_JOB_PARTITION"),
            account: opt("SLURM_JOB_ACCOUNT"),
            qos: opt("SLURM_JOB_QOS"),
            request: Request::from_env_value(get(REQUEST_VAR).as_deref()),
        })
    }

    /// The identity the policy decides on. The user's groups are looked up through NSS
    /// only when a decision needs them (a profile's principals name a group and the user or
    /// account did not match first): the first NSS lookup in a process loads its modules, a
    /// large part of a prolog's time, and more with LDAP or SSSD.
    pub fn identity(&self) -> JobIdentity {
        JobIdentity {
            user: self.user.clone(),
            groups: extnet_policy::Groups::lookup(timed_group_names, self.gid),
            account: self.account.clone(),
            partition: self.partition.clone(),
            qos: self.qos.clone(),
        }
    }
}

/// The name and primary group of user `uid`, through NSS (`getent passwd UID`).
pub fn user_of_uid(uid: u32) -> Option<(String, u32)> {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| (u.name, u.gid.as_raw()))
}

/// [`group_names`], then the step `groups` of the prolog's result line (its time: the NSS
/// lookup, and the few microseconds of the decision before it).
fn timed_group_names(user: &str, gid: u32) -> Result<Vec<String>, String> {
    let g = group_names(user, gid);
    crate::diag::timings::done("groups");
    g
}

/// Names of the user's primary and supplementary groups (`id -Gn USER`).
/// An error says what failed (a policy that names groups then denies by group rather than
/// grant by mistake); a group id without a name is left out (no policy can name it).
pub fn group_names(user: &str, gid: u32) -> Result<Vec<String>, String> {
    let cuser =
        std::ffi::CString::new(user).map_err(|_| format!("user name {user:?} holds a NUL byte"))?;
    let gids = nix::unistd::getgrouplist(&cuser, nix::unistd::Gid::from_raw(gid))
        .map_err(|e| format!("getgrouplist({user}, {gid}) failed: {e}"))?;
    let mut names = Vec::with_capacity(gids.len());
    for g in gids {
        match nix::unistd::Group::from_gid(g) {
            Ok(Some(g)) => names.push(g.name),
            Ok(None) => {}
            Err(e) => return Err(format!("getgrgid({g}) failed: {e}")),
        }
    }
    names.dedup();
    Ok(names)
}

/// The host name up to the first dot.
pub fn short_hostname() -> Option<String> {
    let h = nix::unistd::gethostname().ok()?;
    let h = h.to_str()?;
    Some(h.split('.').next().unwrap_or(h).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn group_names_come_from_nss_and_failures_are_errors() {
        // root's primary group (gid 0) is "root" on every Linux this runs on
        let g = group_names("root", 0).unwrap();
        assert!(g.iter().any(|n| n == "root"), "{g:?}");
        let e = group_names("ro\0ot", 0).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    /// The documented variables are the ones read (the man pages list [`VARIABLES`]).
    #[test]
    fn reads_exactly_the_documented_variables() {
        let asked = std::cell::RefCell::new(Vec::new());
        let full = env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_UID", "1000"),
            ("SLURM_JOB_GID", "1000"),
            ("SLURM_JOB_USER", "alice"),
            ("SLURMD_NODENAME", "n1"),
        ]);
        JobEnv::from_env(|k| {
            asked.borrow_mut().push(k.to_owned());
            full(k)
        })
        .unwrap();
        let mut asked = asked.into_inner();
        asked.sort();
        asked.dedup();
        let mut documented: Vec<String> = VARIABLES.iter().map(|(v, _)| v.to_string()).collect();
        documented.sort();
        assert_eq!(asked, documented);
    }

    #[test]
    fn reads_slurm_variables() {
        let j = JobEnv::from_env(env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_UID", "1000"),
            ("SLURM_JOB_GID", "1000"),
            ("SLURM_JOB_USER", "alice"),
            ("SLURMD_NODENAME", "n1"),
            ("SLURM_JOB_PARTITION", "debug"),
            ("SLURM_JOB_ACCOUNT", "(null)"),
            ("SPANK_EXTNET_REQUEST", "grid"),
        ]))
        .unwrap();
        assert_eq!(j.job_id, 42);
        assert_eq!(j.node, "n1");
        assert_eq!(j.partition.as_deref(), Some("debug"));
        assert_eq!(j.account, None);
        assert_eq!(j.request, Request::Profile("grid".into()));
    }

    #[test]
    fn missing_or_bad_job_id_is_an_error_naming_the_variable() {
        let e = JobEnv::from_env(env(&[("SLURM_JOB_UID", "1")])).unwrap_err();
        assert!(e.to_string().contains("SLURM_JOB_ID is not set"), "{e}");
        let e =
            JobEnv::from_env(env(&[("SLURM_JOB_ID", "x"), ("SLURM_JOB_UID", "1")])).unwrap_err();
        assert!(e.to_string().contains("SLURM_JOB_ID=\"x\""), "{e}");
    }
}

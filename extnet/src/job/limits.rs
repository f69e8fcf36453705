//! Per-profile job limits on one node (`max_jobs_per_node`, `max_jobs_per_user`), counted from
//! the node's lease table under the node lock, so concurrent prologs never both take the last
//! place. Pure: the caller loads the table.

use crate::store::lease::Lease;
use extnet_policy::Profile;

/// A limit that stops one more job of the profile on this node: the reason the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitReached(pub String);

/// Whether job `job_id` of user `uid` may take one more place of `profile` on `node`, whose
/// active leases are `leases` (the job's own lease, from a prolog run twice, does not count).
pub fn check(
    profile: &Profile,
    node: &str,
    leases: &[Lease],
    job_id: u32,
    uid: u32,
    user: &str,
) -> Result<(), LimitReached> {
    let others: Vec<&Lease> = leases
        .iter()
        .filter(|l| l.profile == profile.name && l.job_id != job_id)
        .collect();
    let jobs = |v: &[&Lease]| {
        v.iter()
            .map(|l| l.job_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(max) = profile.max_jobs_per_node {
        if others.len() >= max as usize {
            return Err(LimitReached(format!(
                "profile {:?} allows at most {max} external job(s) at once on node {node}, and {} run there now (jobs {}); submit again when one has ended",
                profile.name,
                others.len(),
                jobs(&others)
            )));
        }
    }
    if let Some(max) = profile.max_jobs_per_user {
        let mine: Vec<&Lease> = others.iter().copied().filter(|l| l.uid == uid).collect();
        if mine.len() >= max as usize {
            return Err(LimitReached(format!(
                "profile {:?} allows at most {max} external job(s) per user at once on node {node}, and user {user} runs {} there now (jobs {}); submit again when one has ended",
                profile.name,
                mine.len(),
                jobs(&mine)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use extnet_policy::Policy;

    fn profile(limits: &str) -> Profile {
        Policy::from_toml(
            &format!(
                "version = 1\n[node]\ninterface = \"eth0\"\ngateway = \"10.0.0.1\"\ninternal = [\"10.0.0.0/8\"]\n[[profile]]\nname = \"p\"\nusers = [\"*\"]\n{limits}"
            ),
            "t",
        )
        .unwrap()
        .profiles
        .remove(0)
    }

    fn lease(job_id: u32, uid: u32, profile: &str) -> Lease {
        Lease {
            job_id,
            user: format!("u{uid}").into(),
            uid,
            slot: job_id,
            port_first: 0,
            port_last: 0,
            mark: 0x10000 | job_id,
            mode: extnet_policy::Mode::Cgroup,
            profile: profile.into(),
            node_addr: "10.0.0.2".parse().unwrap(),
            node_addr6: None,
            since: 0,
            last_logged: None,
        }
    }

    #[test]
    fn no_limits_admit_everyone() {
        let p = profile("");
        let leases: Vec<Lease> = (1..50).map(|j| lease(j, 7, "p")).collect();
        assert_eq!(check(&p, "n1", &leases, 99, 7, "u7"), Ok(()));
    }

    #[test]
    fn per_node_limit_counts_only_this_profile_and_other_jobs() {
        let p = profile("max_jobs_per_node = 2");
        let mut leases = vec![lease(1, 7, "p"), lease(2, 8, "other"), lease(3, 9, "other")];
        assert_eq!(check(&p, "n1", &leases, 10, 5, "u5"), Ok(()));
        leases.push(lease(4, 8, "p"));
        let e = check(&p, "n1", &leases, 10, 5, "u5").unwrap_err();
        assert!(
            e.0.contains("at most 2 external job(s) at once on node n1")
                && e.0.contains("jobs 1, 4"),
            "{e}"
        );
        // a prolog run twice for job 4 still fits: its own lease does not count
        assert_eq!(check(&p, "n1", &leases, 4, 8, "u8"), Ok(()));
    }

    #[test]
    fn per_user_limit_counts_the_users_jobs_of_this_profile() {
        let p = profile("max_jobs_per_user = 1");
        let leases = vec![lease(1, 7, "p"), lease(2, 8, "other")];
        assert_eq!(check(&p, "n1", &leases, 10, 8, "u8"), Ok(()));
        let e = check(&p, "n1", &leases, 10, 7, "u7").unwrap_err();
        assert!(
            e.0.contains("at most 1 external job(s) per user") && e.0.contains("user u7 runs 1"),
            "{e}"
        );
    }
}

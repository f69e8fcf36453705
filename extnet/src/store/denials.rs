//! The node's denial counters: how many jobs the prolog denied external access on this node,
//! by reason, since the state directory was made (`<state_dir>/denials`, one line
//! `REASON COUNT` per reason). The prolog adds one under the node lock (read, add, atomic
//! replace); the node agent and `extnet node metrics` read it for
//! `extnet_denials_total{reason=...}`. A denial is also in the job's state file, as a sentence
//! for the user, but only until the epilog: these counters last.

use crate::store::fs::{write_atomic, FsError, Lock};
use std::collections::BTreeMap;
use std::path::Path;

/// Why the prolog denied a job: a small fixed set, the label values of
/// `extnet_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenialReason {
    /// No rule of the policy grants the job what it asked for.
    Policy,
    /// A limit of the profile (jobs per user, per node, ...) is reached.
    Limit,
    /// The profile's port pool has no free block on the node.
    PoolFull,
    /// The setup failed on the node (a fault: the job was granted).
    SetupFailed,
}

impl DenialReason {
    pub const ALL: [DenialReason; 4] = [
        DenialReason::Policy,
        DenialReason::Limit,
        DenialReason::PoolFull,
        DenialReason::SetupFailed,
    ];

    /// The label value (and the word in the file).
    pub fn as_str(self) -> &'static str {
        match self {
            DenialReason::Policy => "policy",
            DenialReason::Limit => "limit",
            DenialReason::PoolFull => "pool_full",
            DenialReason::SetupFailed => "setup_failed",
        }
    }

    fn parse(word: &str) -> Option<DenialReason> {
        DenialReason::ALL.into_iter().find(|r| r.as_str() == word)
    }
}

/// The counters in `path`, every reason present (0 when the file or its line is missing).
/// Lines that do not read are skipped: a torn or edited file loses those counts only.
pub fn load(path: &Path) -> BTreeMap<DenialReason, u64> {
    let mut counts: BTreeMap<DenialReason, u64> =
        DenialReason::ALL.into_iter().map(|r| (r, 0)).collect();
    let Ok(text) = std::fs::read_to_string(path) else {
        return counts;
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(r), Some(n), None) = (
            words.next().and_then(DenialReason::parse),
            words.next().and_then(|n| n.parse::<u64>().ok()),
            words.next(),
        ) {
            counts.insert(r, n);
        }
    }
    counts
}

/// Adds one denial for `reason` to the counters in `path`, under the node lock `lock` (the
/// lease table's: the prologs of one node count one after the other).
pub fn count(path: &Path, lock: &Path, reason: DenialReason) -> Result<(), FsError> {
    let _lock = Lock::acquire(lock)?;
    let mut counts = load(path);
    *counts.entry(reason).or_default() += 1;
    let text: String = counts
        .iter()
        .map(|(r, n)| format!("{} {n}\n", r.as_str()))
        .collect();
    write_atomic(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_reason_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (path, lock) = (dir.path().join("denials"), dir.path().join("lock"));
        assert!(load(&path).values().all(|&n| n == 0));
        assert_eq!(load(&path).len(), 4, "every reason, also without a file");
        count(&path, &lock, DenialReason::Policy).unwrap();
        count(&path, &lock, DenialReason::Policy).unwrap();
        count(&path, &lock, DenialReason::PoolFull).unwrap();
        let c = load(&path);
        assert_eq!(c[&DenialReason::Policy], 2);
        assert_eq!(c[&DenialReason::PoolFull], 1);
        assert_eq!(c[&DenialReason::Limit], 0);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "policy 2\nlimit 0\npool_full 1\nsetup_failed 0\n"
        );
    }

    #[test]
    fn lines_that_do_not_read_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("denials");
        std::fs::write(
            &path,
            "policy 5\nlimit x\nbogus 3\nsetup_failed 1 2\npool_full 7",
        )
        .unwrap();
        let c = load(&path);
        assert_eq!(
            c.into_iter().collect::<Vec<_>>(),
            [
                (DenialReason::Policy, 5),
                (DenialReason::Limit, 0),
                (DenialReason::PoolFull, 7),
                (DenialReason::SetupFailed, 0)
            ]
        );
    }
}

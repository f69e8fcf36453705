//! Pinned namespaces: a netns-mode job's namespace that something still held after its
//! teardown (an open fd on its `/run/netns` file, a process that joined it and survived
//! SIGKILL). The epilog has already deleted the job's veth pair, unmounted the namespace and
//! released the lease, so what is left holds only `lo`: no address, no route, no mark. The
//! record is for the admin (`extnet status`) and is removed by `extnet reconcile` once the
//! namespace is gone.
//!
//! `<state_dir>/pinned/<job>.json`, one small JSON file per job, written atomically. Not in
//! `jobs/`: a file there is a job's state, and a pinned namespace's job is over.

use crate::kernel::netns::Holder;
use crate::plan::layout::Layout;
use crate::store::fs::{self, FsError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One pinned namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pinned {
    pub job_id: u32,
    /// The namespace's inode (`net:[INODE]`, `ip netns identify`).
    pub inode: u64,
    /// When the teardown found it pinned (seconds since the epoch).
    pub since: u64,
    /// Who held it when last looked at.
    pub holders: Vec<Holder>,
}

impl Pinned {
    /// One line for logs and `extnet status`: `pid 123 (uid 1001, sleep) fds 3,4; ...`.
    pub fn holders_line(&self) -> String {
        self.holders
            .iter()
            .map(|h| {
                let mut s = format!("pid {} (uid {}, {})", h.pid, h.uid, h.comm);
                if h.inside {
                    s.push_str(" inside");
                }
                if !h.fds.is_empty() {
                    let fds: Vec<String> = h.fds.iter().map(i32::to_string).collect();
                    s.push_str(&format!(" fds {}", fds.join(",")));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The directory of the records.
pub fn dir(layout: &Layout) -> PathBuf {
    layout.state_dir.join("pinned")
}

/// The record of job `job_id`.
pub fn path(layout: &Layout, job_id: u32) -> PathBuf {
    dir(layout).join(format!("{job_id}.json"))
}

/// Writes (or replaces) the record.
pub fn store(layout: &Layout, p: &Pinned) -> Result<(), FsError> {
    let data = serde_json::to_vec(p).expect("a pinned record serializes");
    fs::write_atomic(&path(layout, p.job_id), &data, 0o644)
}

/// Removes job `job_id`'s record; absent is fine.
pub fn remove(layout: &Layout, job_id: u32) -> Result<bool, FsError> {
    fs::remove_file(&path(layout, job_id))
}

/// Every record, by job id. A file that does not decode is returned as an error line (name
/// and why) so that `extnet status` can show it rather than hide it.
pub fn list(layout: &Layout) -> (Vec<Pinned>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for e in std::fs::read_dir(dir(layout))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        match std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|d| serde_json::from_slice::<Pinned>(&d).map_err(|e| e.to_string()))
        {
            Ok(p) => ok.push(p),
            Err(why) => bad.push(format!("{}: {why}", e.path().display())),
        }
    }
    ok.sort_by_key(|p| p.job_id);
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::markers::tests::layout;

    #[test]
    fn records_round_trip_and_a_bad_one_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(d.path());
        assert_eq!(list(&l), (vec![], vec![]));
        let p = Pinned {
            job_id: 12,
            inode: 4026532999,
            since: 1_700_000_000,
            holders: vec![Holder {
                pid: 77,
                uid: 1001,
                comm: "sleep".into(),
                inside: false,
                fds: vec![3, 9],
            }],
        };
        store(&l, &p).unwrap();
        let mut q = p.clone();
        q.job_id = 5;
        q.holders[0].inside = true;
        q.holders[0].fds.clear();
        store(&l, &q).unwrap();
        std::fs::write(path(&l, 6), b"{\"job_id\": 6}").unwrap();
        let (ok, bad) = list(&l);
        assert_eq!(ok, vec![q.clone(), p.clone()]);
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].contains("6.json") && bad[0].contains("missing field"),
            "{bad:?}"
        );
        assert_eq!(p.holders_line(), "pid 77 (uid 1001, sleep) fds 3,9");
        assert_eq!(q.holders_line(), "pid 77 (uid 1001, sleep) inside");
        assert!(remove(&l, 12).unwrap());
        assert!(!remove(&l, 12).unwrap());
        assert_eq!(list(&l).0, vec![q]);
    }
}

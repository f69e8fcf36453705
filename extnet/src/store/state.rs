//! The job state file: what the prolog decided and made for one job on one node.
//!
//! Small, versioned JSON, replaced atomically (temp file, rename) but not fsynced: it matters
//! only while the node is up (jobs do not survive a reboot), and one fsync costs milliseconds
//! on a busy disk on every job's path. A file lost or truncated in a power cut reads as
//! corrupt: the plugin then refuses the job's tasks and the epilog tears down by job id and
//! lease table (which is fsynced). The SPANK plugin reads it in every task; the epilog reads
//! it to tear down and removes it last.

use crate::store::fs::{write_replace, FsError};
use extnet_policy::Mode;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    pub version: u32,
    pub job_id: u32,
    pub node: String,
    pub user: String,
    pub uid: u32,
    /// Unix time of the decision.
    pub created: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase", deny_unknown_fields)]
pub enum Outcome {
    Granted(Grant),
    Denied { reason: String },
}

/// What a granted job has on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub profile: String,
    pub auto: bool,
    pub mode: Mode,
    pub slot: u32,
    pub mark: u32,
    pub port_first: u16,
    pub port_last: u16,
    /// The node address the job's traffic is translated to before the gateway.
    pub node_addr: Ipv4Addr,
    /// cgroup mode: the job's cgroup, which its tasks join.
    pub cgroup: Option<PathBuf>,
    /// netns mode: the namespace file the tasks enter.
    pub netns: Option<PathBuf>,
    /// cgroup mode where Slurm keeps the job in a cgroup v2 of its own: that cgroup, bound in
    /// the node table by the job's first step (see [`crate::job::slurm_cgroup`]); the epilog
    /// deletes exactly this element. Absent in state files of older versions: nothing bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_cgroup: Option<BoundCgroup>,
    /// netns mode where the node's `/etc/resolv.conf` does not work inside the job's namespace
    /// (or the policy names nameservers): the job's own file, which its tasks see as
    /// `/etc/resolv.conf` (see [`crate::job::resolv`]). Absent: the node's file as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
}

/// A cgroup that is not extnet's, bound in the node table's job cgroup map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundCgroup {
    pub path: PathBuf,
    /// Its id (inode number) when bound: the map's key, still known after the directory went.
    pub id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("job state file {path} is corrupt ({detail}); the job is treated as having no external access; the epilog removes it, or remove it by hand after checking `extnet status`")]
    Corrupt { path: PathBuf, detail: String },
    #[error("job state file {path} has version {found}, this extnet reads version {STATE_VERSION}; finish running jobs before upgrading, or run the matching extnet")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "job state file {path} is for job {found}, expected job {expected}; remove it by hand"
    )]
    WrongJob {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
}

impl JobState {
    /// Reads the state of `job_id` from `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path, job_id: u32) -> Result<Option<JobState>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FsError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                }
                .into())
            }
        };
        let corrupt = |detail: String| StateError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let found = v
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt("no version".into()))?;
        if found != u64::from(STATE_VERSION) {
            return Err(StateError::Version {
                path: path.to_owned(),
                found: found as u32,
            });
        }
        let s: JobState = serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))?;
        if s.job_id != job_id {
            return Err(StateError::WrongJob {
                path: path.to_owned(),
                found: s.job_id,
                expected: job_id,
            });
        }
        Ok(Some(s))
    }

    /// Writes the state atomically (readable by root only).
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let mut text = serde_json::to_vec_pretty(self).expect("job state serializes");
        text.push(b'\n');
        write_replace(path, &text, 0o600)?;
        Ok(())
    }

    pub fn grant(&self) -> Option<&Grant> {
        match &self.outcome {
            Outcome::Granted(g) => Some(g),
            Outcome::Denied { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn granted() -> JobState {
        JobState {
            version: STATE_VERSION,
            job_id: 42,
            node: "n1".into(),
            user: "alice".into(),
            uid: 1000,
            created: 1_765_000_000,
            outcome: Outcome::Granted(Grant {
                profile: "default".into(),
                auto: false,
                mode: Mode::Cgroup,
                slot: 3,
                mark: 0x30003,
                port_first: 20768,
                port_last: 21023,
                node_addr: Ipv4Addr::new(10, 99, 0, 11),
                cgroup: Some("/sys/fs/cgroup/unified/extnet/n1/job_42".into()),
                netns: None,
                slurm_cgroup: None,
                resolv_conf: None,
            }),
        }
    }

    #[test]
    fn round_trip_and_the_job_it_is_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("42.json");
        assert_eq!(JobState::load(&path, 42).unwrap(), None);
        granted().store(&path).unwrap();
        assert_eq!(JobState::load(&path, 42).unwrap(), Some(granted()));
        let e = JobState::load(&path, 43).unwrap_err().to_string();
        assert!(e.contains("is for job 42, expected job 43"), "{e}");
    }

    // Bounded fuzzing of the decoder (proptest): the plugin reads the state file in every task
    // of a job, the epilog to tear down. A file changed anywhere reads as the state that was
    // stored, as another well-formed state only where its JSON still says so, or as an error
    // naming the file; never a panic.
    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn changed_files_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<Option<usize>>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("42.json");
            granted().store(&path).unwrap();
            let mut b = std::fs::read(&path).unwrap();
            for (i, v) in edits {
                let n = b.len();
                b[i % n] = v;
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            std::fs::write(&path, &b).unwrap();
            match JobState::load(&path, 42) {
                Ok(Some(s)) => {
                    // only a change the JSON itself carries (a digit of a number, a letter of
                    // a string) reads as a state at all, and then as one for this job
                    prop_assert_eq!(s.job_id, 42);
                    prop_assert_eq!(s.version, STATE_VERSION);
                }
                Ok(None) => prop_assert!(false, "an existing file read as no state"),
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(e.contains(&path.display().to_string()), "names the file: {}", e);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("42.json");
            std::fs::write(&path, &b).unwrap();
            if let Err(e) = JobState::load(&path, 42) {
                let e = e.to_string();
                prop_assert!(e.contains(&path.display().to_string()), "names the file: {}", e);
            }
        }
    }
}

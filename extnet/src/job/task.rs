//! Placing a task of a granted job on its path out. Called by the SPANK plugin in the forked
//! task (root, before exec): no threads, no allocation-heavy work, no panics.

use crate::store::state::Grant;
use extnet_policy::Mode;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot move task {pid} into cgroup {path}: {source}; the job's path out is missing (was the epilog run early, or the cgroup removed?)")]
    Cgroup {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "job network namespace {path} is not safe to enter: {why}; remove it and rerun the job"
    )]
    NetnsUnsafe { path: PathBuf, why: String },
    #[error("cannot enter job network namespace {path}: {source}")]
    Setns { path: PathBuf, source: nix::Error },
    #[error("job state names mode {mode} but no {what}; the state file is inconsistent")]
    Incomplete { mode: Mode, what: &'static str },
}

/// Puts process `pid` (the task) on the job's path out.
pub fn join(grant: &Grant, pid: u32) -> Result<(), JoinError> {
    match grant.mode {
        Mode::Cgroup => {
            let dir = grant.cgroup.as_deref().ok_or(JoinError::Incomplete {
                mode: grant.mode,
                what: "cgroup",
            })?;
            join_cgroup(dir, pid)
        }
        Mode::Netns => {
            let path = grant.netns.as_deref().ok_or(JoinError::Incomplete {
                mode: grant.mode,
                what: "netns",
            })?;
            enter_netns(path)
        }
    }
}

/// `echo PID > DIR/cgroup.procs`. Sockets keep the cgroup they are created in, so this runs
/// before exec.
pub fn join_cgroup(dir: &Path, pid: u32) -> Result<(), JoinError> {
    let procs = dir.join("cgroup.procs");
    let err = |source| JoinError::Cgroup {
        pid,
        path: dir.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .map_err(err)?;
    f.write_all(pid.to_string().as_bytes()).map_err(err)
}

/// `setns` into the namespace file at `path`, opened without following links and checked to
/// be a root-owned network namespace (see [`crate::kernel::netns::open_checked`]).
pub fn enter_netns(path: &Path) -> Result<(), JoinError> {
    let f = crate::kernel::netns::open_checked(path).map_err(|e| JoinError::NetnsUnsafe {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
        JoinError::Setns {
            path: path.to_owned(),
            source,
        }
    })
}

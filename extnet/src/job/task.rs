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
    #[error("cannot show the job's resolver configuration {path} as /etc/resolv.conf in this task: {step} failed: {source}; the task does not run, as its name lookups would fail (admins: see node.netns_nameservers in extnet.toml(5))")]
    ResolvConf {
        path: PathBuf,
        step: &'static str,
        source: nix::Error,
    },
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
            enter_netns(path)?;
            match &grant.resolv_conf {
                Some(r) => bind_resolv_conf(r),
                None => Ok(()),
            }
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

/// Makes the job's resolver configuration `path` this task's `/etc/resolv.conf`: a mount
/// namespace of the task's own (`unshare(CLONE_NEWNS)`), every mount in it made a slave of
/// the node's (`mount --make-rslave /`: mounts the node makes later, autofs and NFS, still
/// reach the task, and nothing of the task's goes back), then `mount --bind PATH
/// /etc/resolv.conf`. Only this process and what it starts see the change. When
/// `/etc/resolv.conf` is a link (to systemd-resolved's stub file) the mount covers its target.
pub fn bind_resolv_conf(path: &Path) -> Result<(), JoinError> {
    use nix::mount::{mount, MsFlags};
    let err = |step| {
        move |source| JoinError::ResolvConf {
            path: path.to_owned(),
            step,
            source,
        }
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(err("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(err("mount --make-rslave /"))?;
    mount(
        Some(path),
        crate::job::resolv::NODE_RESOLV_CONF,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("mount --bind over /etc/resolv.conf"))
}

//! A cgroup-mode job's own cgroup (`<cgroup_root>/job_<id>`): made by the prolog with the
//! socket-mark program of the job's slot and bound to the slot's checked mark in the node
//! table, emptied and removed by the epilog. A cgroup per job, never one per slot: a socket
//! carries the id of the cgroup it was made in for its whole life, so a socket that outlives
//! its job (passed to another process over a Unix socket) carries the id of a cgroup that is
//! gone and, once the epilog deleted the job's element, matches no running job: its packets
//! are never checked, and go nowhere. The delete cannot wait: the ended job's sockets keep
//! their cgroup and its id, so a stale element would still match them.

use crate::job::JobError;
use crate::kernel::{bpf, cgroup};
use crate::node;
use crate::plan::{self, layout::Layout};
use extnet_policy::Policy;
use std::path::PathBuf;
use std::time::Duration;

/// Makes the job's cgroup, with the socket-mark program of `slot`, and binds it to the slot's
/// checked mark. Idempotent (a prolog run again for the job). Equals `mkdir`, `bpftool cgroup
/// attach ... sock_create`, `nft add element inet extnet job_cgroup { "PATH" : MARK }`.
pub fn setup(
    policy: &Policy,
    layout: &Layout,
    job_id: u32,
    slot: u32,
) -> Result<PathBuf, JobError> {
    let dir = layout.job_cgroup(job_id);
    cgroup::create(&dir)?;
    bpf::attach_sock_mark(&dir, plan::socket_mark(policy, slot))?;
    node::job_cgroups::bind(cgroup::id(&dir)?, plan::mark(policy, slot))?;
    Ok(dir)
}

/// Kills what is left in the job's cgroup, removes it from the node table's map and removes
/// it. Returns whether there was one. Equals `echo 1 > cgroup.kill`, `nft delete element`,
/// `rmdir`.
pub fn teardown(layout: &Layout, job_id: u32) -> Result<bool, JobError> {
    let dir = layout.job_cgroup(job_id);
    if !dir.is_dir() {
        return Ok(false);
    }
    cgroup::kill_all(&dir, Duration::from_secs(10))?;
    node::job_cgroups::unbind(cgroup::id(&dir)?)?;
    cgroup::remove(&dir)?;
    Ok(true)
}

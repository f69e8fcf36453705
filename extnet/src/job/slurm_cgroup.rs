//! A cgroup-mode job on a node where Slurm's cgroup/v2 plugin keeps the job in a cgroup of its
//! own (`…/<node>_slurmstepd.scope/job_<id>/step_<s>/…`): the job's sockets get its identity
//! there, and no task is ever moved out (Slurm enforces memory, CPUs and devices, and tracks the
//! job's processes, in that tree).
//!
//! Slurm makes `job_<id>` when the job's first step starts on the node (the extern step, with
//! `PrologFlags=Contain`), after the prolog: so the prolog cannot bind it, and the plugin does,
//! in slurmstepd (root), once per job: it attaches the slot's socket-mark program to `job_<id>`
//! (every step, the batch and extern steps and adopted processes are below it), binds that
//! cgroup's id to the slot's checked mark in the node table, and records what it bound in the
//! job's state file. The epilog deletes exactly that element ([`unbind`]); the program goes
//! with the cgroup, which is Slurm's: extnet never removes it or kills in it. A socket that
//! outlives the job keeps the id of a cgroup that matches nothing once the element is gone.

use crate::job::JobError;
use crate::kernel::{bpf, cgroup};
use crate::node;
use crate::plan::{self, layout::Layout};
use crate::store::fs::Lock;
use crate::store::state::{BoundCgroup, JobState, Outcome};
use extnet_policy::{Mode, Policy};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SlurmCgroupError {
    #[error("Slurm's cgroup of job {job_id}, {path}, is at level {level} of the cgroup2 hierarchy; extnet looks job cgroups up at levels {levels:?} only; run slurmstepd in system.slice/<scope> as Slurm's cgroup/v2 plugin does by default")]
    Level {
        job_id: u32,
        path: PathBuf,
        level: usize,
        levels: Vec<usize>,
    },
    #[error("job {job_id} has no cgroup-mode grant on node {node}; the prolog's decision is missing or changed")]
    NotGranted { job_id: u32, node: String },
}

/// The cgroup of job `job_id` that Slurm's cgroup/v2 plugin made, relative to the cgroup2 root,
/// from the text of `/proc/self/cgroup` of a process of the job (slurmstepd or a task): the
/// path up to `job_<id>`, when a `step_…` cgroup follows it. `None` where Slurm keeps no v2
/// job cgroup (proctrack/linuxproc, or cgroup/v1 on a hybrid host: their cgroups are not in
/// the `0::` line).
pub fn job_cgroup_in(proc_self_cgroup: &str, job_id: u32) -> Option<PathBuf> {
    let job = format!("job_{job_id}");
    let path = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let at = parts
        .windows(2)
        .position(|w| w[0] == job && w[1].starts_with("step_"))?;
    Some(parts[..=at].iter().collect())
}

/// [`job_cgroup_in`] for this process, as a directory under `mount` (`/sys/fs/cgroup`).
pub fn of_this_process(mount: &Path, job_id: u32) -> std::io::Result<Option<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(job_cgroup_in(&text, job_id).map(|rel| mount.join(rel)))
}

/// Gives the sockets of job `job_id` made in Slurm's cgroup `dir` the identity of the job's
/// slot: attaches the slot's socket-mark program to `dir`, binds `dir`'s id to the slot's checked
/// mark, and records it in the job state. Once per job: under the node lock, and nothing is
/// done when the state already records `dir` (the steps and tasks of a job start at once).
/// Returns whether it bound now.
pub fn bind(policy: &Policy, layout: &Layout, job_id: u32, dir: &Path) -> Result<bool, JobError> {
    let level = dir
        .strip_prefix(layout.cgroup_mount())
        .map_or(0, |p| p.components().count());
    let levels = layout.job_cgroup_levels();
    if !levels.contains(&level) {
        return Err(SlurmCgroupError::Level {
            job_id,
            path: dir.to_owned(),
            level,
            levels,
        }
        .into());
    }
    let id = cgroup::id(dir)?;
    let state_path = layout.job_state(job_id);
    let _lock = Lock::acquire(&layout.lock_file())?;
    let not_granted = || SlurmCgroupError::NotGranted {
        job_id,
        node: layout.node.clone(),
    };
    let mut state = JobState::load(&state_path, job_id)?.ok_or_else(not_granted)?;
    let Outcome::Granted(grant) = &mut state.outcome else {
        return Err(not_granted().into());
    };
    if grant.mode != Mode::Cgroup {
        return Err(not_granted().into());
    }
    if grant.slurm_cgroup.as_ref().is_some_and(|b| b.id == id) {
        return Ok(false);
    }
    bpf::attach_sock_mark(dir, plan::socket_mark(policy, grant.slot))?;
    // recorded before the element exists: an epilog that runs after a failure in between
    // deletes an element that is not there, which is fine; the other order could leave one
    grant.slurm_cgroup = Some(BoundCgroup {
        path: dir.to_owned(),
        id,
    });
    let mark = grant.mark;
    state.store(&state_path)?;
    node::job_cgroups::bind(id, mark)?;
    tracing::debug!(job_id, cgroup = %dir.display(), cgroup_id = id, mark, "Slurm's job cgroup bound to the slot's mark");
    retire_own_cgroup(layout, job_id, &mut state)?;
    state.store(&state_path)?;
    Ok(true)
}

/// extnet's own cgroup of the job, which the prolog made before Slurm's existed (the prolog
/// cannot tell which one the job's tasks will be in), serves nothing once Slurm's is bound:
/// it is taken out of the node table's map and removed, so that a node running Slurm's
/// cgroup/v2 plugins carries one cgroup per job, Slurm's. Kept (the epilog removes it) if a
/// process is in it.
fn retire_own_cgroup(layout: &Layout, job_id: u32, state: &mut JobState) -> Result<(), JobError> {
    let own = layout.job_cgroup(job_id);
    if !own.is_dir() || !cgroup::procs(&own)?.is_empty() {
        return Ok(());
    }
    node::job_cgroups::unbind(cgroup::id(&own)?)?;
    cgroup::remove(&own)?;
    if let Outcome::Granted(g) = &mut state.outcome {
        g.cgroup = None;
    }
    tracing::debug!(job_id, cgroup = %own.display(), "extnet's own cgroup of the job retired: Slurm's is bound");
    Ok(())
}

/// The epilog's part: deletes the element [`bind`] added for the job (by the id recorded:
/// Slurm may have removed the directory already). Absent is fine.
pub fn unbind(bound: &BoundCgroup) -> Result<(), JobError> {
    node::job_cgroups::unbind(bound.id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_TASK: &str = "0::/system.slice/n1_slurmstepd.scope/job_42/step_0/user/task_1\n";

    #[test]
    fn finds_slurms_job_cgroup_of_a_task_and_of_slurmstepd() {
        assert_eq!(
            job_cgroup_in(V2_TASK, 42),
            Some(PathBuf::from("system.slice/n1_slurmstepd.scope/job_42"))
        );
        let stepd = "0::/system.slice/slurmstepd.scope/job_7/step_extern/slurm\n";
        assert_eq!(
            job_cgroup_in(stepd, 7),
            Some(PathBuf::from("system.slice/slurmstepd.scope/job_7"))
        );
        let batch = "0::/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0\n";
        assert!(job_cgroup_in(batch, 7).is_some());
    }

    #[test]
    fn another_jobs_cgroup_or_none_of_slurms_is_not_the_job_cgroup() {
        // another job's cgroup: never bind it
        assert_eq!(job_cgroup_in(V2_TASK, 4), None);
        assert_eq!(job_cgroup_in(V2_TASK, 420), None);
        // proctrack/linuxproc: slurmstepd stays where slurmd is
        assert_eq!(job_cgroup_in("0::/system.slice/slurmd.service\n", 42), None);
        // extnet's own job cgroup has no step below it
        assert_eq!(job_cgroup_in("0::/extnet/n1/job_42\n", 42), None);
        // hybrid host, Slurm's cgroup/v1: its job cgroups are in the v1 lines, not in 0::
        let hybrid = "12:freezer:/slurm_n1/uid_1000/job_42/step_0\n0::/user.slice\n";
        assert_eq!(job_cgroup_in(hybrid, 42), None);
        assert_eq!(job_cgroup_in("", 42), None);
    }
}

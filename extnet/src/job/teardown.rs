//! What the epilog does for one job on one node: tear down, release, record. Safe to run
//! twice, and after a prolog that failed or never ran: names derive from the job id and the
//! lease table, not from the state file alone.

use crate::diag::failpoint;
use crate::diag::timings::done as step;
use crate::job::cgroup as job_cgroup;
use crate::job::env::JobEnv;
use crate::job::netns;
use crate::job::JobError;
use crate::kernel::netlink::Netlink;
use crate::kernel::{cgroup, conntrack};
use crate::node;
use crate::plan;
use crate::plan::layout::Layout;
use crate::store::accounting::Record;
use crate::store::fs::FsError;
use crate::store::fs::Lock;
use crate::store::lease::Lease;
use crate::store::lease::{self, LeaseTable, LogRecord};
use crate::store::state::JobState;
use extnet_policy::Policy;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeardownOutcome {
    /// Nothing of this job on this node.
    Nothing,
    /// Torn down; `released` says whether a lease was released.
    Done { released: bool },
}

/// Who tears a job down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The job's epilog: returns at once when the job has no state file, lease marker or
    /// namespace on the node; its `release` record has no reason.
    Epilog,
    /// `extnet reconcile` for a job Slurm says no longer runs on the node
    /// ([`crate::job::reconcile`]): it found something of the job (a job cgroup alone too), so
    /// it skips the fast path; the `release` record says `reason: orphan`.
    Orphan,
}

/// The epilog: tears the job down. Errors are collected; the lease is released only when the
/// job's path out is really gone (a process that survived would otherwise carry the next job's
/// mark), and the state file is removed last.
pub fn run(policy: &Policy, layout: &Layout, job: &JobEnv) -> Result<TeardownOutcome, JobError> {
    run_as(policy, layout, job.job_id, Caller::Epilog)
}

/// Tears job `job_id` down as [`run`] does, for `caller`.
pub fn run_as(
    policy: &Policy,
    layout: &Layout,
    job_id: u32,
    caller: Caller,
) -> Result<TeardownOutcome, JobError> {
    let state_path = layout.job_state(job_id);
    let state = match JobState::load(&state_path, job_id) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "job state unreadable; tearing down by job id");
            None
        }
    };
    let state_exists = state_path.exists();
    let table_path = layout.lease_table();
    // fast path: no state, no lease marker, no namespace (see crate::store::markers)
    if caller == Caller::Epilog && !crate::store::markers::may_have_anything(layout, job_id) {
        return Ok(TeardownOutcome::Nothing);
    }
    step("state-read");
    let _lock = Lock::acquire(&layout.lock_file())?;
    step("lock");
    let mut table = LeaseTable::load(&table_path, &layout.node)?;
    step("lease-load");
    let lease = table.lease_of(job_id).cloned();
    let mut errors: Vec<String> = Vec::new();
    // the job's own cgroup (cgroup mode): killed, out of the node table's map, removed
    if let Err(e) = job_cgroup::teardown(layout, job_id) {
        errors.push(crate::diag::error_chain(&e));
    }
    // Slurm's job cgroup (cgroup/v2), if a step bound it: out of the map, the cgroup is Slurm's
    if let Some(b) = state
        .as_ref()
        .and_then(|s| s.grant())
        .and_then(|g| g.slurm_cgroup.as_ref())
    {
        if let Err(e) = crate::job::slurm_cgroup::unbind(b) {
            errors.push(crate::diag::error_chain(&e));
        }
    }
    // a lease of an extnet before job cgroups: its tasks are in the slot's cgroup
    if let Some(l) = &lease {
        let legacy = layout.legacy_slot_cgroup(l.slot);
        if legacy.is_dir() {
            if let Err(e) = cgroup::kill_all(&legacy, Duration::from_secs(10)) {
                errors.push(e.to_string());
            }
        }
    }
    step("cgroup-teardown");
    match Netlink::open() {
        Ok(mut nl) => {
            match netns::teardown(layout, &mut nl, job_id) {
                Ok(netns::Dropped {
                    pinned: Some(p), ..
                }) => {
                    // not an error: the job's path out is gone with its veth pair; the record
                    // is for the admin (`extnet status`) and `extnet reconcile`
                    if let Err(e) = crate::store::pinned::store(layout, &p) {
                        tracing::error!(job_id, node = %layout.node, error = %e, "cannot record the job's pinned namespace");
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push(crate::diag::error_chain(&e)),
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = crate::job::resolv::remove(layout, job_id) {
        errors.push(e.to_string());
    }
    step("netns-teardown");
    // the slot's allowlist binding stays (no nft change on the epilog's path): nothing is left
    // that sends with its mark, and the slot's next holder binds it again before its tasks
    // start (see crate::plan::ruleset::allowlist)
    if !errors.is_empty() {
        return Err(JobError::TeardownIncomplete {
            job_id,
            node: layout.node.clone(),
            errors: errors.join("; "),
        });
    }
    if let Some(l) = &lease {
        // the job's connections end with it: their conntrack entries (the translation into
        // its block, the mark its replies are counted by) must not serve anything after it
        if let Err(e) = conntrack::delete_by_mark(plan::mark(policy, l.slot), u32::MAX) {
            tracing::warn!(job_id, node = %layout.node, error = %e, "cannot delete the job's conntrack entries; they expire on their own");
        }
    }
    step("conntrack");
    let now = lease::now();
    if let Some(l) = &lease {
        // the slot's counters are the job's until its lease is released: read them first
        match record_job(l, &layout.node, &layout.accounting_log, now) {
            Ok(r) => {
                if let Some(e) = &r.error {
                    tracing::error!(job_id, node = %layout.node, error = %e, "traffic counters unreadable; the accounting record has zeros and this error");
                }
            }
            Err(e) => {
                tracing::error!(job_id, node = %layout.node, error = %e, "accounting record not written; the job's traffic is not accounted (the lease is released anyway)")
            }
        }
    }
    step("accounting");
    // the quarantine of the pool the lease's ports belong to
    let quarantine = lease.as_ref().map_or(policy.ports.quarantine_secs, |l| {
        policy.quarantine_secs(l.port_first)
    });
    let released = match table.release(job_id, now, quarantine) {
        Some(l) => {
            // logged before the table forgets the lease: an epilog killed in between releases
            // and logs it again when run again, so the record is never lost
            let rec = LogRecord::new("release", &l, &layout.node, now);
            let rec = match caller {
                Caller::Epilog => rec,
                Caller::Orphan => rec.with_reason(lease::unreleased::ORPHAN),
            };
            rec.append(&layout.lease_log)?;
            step("release-log");
            table.store(&table_path)?;
            true
        }
        None => false,
    };
    step("lease-store");
    // the table no longer holds a lease of the job
    crate::store::markers::clear(layout, job_id)?;
    failpoint::hit("epilog-before-state-removed");
    if state.is_some() || state_exists {
        crate::store::fs::remove_file(&state_path)?;
    }
    step("marker-state-removed");
    Ok(TeardownOutcome::Done { released })
}

/// The epilog's part: reads the counters of `lease`'s slot and appends the job's record to
/// `log`. Called before the lease is released (the slot's counters are the job's until then).
fn record_job(lease: &Lease, node: &str, log: &Path, end: u64) -> Result<Record, FsError> {
    let counters = node::counters::read(&[lease.slot])
        .map_err(|e| e.to_string())
        .and_then(|m| {
            m.get(&lease.slot)
                .copied()
                .ok_or_else(|| "no counters read".to_owned())
        });
    let rec = Record::new(lease, node, end, counters);
    rec.append(log)?;
    Ok(rec)
}

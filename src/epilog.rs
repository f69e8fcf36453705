//! What the epilog does for one job on one node: tear down, release, record. Safe to run
//! twice, and after a prolog that failed or never ran: names derive from the job id and the
//! lease table, not from the state file alone.

use crate::fsutil::Lock;
use crate::job::JobEnv;
use crate::layout::Layout;
use crate::lease::{self, LeaseTable, LogRecord};
use crate::netlink::Netlink;
use crate::state::JobState;
use crate::{cgroup, failpoint, prolog};
use extnet_policy::Policy;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Nothing of this job on this node.
    Nothing,
    /// Torn down; `released` says whether a lease was released.
    Done { released: bool },
}

/// Tears the job down. Errors are collected; the lease is released only when the job's path
/// out is really gone (a process that survived would otherwise carry the next job's mark), and
/// the state file is removed last.
pub fn run(policy: &Policy, layout: &Layout, job: &JobEnv) -> anyhow::Result<Report> {
    let state_path = layout.job_state(job.job_id);
    let state = match JobState::load(&state_path, job.job_id) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(job_id = job.job_id, error = %e, "job state unreadable; tearing down by job id");
            None
        }
    };
    let state_exists = state_path.exists();
    let table_path = layout.lease_table();
    // fast path: no state, no lease marker, no namespace (see crate::leasemark)
    if !crate::leasemark::may_have_anything(layout, job.job_id) {
        return Ok(Report::Nothing);
    }
    crate::steps::mark("state-read");
    let _lock = Lock::acquire(&layout.lock_file())?;
    failpoint::hit("epilog-after-lock");
    crate::steps::mark("lock");
    let mut table = LeaseTable::load(&table_path, &layout.node)?;
    crate::steps::mark("lease-load");
    let lease = table.lease_of(job.job_id).cloned();
    let mut errors: Vec<String> = Vec::new();
    if let Some(l) = &lease {
        if let Err(e) = cgroup::kill_all(&layout.slot_cgroup(l.slot), Duration::from_secs(10)) {
            errors.push(e.to_string());
        }
    }
    failpoint::hit("epilog-after-kill");
    crate::steps::mark("cgroup-kill");
    match Netlink::open() {
        Ok(mut nl) => {
            if let Err(e) = prolog::teardown_netns(layout, &mut nl, job.job_id) {
                errors.push(format!("{e:#}"));
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    failpoint::hit("epilog-after-netns-teardown");
    crate::steps::mark("netns-teardown");
    // the slot's allowlist binding stays (no nft change on the epilog's path): nothing is left
    // that sends with its mark, and the slot's next holder binds it again before its tasks
    // start (see crate::allowlist)
    if !errors.is_empty() {
        anyhow::bail!(
            "teardown of job {} on node {} failed, its lease is kept so no other job gets its ports: {}",
            job.job_id,
            layout.node,
            errors.join("; ")
        );
    }
    let now = lease::now();
    if let Some(l) = &lease {
        // the slot's counters are the job's until its lease is released: read them first
        match crate::accounting::record_job(l, &layout.node, &layout.accounting_log, now) {
            Ok(r) => {
                if let Some(e) = &r.error {
                    tracing::error!(job_id = job.job_id, node = %layout.node, error = %e, "traffic counters unreadable; the accounting record has zeros and this error");
                }
            }
            Err(e) => {
                tracing::error!(job_id = job.job_id, node = %layout.node, error = %e, "accounting record not written; the job's traffic is not accounted (the lease is released anyway)")
            }
        }
    }
    crate::steps::mark("accounting");
    // the quarantine of the pool the lease's ports belong to
    let quarantine = lease.as_ref().map_or(policy.ports.quarantine_secs, |l| {
        policy.quarantine_secs(l.port_first)
    });
    let released = match table.release(job.job_id, now, quarantine) {
        Some(l) => {
            // logged before the table forgets the lease: an epilog killed in between releases
            // and logs it again when run again, so the record is never lost
            LogRecord::new("release", &l, &layout.node, now).append(&layout.lease_log)?;
            crate::steps::mark("release-log");
            failpoint::hit("epilog-after-release-logged");
            table.store(&table_path)?;
            true
        }
        None => false,
    };
    crate::steps::mark("lease-store");
    failpoint::hit("epilog-after-lease-stored");
    // the table no longer holds a lease of the job
    crate::leasemark::clear(layout, job.job_id)?;
    failpoint::hit("epilog-before-state-removed");
    if state.is_some() || state_exists {
        std::fs::remove_file(&state_path).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    }
    crate::steps::mark("marker-state-removed");
    Ok(Report::Done { released })
}

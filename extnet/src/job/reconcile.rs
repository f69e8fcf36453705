//! `extnet reconcile`: ends what jobs left on the node when their epilog never ran, and closes
//! in the lease log the leases a reboot ended.
//!
//! - [`reconcile`]: every job that has something on the node (a lease, a state file, a lease
//!   marker, a namespace, a job cgroup) and that Slurm says no longer runs here is torn down
//!   exactly as its epilog would ([`teardown::run_as`] with [`Caller::Orphan`]), its `release`
//!   record saying `reason: orphan`. Slurm is asked through a closure the binary passes in
//!   (`squeue` at the CLI's edge); a job it cannot say anything about is left alone, so a
//!   running job's lease is never released because Slurm did not answer.
//! - [`close_unreleased`]: the lease log lives on disk, the state directory usually on tmpfs.
//!   After a reboot the log's last `allocate` records have no `release` and the table that
//!   held their leases is gone; this appends the `release` records
//!   ([`crate::store::lease::unreleased`]). Idempotent: a second run finds them closed.
//! - [`check_pinned`]: the records of namespaces that were still held after their job's
//!   teardown ([`crate::store::pinned`]) are looked at again; a record whose namespace nothing
//!   holds any more is removed.

use crate::job::teardown::{self, Caller, TeardownOutcome};
use crate::job::JobError;
use crate::kernel::netns;
use crate::plan::layout::Layout;
use crate::store::fs::Lock;
use crate::store::lease::{unreleased, LeaseTable, LogRecord};
use crate::store::pinned::{self, Pinned};
use extnet_policy::Policy;
use std::collections::BTreeMap;
use std::fmt;

/// What of a job is on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub lease: bool,
    pub state: bool,
    pub marker: bool,
    pub netns: bool,
    pub cgroup: bool,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.lease, "lease"),
            (self.state, "state file"),
            (self.marker, "lease marker"),
            (self.netns, "namespace"),
            (self.cgroup, "cgroup"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        f.write_str(&parts.join(", "))
    }
}

/// What reconcile did for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Slurm says it runs on this node: left alone.
    Running,
    /// Slurm could not be asked: left alone (never release a lease that may be live).
    Unknown,
    /// It does not run here; a dry run: would have been torn down.
    WouldTearDown,
    /// Torn down as its epilog would; `released` says whether a lease was released.
    TornDown { released: bool },
    /// The teardown failed (the lease is kept, as by a failed epilog).
    Failed(String),
}

/// One job found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub job_id: u32,
    pub found: Found,
    pub action: Action,
}

impl fmt::Display for JobReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {} ({}): ", self.job_id, self.found)?;
        match &self.action {
            Action::Running => f.write_str("runs here, left alone"),
            Action::Unknown => f.write_str("Slurm could not be asked, left alone"),
            Action::WouldTearDown => f.write_str("no longer runs here, would be torn down"),
            Action::TornDown { released: true } => {
                f.write_str("no longer runs here, torn down, lease released (orphan)")
            }
            Action::TornDown { released: false } => {
                f.write_str("no longer runs here, torn down (no lease)")
            }
            Action::Failed(e) => write!(f, "no longer runs here, teardown failed: {e}"),
        }
    }
}

/// What [`reconcile`] found and did, by job id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub jobs: Vec<JobReport>,
}

impl Report {
    /// Whether some teardown failed.
    pub fn failed(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| matches!(j.action, Action::Failed(_)))
    }
}

/// Every job with something on the node: lease table (read under the node lock), `jobs/`
/// (`<id>.json`, `<id>.lease`), `netns_dir` (`extnet-<node>-<id>`), the cgroup root
/// (`job_<id>`). One directory listing each and one table load.
pub fn jobs_on_node(layout: &Layout) -> Result<BTreeMap<u32, Found>, JobError> {
    let mut jobs: BTreeMap<u32, Found> = BTreeMap::new();
    {
        let _lock = Lock::acquire(&layout.lock_file())?;
        let table = LeaseTable::load(&layout.lease_table(), &layout.node)?;
        for l in &table.leases {
            jobs.entry(l.job_id).or_default().lease = true;
        }
    }
    let names = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    for name in names(&layout.jobs_dir) {
        if let Some(id) = name.strip_suffix(".json").and_then(|i| i.parse().ok()) {
            jobs.entry(id).or_default().state = true;
        } else if let Some(id) = name.strip_suffix(".lease").and_then(|i| i.parse().ok()) {
            jobs.entry(id).or_default().marker = true;
        }
    }
    let prefix = layout.netns_name(0);
    let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
    for name in names(&layout.netns_dir) {
        if let Some(id) = name.strip_prefix(prefix).and_then(|i| i.parse().ok()) {
            jobs.entry(id).or_default().netns = true;
        }
    }
    for name in names(&layout.cgroup_root) {
        if let Some(id) = name.strip_prefix("job_").and_then(|i| i.parse().ok()) {
            jobs.entry(id).or_default().cgroup = true;
        }
    }
    Ok(jobs)
}

/// Tears down every job on the node that `running` says does not run here
/// (`Some(false)`); leaves the ones it says run (`Some(true)`) or cannot tell about (`None`).
/// `running` is called only after the node was scanned, so a job whose prolog starts later is
/// not seen, and one seen was allocated before Slurm is asked (a closure that asks Slurm once
/// should do so at its first call). With `dry_run` nothing is changed.
pub fn reconcile(
    policy: &Policy,
    layout: &Layout,
    running: &dyn Fn(u32) -> Option<bool>,
    dry_run: bool,
) -> Result<Report, JobError> {
    let mut report = Report::default();
    for (job_id, found) in jobs_on_node(layout)? {
        let action = match running(job_id) {
            Some(true) => Action::Running,
            None => Action::Unknown,
            Some(false) if dry_run => Action::WouldTearDown,
            Some(false) => match teardown::run_as(policy, layout, job_id, Caller::Orphan) {
                Ok(TeardownOutcome::Done { released }) => {
                    tracing::warn!(job_id, node = %layout.node, released, "orphaned job torn down");
                    Action::TornDown { released }
                }
                Ok(TeardownOutcome::Nothing) => Action::TornDown { released: false },
                Err(e) => Action::Failed(crate::diag::error_chain(&e)),
            },
        };
        report.jobs.push(JobReport {
            job_id,
            found,
            action,
        });
    }
    Ok(report)
}

/// Appends a `release` record for every `allocate` of this node in the lease log that has
/// none and whose lease the table no longer holds (reason `reboot` at `boot` when allocated
/// before it, else `orphan` at `now`; see [`unreleased::closing_releases`]). Returns the
/// records, written unless `dry_run`. Under the node lock, so that no prolog is between
/// storing its lease and logging it. Costs one read of the current lease-log file
/// ([`unreleased`]) and one table load; running it again adds nothing.
pub fn close_unreleased(
    layout: &Layout,
    boot: u64,
    now: u64,
    dry_run: bool,
) -> Result<Vec<LogRecord>, JobError> {
    let _lock = Lock::acquire(&layout.lock_file())?;
    let table = LeaseTable::load(&layout.lease_table(), &layout.node)?;
    let scan = unreleased::scan_file(&layout.lease_log, &layout.node)?;
    if scan.unreadable > 0 {
        tracing::warn!(node = %layout.node, log = %layout.lease_log.display(), lines = scan.unreadable, "lease-log lines that are not records were skipped");
    }
    let records = unreleased::closing_releases(&scan.open, &table, boot, now);
    if !dry_run && !records.is_empty() {
        LogRecord::append_all(&records, &layout.lease_log)?;
        for r in &records {
            tracing::warn!(job_id = r.job_id, node = %layout.node, reason = r.reason.as_deref().unwrap_or(""), "lease-log allocate closed with a release");
        }
    }
    Ok(records)
}

/// A pinned namespace's record, looked at again by [`check_pinned`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinCheck {
    /// The record, with the holders found now.
    pub pinned: Pinned,
    /// Nothing holds the namespace any more: the record is removed (or would be, dry run).
    pub gone: bool,
}

/// Looks again at every pinned-namespace record of the node: one whose namespace no process
/// holds any more (no thread in it, no fd on it: [`netns::holders`] of its inode) is removed
/// with a log line; the others are rewritten with the holders found now. A record that does
/// not decode is left for the admin and logged. With `dry_run` nothing is changed.
pub fn check_pinned(layout: &Layout, dry_run: bool) -> Vec<PinCheck> {
    let (records, bad) = pinned::list(layout);
    for b in bad {
        tracing::warn!(node = %layout.node, record = %b, "unreadable pinned-namespace record left alone");
    }
    let mut out = Vec::new();
    for mut p in records {
        let holders = netns::holders(p.inode);
        let gone = holders.is_empty();
        if gone {
            if !dry_run {
                match pinned::remove(layout, p.job_id) {
                    Ok(_) => {
                        tracing::info!(job_id = p.job_id, node = %layout.node, inode = p.inode, "the job's pinned namespace is gone; its record is removed")
                    }
                    Err(e) => {
                        tracing::warn!(job_id = p.job_id, node = %layout.node, error = %e, "cannot remove the pinned-namespace record")
                    }
                }
            }
        } else {
            let changed = holders != p.holders;
            p.holders = holders;
            if changed && !dry_run {
                if let Err(e) = pinned::store(layout, &p) {
                    tracing::warn!(job_id = p.job_id, node = %layout.node, error = %e, "cannot update the pinned-namespace record");
                }
            }
            tracing::warn!(job_id = p.job_id, node = %layout.node, inode = p.inode, holders = %p.holders_line(), "the job's network namespace is still pinned (it holds only lo)");
        }
        out.push(PinCheck { pinned: p, gone });
    }
    out
}

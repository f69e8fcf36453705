//! What the prolog does for one job on one node: decide, lease, set up, record.
//!
//! Order matters for crash safety: the lease is stored before any kernel change (so a prolog
//! killed at any point leaves a lease the epilog finds and releases), the lease log record is
//! on disk before the state file that lets tasks start, and every object's name derives from
//! the job id (so the epilog finds it without the state file).

use crate::diag::failpoint;
use crate::diag::timings::done as step;
use crate::job::cgroup as job_cgroup;
use crate::job::env::JobEnv;
use crate::job::JobError;
use crate::job::{netns, resolv};
use crate::kernel::netlink::Netlink;
use crate::node;
use crate::plan::layout::Layout;
use crate::store::denials::{self, DenialReason};
use crate::store::fs::Lock;
use crate::store::lease::{self, LeaseError, LeaseRequest, LeaseTable, LogRecord};
use crate::store::state::{Grant, JobState, Outcome, STATE_VERSION};
use extnet_policy::{decide_skipping, Decision, Mode, Policy};
use std::path::Path;

/// What the prolog did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    /// The job did not ask and no profile grants it without asking.
    NotRequested,
    Denied {
        /// The sentence the job's tasks fail with.
        reason: String,
        /// The counted reason.
        why: DenialReason,
    },
    Granted(Grant),
}

/// Decides and, on grant, sets the job up. Errors here are node faults (state directory not
/// writable, ...); a denial or a failed setup is a [`SetupOutcome::Denied`] with the reason, recorded
/// in the job state file so the job's tasks fail with it.
pub fn run(policy: &Policy, layout: &Layout, job: &JobEnv) -> Result<SetupOutcome, JobError> {
    if job.request == extnet_policy::Request::None && !policy.has_auto() {
        return Ok(SetupOutcome::NotRequested);
    }
    let identity = job.identity();
    // profiles whose limits are reached or whose port pool is full on this node: a job that
    // did not name a profile gets the next one that grants it
    let mut full: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    // why the last profile tried could not be had: the counted reason of a denial after it
    let mut capacity = DenialReason::Limit;
    let report = loop {
        let decision = decide_skipping(policy, &identity, &job.request, &full);
        match decision {
            Decision::NotRequested if limits.is_empty() => return Ok(SetupOutcome::NotRequested),
            Decision::NotRequested => {
                break SetupOutcome::Denied {
                    reason: limits.join("; "),
                    why: capacity,
                }
            }
            Decision::Denied { reason } if limits.is_empty() => {
                break SetupOutcome::Denied {
                    reason,
                    why: DenialReason::Policy,
                }
            }
            Decision::Denied { .. } => {
                break SetupOutcome::Denied {
                    reason: limits.join("; "),
                    why: capacity,
                }
            }
            Decision::Granted {
                profile,
                auto,
                rule,
            } => {
                tracing::info!(job_id = job.job_id, user = %job.user, %profile, auto, %rule, "granted");
                let mode = policy
                    .profile(&profile)
                    .map(|p| p.mode)
                    .unwrap_or(policy.node.mode);
                match grant(policy, layout, job, &profile, auto, mode) {
                    Ok(g) => break SetupOutcome::Granted(g),
                    Err(e) if e.is_capacity() => {
                        limits.push(e.to_string());
                        capacity = match e {
                            JobError::Lease(LeaseError::PoolFull { .. }) => DenialReason::PoolFull,
                            _ => DenialReason::Limit,
                        };
                        if matches!(job.request, extnet_policy::Request::Profile(_)) {
                            break SetupOutcome::Denied {
                                reason: limits.join("; "),
                                why: capacity,
                            };
                        }
                        tracing::info!(job_id = job.job_id, %profile, reason = %e, "trying the next profile");
                        full.push(profile);
                    }
                    Err(e) => {
                        break SetupOutcome::Denied {
                            reason: format!(
                                "external network setup failed on node {}: {}; the job gets no external access (admins: see the extnet log on {})",
                                layout.node, crate::diag::error_chain(&e), layout.node
                            ),
                            why: DenialReason::SetupFailed,
                        }
                    }
                }
            }
        }
    };
    failpoint::hit("prolog-before-state-file");
    let outcome = match &report {
        SetupOutcome::Granted(g) => Outcome::Granted(g.clone()),
        SetupOutcome::Denied { reason, why } => {
            tracing::warn!(job_id = job.job_id, user = %job.user, %reason, why = why.as_str(), "denied");
            Outcome::Denied {
                reason: reason.clone(),
            }
        }
        SetupOutcome::NotRequested => unreachable!("returned above"),
    };
    JobState {
        version: STATE_VERSION,
        job_id: job.job_id,
        node: layout.node.clone(),
        user: job.user.clone(),
        uid: job.uid,
        created: lease::now(),
        outcome,
    }
    .store(&layout.job_state(job.job_id))?;
    step("state-file");
    if let SetupOutcome::Denied { why, .. } = report {
        // counted after the state file: the job's answer does not wait for the counter, and
        // a counter that cannot be written costs a count, never the job's answer
        if let Err(e) = denials::count(&layout.denials(), &layout.lock_file(), why) {
            tracing::warn!(job_id = job.job_id, error = %e, why = why.as_str(), "denial not counted");
        }
    }
    Ok(report)
}

fn grant(
    policy: &Policy,
    layout: &Layout,
    job: &JobEnv,
    profile: &str,
    auto: bool,
    mode: Mode,
) -> Result<Grant, JobError> {
    step("decide");
    let _lock = Lock::acquire(&layout.lock_file())?;
    step("lock");
    let mut nl = Netlink::open()?;
    let (iface, node_addr) = node::node_addr(policy, layout, &mut nl)?;
    let node_addr6 = node::node_addr6(policy, &mut nl, iface)?;
    step("node-addr");
    let table_path = layout.lease_table();
    let mut table = LeaseTable::load(&table_path, &layout.node)?;
    step("lease-load");
    let profile_def = policy.profile(profile).ok_or_else(|| {
        JobError::Vanished(format!("profile {profile:?} vanished from the policy"))
    })?;
    if table.lease_of(job.job_id).is_none() {
        crate::job::limits::check(
            profile_def,
            &layout.node,
            &table.leases,
            job.job_id,
            job.uid,
            &job.user,
        )?;
    }
    let now = lease::now();
    let req = LeaseRequest {
        job_id: job.job_id,
        user: &job.user,
        uid: job.uid,
        mode,
        profile,
        // the lease records the mark of the job's checked packets (plan::mark)
        fwmark: policy.node.fwmark | policy.node.checked_fwmark,
        node_addr,
        // what the job's IPv6 is translated to, when it goes out at all: a netns job's only
        // from a node that forwards IPv6 (netns::ipv6_addrs)
        node_addr6: node_addr6.filter(|_| match mode {
            Mode::Cgroup => policy.ipv6_of(profile_def),
            Mode::Netns => {
                policy.netns_ipv6_of(profile_def) && crate::kernel::sysctl::ipv6_forwarding()
            }
        }),
    };
    // a block of the profile's pool: its own ([profile.ports]) or the default one
    step("limits");
    let (l, new) = table.allocate(&req, policy.pool_of(profile_def), now)?;
    step("allocate");
    if new {
        // before the table holds the lease: the epilog's fast path looks for the marker
        crate::store::markers::set(layout, &table, job.job_id)?;
    }
    step("lease-marker");
    let interim = write_due_interim(&mut table, layout, policy, now);
    if new || interim > 0 {
        table.store(&table_path)?;
    }
    step("lease-store");
    let result = (|| -> Result<Grant, JobError> {
        node::ensure_with(policy, layout, &mut nl, iface, node_addr, node_addr6)?;
        step("node-ensure");
        let mut g = Grant {
            profile: profile.to_owned(),
            auto,
            mode,
            slot: l.slot,
            mark: l.mark,
            port_first: l.port_first,
            port_last: l.port_last,
            node_addr,
            cgroup: None,
            netns: None,
            slurm_cgroup: None,
            resolv_conf: None,
        };
        match mode {
            Mode::Cgroup => {
                g.cgroup = Some(job_cgroup::setup(policy, layout, job.job_id, l.slot)?);
            }
            Mode::Netns => {
                // IPv6 on the veth pair only when it can leave (else it stays off there)
                let ipv6 = policy.netns_ipv6_of(profile_def) && node_addr6.is_some();
                netns::setup(policy, layout, &mut nl, job.job_id, l.slot, ipv6)?;
                g.netns = Some(layout.netns_dir.join(layout.netns_name(job.job_id)));
                g.resolv_conf = resolv::prepare(
                    policy,
                    layout,
                    job.job_id,
                    Path::new(resolv::NODE_RESOLV_CONF),
                    Path::new(resolv::RESOLVED_UPSTREAM),
                )?;
            }
        }
        step(if mode == Mode::Cgroup {
            "cgroup"
        } else {
            "netns-setup"
        });
        if new {
            // the job's traffic counters start at zero (after the slot's leftovers are gone)
            node::counters::reset(l.slot)?;
        }
        // the job reaches its profile's destinations only from here on (fail closed before)
        step("counters-reset");
        node::allowlist::bind(l.mark, profile_def)?;
        step("allowlist-bind");
        // On disk before the state file lets tasks start, and only once the setup worked (a
        // rolled-back lease leaves no record). Logged again by a prolog run again after a crash:
        // the lease then exists already and its first record may be missing.
        LogRecord::new("allocate", &l, &layout.node, now).append(&layout.lease_log)?;
        step("lease-log");
        Ok(g)
    })();
    if result.is_err() && new {
        // roll back: nothing ran with this lease, so no quarantine and no release record
        let _ = netns::teardown(layout, &mut nl, job.job_id);
        let _ = resolv::remove(layout, job.job_id);
        let _ = job_cgroup::teardown(layout, job.job_id);
        let _ = node::allowlist::unbind(l.mark);
        if let Ok(mut t) = LeaseTable::load(&table_path, &layout.node) {
            if t.forget(job.job_id).is_some() && t.store(&table_path).is_ok() {
                let _ = crate::store::markers::clear(layout, job.job_id);
            }
        }
    }
    result
}

/// Writes the `interim` lease-log records that are due for running leases (`log.interim_secs`)
/// while the prolog holds the node lock and the table anyway; `extnet lease-log interim` from
/// a timer covers nodes without new jobs. A failure is logged and left to the next try.
fn write_due_interim(table: &mut LeaseTable, layout: &Layout, policy: &Policy, now: u64) -> usize {
    match table.log_interim(&layout.lease_log, now, policy.log.interim_secs) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(node = %layout.node, error = %e, "cannot write interim lease-log records; the next prolog or `extnet lease-log interim` tries again");
            0
        }
    }
}

//! What the prolog does for one job on one node: decide, lease, set up, record.
//!
//! Order matters for crash safety: the lease is stored before any kernel change (so a prolog
//! killed at any point leaves a lease the epilog finds and releases), the lease log record is
//! on disk before the state file that lets tasks start, and every object's name derives from
//! the job id (so the epilog finds it without the state file).

use crate::fsutil::Lock;
use crate::job::JobEnv;
use crate::layout::Layout;
use crate::lease::{self, LeaseRequest, LeaseTable, LogRecord};
use crate::netlink::route::{Route, RouteKind};
use crate::netlink::Netlink;
use crate::state::{Grant, JobState, Outcome, STATE_VERSION};
use crate::{cgroup, failpoint, netns, node, plan};
use extnet_policy::{decide_skipping, Decision, Mode, Policy};
use ipnet::Ipv4Net;
use std::os::fd::AsFd;
use std::time::Duration;

/// What the prolog did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The job did not ask and no profile grants it without asking.
    NotRequested,
    Denied {
        reason: String,
    },
    Granted(Grant),
}

/// Decides and, on grant, sets the job up. Errors here are node faults (state directory not
/// writable, ...); a denial or a failed setup is a [`Report::Denied`] with the reason, recorded
/// in the job state file so the job's tasks fail with it.
pub fn run(policy: &Policy, layout: &Layout, job: &JobEnv) -> anyhow::Result<Report> {
    if job.request == extnet_policy::Request::None && !policy.has_auto() {
        return Ok(Report::NotRequested);
    }
    let identity = job.identity();
    // profiles whose limits are reached or whose port pool is full on this node: a job that
    // did not name a profile gets the next one that grants it
    let mut full: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    let report = loop {
        let decision = decide_skipping(policy, &identity, &job.request, &full);
        match decision {
            Decision::NotRequested if limits.is_empty() => return Ok(Report::NotRequested),
            Decision::NotRequested => {
                break Report::Denied {
                    reason: limits.join("; "),
                }
            }
            Decision::Denied { reason } if limits.is_empty() => break Report::Denied { reason },
            Decision::Denied { .. } => {
                break Report::Denied {
                    reason: limits.join("; "),
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
                    Ok(g) => break Report::Granted(g),
                    Err(e)
                        if e.is::<crate::limits::LimitReached>()
                            || matches!(
                                e.downcast_ref::<crate::lease::LeaseError>(),
                                Some(crate::lease::LeaseError::PoolFull { .. })
                            ) =>
                    {
                        limits.push(e.to_string());
                        if matches!(job.request, extnet_policy::Request::Profile(_)) {
                            break Report::Denied {
                                reason: limits.join("; "),
                            };
                        }
                        tracing::info!(job_id = job.job_id, %profile, reason = %e, "trying the next profile");
                        full.push(profile);
                    }
                    Err(e) => {
                        break Report::Denied {
                            reason: format!(
                                "external network setup failed on node {}: {e:#}; the job gets no external access (admins: see the extnet log on {})",
                                layout.node, layout.node
                            ),
                        }
                    }
                }
            }
        }
    };
    failpoint::hit("prolog-before-state-stored");
    let outcome = match &report {
        Report::Granted(g) => Outcome::Granted(g.clone()),
        Report::Denied { reason } => {
            tracing::warn!(job_id = job.job_id, user = %job.user, %reason, "denied");
            Outcome::Denied {
                reason: reason.clone(),
            }
        }
        Report::NotRequested => unreachable!("returned above"),
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
    crate::steps::mark("state-file");
    failpoint::hit("prolog-after-state-stored");
    Ok(report)
}

fn grant(
    policy: &Policy,
    layout: &Layout,
    job: &JobEnv,
    profile: &str,
    auto: bool,
    mode: Mode,
) -> anyhow::Result<Grant> {
    crate::steps::mark("decide");
    let _lock = Lock::acquire(&layout.lock_file())?;
    failpoint::hit("prolog-after-lock");
    crate::steps::mark("lock");
    let mut nl = Netlink::open()?;
    let (iface, node_addr) = node::node_addr(policy, layout, &mut nl)?;
    crate::steps::mark("node-addr");
    let table_path = layout.lease_table();
    let mut table = LeaseTable::load(&table_path, &layout.node)?;
    crate::steps::mark("lease-load");
    let profile_def = policy
        .profile(profile)
        .ok_or_else(|| anyhow::anyhow!("profile {profile:?} vanished from the policy"))?;
    if table.lease_of(job.job_id).is_none() {
        crate::limits::check(
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
        fwmark: policy.node.fwmark,
        node_addr,
    };
    // a block of the profile's pool: its own ([profile.ports]) or the default one
    crate::steps::mark("limits");
    let (l, new) = table.allocate(&req, policy.pool_of(profile_def), now)?;
    crate::steps::mark("allocate");
    if new {
        // before the table holds the lease: the epilog's fast path looks for the marker
        crate::leasemark::set(layout, &table, job.job_id)?;
        failpoint::hit("prolog-after-lease-marker");
    }
    crate::steps::mark("lease-marker");
    let interim = write_due_interim(&mut table, layout, policy, now);
    if new || interim > 0 {
        table.store(&table_path)?;
    }
    crate::steps::mark("lease-store");
    failpoint::hit("prolog-after-lease-stored");
    let result = (|| -> anyhow::Result<Grant> {
        node::ensure(policy, layout, &mut nl, iface, node_addr, Some(l.slot))?;
        crate::steps::mark("node-ensure");
        failpoint::hit("prolog-after-base-ensure");
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
        };
        match mode {
            Mode::Cgroup => {
                let dir = layout.slot_cgroup(l.slot);
                // a process left from an earlier holder of this slot must not share its mark
                cgroup::kill_all(&dir, Duration::from_secs(5))?;
                g.cgroup = Some(dir);
            }
            Mode::Netns => {
                setup_netns(policy, layout, &mut nl, job.job_id, l.slot)?;
                g.netns = Some(layout.netns_dir.join(layout.netns_name(job.job_id)));
            }
        }
        crate::steps::mark(if mode == Mode::Cgroup {
            "cgroup"
        } else {
            "netns-setup"
        });
        if new {
            // the job's traffic counters start at zero (after the slot's leftovers are gone)
            crate::accounting::reset(l.slot)?;
        }
        // the job reaches its profile's destinations only from here on (fail closed before)
        crate::steps::mark("counters-reset");
        crate::allowlist::bind(l.mark, profile_def)?;
        crate::steps::mark("allowlist-bind");
        // On disk before the state file lets tasks start, and only once the setup worked (a
        // rolled-back lease leaves no record). Logged again by a prolog run again after a crash:
        // the lease then exists already and its first record may be missing.
        LogRecord::new("allocate", &l, &layout.node, now).append(&layout.lease_log)?;
        crate::steps::mark("lease-log");
        failpoint::hit("prolog-after-allocate-logged");
        Ok(g)
    })();
    if result.is_err() && new {
        // roll back: nothing ran with this lease, so no quarantine and no release record
        let _ = teardown_netns(layout, &mut nl, job.job_id);
        let _ = crate::allowlist::unbind(l.mark);
        if let Ok(mut t) = LeaseTable::load(&table_path, &layout.node) {
            if t.forget(job.job_id).is_some() && t.store(&table_path).is_ok() {
                let _ = crate::leasemark::clear(layout, job.job_id);
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

/// The job's namespace, veth pair, addresses and routes (netns mode). Equals:
/// `ip netns add NS; ip link add xjJOB type veth peer name eth0 netns NS;
///  ip addr add HOST/30 dev xjJOB; ip link set xjJOB up; ip -n NS link set lo up;
///  ip -n NS addr add JOB/30 dev eth0; ip -n NS link set eth0 up;
///  ip -n NS route add default via HOST`.
fn setup_netns(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    job_id: u32,
    slot: u32,
) -> anyhow::Result<()> {
    let name = layout.netns_name(job_id);
    // a prolog run twice: start from scratch
    teardown_netns(layout, nl, job_id)?;
    let host = Layout::veth_name(job_id);
    // the kernel reaps a dropped namespace's veth pair asynchronously: one left by an earlier
    // run for this job (killed midway) may still be there; deleting it is slow but rare
    if nl.index(&host)?.is_some() {
        nl.delete(&host)?;
    }
    let ns = netns::create(&layout.netns_dir, &name)?;
    failpoint::hit("prolog-after-netns-created");
    let (host_addr, job_addr) = plan::netns_addrs(policy, slot);
    nl.veth_add(&host, "eth0", ns.as_fd())?;
    failpoint::hit("prolog-after-veth");
    let idx = nl
        .index(&host)?
        .ok_or_else(|| anyhow::anyhow!("veth {host} vanished right after creation"))?;
    nl.addr_add(idx, host_addr, 30)?;
    node::sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/forwarding"), "1")?;
    // Before the link is up. IPv6 would give the host side a link-local address and routes in
    // the node's IPv6 FIB (fe80::/64, ff00::/8, ...), and the kernel walks that whole FIB on
    // every link event while holding RTNL: with 500 netns jobs on a node, the next job's
    // default route waited ~0.35 ms for it, and each namespace's teardown walked it again.
    node::disable_ipv6(&host)?;
    nl.set_up(idx)?;
    let mut jnl = Netlink::open_in(ns.as_fd())?;
    if let Some(lo) = jnl.index("lo")? {
        jnl.set_up(lo)?;
    }
    let eth = jnl
        .index("eth0")?
        .ok_or_else(|| anyhow::anyhow!("eth0 missing in namespace {name}"))?;
    jnl.addr_add(eth, job_addr, 30)?;
    jnl.set_up(eth)?;
    jnl.route_replace(&Route {
        table: 254,
        dst: Ipv4Net::default(),
        kind: RouteKind::Unicast {
            gateway: Some(host_addr),
            oif: Some(eth),
        },
    })?;
    failpoint::hit("prolog-after-addresses-routes");
    Ok(())
}

/// Drops the job's namespace (netns mode), killing what still runs inside; the kernel then
/// reaps the veth pair (dropping the namespace costs ~50 µs, deleting the veth ~30 ms).
pub fn teardown_netns(layout: &Layout, nl: &mut Netlink, job_id: u32) -> anyhow::Result<bool> {
    let name = layout.netns_name(job_id);
    let mut found = false;
    let opened = match netns::open(&layout.netns_dir, &name) {
        Ok(f) => f,
        // a plain file left by a prolog killed inside `netns::create`: the name is the job's,
        // so whatever is there is ours to remove
        Err(netns::NetnsError::NotNetns { path, what }) => {
            tracing::warn!(job_id, path = %path.display(), %what, "removing a leftover namespace file");
            netns::delete(&layout.netns_dir, &name)?;
            found = true;
            None
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(f) = opened {
        found = true;
        let ino = netns::inode(&f);
        drop(f);
        for _ in 0..100 {
            let pids = netns::pids_in(ino);
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        netns::delete(&layout.netns_dir, &name)?;
    }
    // a veth left from a namespace still pinned elsewhere
    let _ = nl;
    Ok(found)
}

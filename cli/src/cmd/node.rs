//! `extnet node setup`, `extnet node teardown` and `extnet node watch`: the node's base (nft
//! tables, `ip rule`s, routing tables, job cgroup root), which the prolog otherwise loads on demand,
//! and the agent that puts it back when it drifts; `extnet node metrics`, what the agent also
//! writes for node_exporter.

use super::node_name;
use anyhow::Context;
use extnet::kernel::netlink::Netlink;
use extnet::node::metrics;
use extnet::node::watch::{Checked, Trigger, WatchConfig, Watcher};
use extnet::plan::layout::Layout;
use extnet::store::fs::Lock;
use extnet::store::lease::LeaseTable;
use extnet_policy::Policy;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `extnet node setup`: loads the base now, or says it is already current. Under the node
/// lock, like a prolog.
pub fn setup(policy_path: &Path, node: Option<String>) -> anyhow::Result<ExitCode> {
    let (policy, layout) = load(policy_path, node)?;
    let _lock = Lock::acquire(&layout.lock_file())?;
    let mut nl = Netlink::open()?;
    let (idx, addr) = extnet::node::node_addr(&policy, &layout, &mut nl)?;
    let loaded = extnet::node::ensure(&policy, &layout, &mut nl, idx, addr)?;
    println!(
        "node {}: base {} (address {addr}, {} slots in {} port pool(s))",
        layout.node,
        if loaded { "loaded" } else { "already current" },
        policy.slots(),
        policy.pools.len()
    );
    if let Some(w) = extnet::job::netns::ipv6_forwarding_warning(&policy) {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `extnet node teardown`: removes the base, refused while any external job holds a lease on
/// the node; reports every part it could not remove.
pub fn teardown(policy_path: &Path, node: Option<String>) -> anyhow::Result<ExitCode> {
    let (policy, layout) = load(policy_path, node)?;
    // the agent would put the base back at once
    let Some(_agent) = Lock::try_acquire(&layout.agent_lock())? else {
        anyhow::bail!(
            "the node agent (extnet node watch) runs on {} and would put the base back; stop it first (systemctl stop extnet-node-watch)",
            layout.node
        );
    };
    let _lock = Lock::acquire(&layout.lock_file())?;
    let table = LeaseTable::load(&layout.lease_table(), &layout.node)?;
    if !table.leases.is_empty() {
        anyhow::bail!(
            "{} external jobs still hold leases on {}; end them first",
            table.leases.len(),
            layout.node
        );
    }
    let mut nl = Netlink::open()?;
    let errors = extnet::node::teardown(&policy, &layout, &mut nl);
    if errors.is_empty() {
        println!("node {}: base removed", layout.node);
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("teardown left errors:\n  {}", errors.join("\n  "))
    }
}

/// `extnet node watch`: the node agent ([`extnet::node::watch`]) until SIGTERM or SIGINT.
/// Logs to stderr and to the policy's `log.file`. At start it closes in the lease log the
/// leases a reboot ended (files only: within the agent's systemd sandbox); every
/// `reconcile_every` (zero: never, the default) a thread of its own tears down jobs Slurm says
/// no longer run on the node (`extnet reconcile`, [`super::reconcile`]), which needs more than
/// that sandbox (squeue's IP sockets, killing, unmounting namespaces). The node's metrics go to
/// `metrics_file` at the start, after each repair and at each periodic check.
pub fn watch(
    policy_path: &Path,
    node: Option<String>,
    reconcile_every: Duration,
    slurm_conf: Option<PathBuf>,
    metrics_file: PathBuf,
) -> anyhow::Result<ExitCode> {
    // the policy first: its log file is where the agent's repairs go, beside the prologs'
    let policy = Policy::load(policy_path)?;
    let node = node_name(node)?;
    let policy = policy.for_node(&node)?;
    extnet::diag::logging::init(
        "extnet-node-watch",
        Some(extnet_policy::expand(&policy.log.file, &node)),
    );
    // SIGTERM and SIGINT arrive on a descriptor that the agent polls with the kernel's
    // sockets; blocked before anything else runs (the nft processes it starts get the
    // default mask back from std's spawn)
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("block SIGTERM and SIGINT")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("open a signalfd for SIGTERM and SIGINT")?;
    let mut watcher = Watcher::start(WatchConfig::new(policy_path, node.clone()))?;
    close_unreleased(&policy, &node);
    if !reconcile_every.is_zero() {
        let (path, node) = (policy_path.to_owned(), node.clone());
        std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || loop {
                std::thread::sleep(reconcile_every);
                reconcile_orphans(&path, &node, slurm_conf.clone());
            })
            .context("start the reconcile thread")?;
    }
    let mut metrics = AgentMetrics::new(metrics_file);
    watcher.run_checks(signals.as_fd(), &mut |c| metrics.checked(c))?;
    if let Ok(Some(info)) = signals.read_signal() {
        let name = Signal::try_from(info.ssi_signo as i32).map_or("a signal", Signal::as_str);
        tracing::info!("{name} received: exiting");
    }
    Ok(ExitCode::SUCCESS)
}

/// `extnet node metrics [--output FILE]`: the node's metrics ([`extnet::node::metrics`]) on
/// stdout, or replacing FILE.
pub fn metrics(
    policy_path: &Path,
    node: Option<String>,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (policy, layout) = load(policy_path, node)?;
    let text = metrics::collect(&policy, &layout, Path::new("/"), None)?.render();
    match output {
        Some(path) => metrics::write(&path, &text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The agent's metrics file: written after each repair and at the start and periodic checks,
/// with the repairs counted since the start.
struct AgentMetrics {
    path: PathBuf,
    repairs: BTreeMap<&'static str, u64>,
    /// Why the last write did not happen, said once until it changes.
    skipped: Option<String>,
}

impl AgentMetrics {
    fn new(path: PathBuf) -> AgentMetrics {
        AgentMetrics {
            path,
            repairs: metrics::TRIGGERS.iter().map(|t| (*t, 0)).collect(),
            skipped: None,
        }
    }

    fn checked(&mut self, c: &Checked<'_>) {
        if let Some(r) = c.repair {
            *self.repairs.entry(r.trigger.label()).or_default() += 1;
        } else if !matches!(c.trigger, Trigger::Start | Trigger::Reconcile) {
            // a job's own changes: the periodic check writes soon enough
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let result = if !dir.is_dir() {
            Err(format!(
                "{} does not exist (no node_exporter textfile directory?); not writing the metrics there",
                dir.display()
            ))
        } else {
            metrics::collect(c.policy, c.layout, Path::new("/"), Some(&self.repairs))
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(metrics::write(&self.path, &s.render())?))
                .map_err(|e| {
                    format!(
                        "cannot write the metrics to {}: {}",
                        self.path.display(),
                        extnet::diag::error_chain(e.as_ref())
                    )
                })
        };
        match result {
            Ok(()) => {
                if self.skipped.take().is_some() {
                    tracing::info!(path = %self.path.display(), "writing the metrics again");
                }
            }
            Err(why) => {
                if self.skipped.as_ref() != Some(&why) {
                    tracing::warn!("{why}");
                    self.skipped = Some(why);
                }
            }
        }
    }
}

/// The agent's start: `release` records for the lease-log allocations a reboot ended. Logged,
/// never fatal.
fn close_unreleased(policy: &Policy, node: &str) {
    let layout = Layout::new(policy, node);
    let closed = extnet::kernel::boot::time()
        .map_err(anyhow::Error::from)
        .and_then(|boot| {
            Ok(extnet::job::reconcile::close_unreleased(
                &layout,
                boot,
                extnet::store::lease::now(),
                false,
            )?)
        });
    match closed {
        Ok(c) if c.is_empty() => {}
        Ok(c) => tracing::warn!(
            node,
            released = c.len(),
            "lease-log allocations the node no longer holds closed with a release record"
        ),
        Err(e) => tracing::error!(
            node,
            "cannot close the lease log's unreleased allocations: {e:#}"
        ),
    }
}

/// One periodic pass of `extnet reconcile`'s orphan part, logged.
fn reconcile_orphans(policy_path: &Path, node: &str, slurm_conf: Option<PathBuf>) {
    let policy = match Policy::load_for_node(policy_path, node) {
        Ok(p) => p,
        Err(e) => return tracing::error!(node, "reconcile skipped: {e}"),
    };
    let layout = Layout::new(&policy, node);
    let slurm = super::reconcile::Slurm::new(node, slurm_conf);
    let report =
        extnet::job::reconcile::reconcile(&policy, &layout, &|job| slurm.running(job), false);
    if let Some(e) = slurm.error() {
        tracing::warn!(
            node,
            "reconcile: cannot ask Slurm ({e}); every job left alone"
        );
    }
    match report {
        Ok(r) => {
            for j in r.jobs.iter().filter(|j| {
                !matches!(
                    j.action,
                    extnet::job::reconcile::Action::Running
                        | extnet::job::reconcile::Action::Unknown
                )
            }) {
                tracing::warn!(node, "reconcile: {j}");
            }
        }
        Err(e) => tracing::error!(node, "reconcile failed: {}", extnet::diag::error_chain(&e)),
    }
    // logs each record it removes or finds still pinned
    extnet::job::reconcile::check_pinned(&layout, false);
}

/// The policy and the node's layout. The policy is read before the node's name is resolved,
/// so a policy that does not load is the error the admin sees first.
fn load(policy_path: &Path, node: Option<String>) -> anyhow::Result<(Policy, Layout)> {
    let policy = Policy::load(policy_path)?;
    let node = node_name(node)?;
    let policy = policy.for_node(&node)?;
    let layout = Layout::new(&policy, &node);
    Ok((policy, layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use extnet::node::watch::Repair;

    /// The agent writes at the start and the periodic check, and after each repair with it
    /// counted; a job's own changes that needed no repair do not rewrite the file; a missing
    /// textfile directory is skipped, not made.
    #[test]
    fn the_agent_writes_its_metrics_when_it_should() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::from_toml(
            &format!(
                "version = 1\n[node]\ninterface = \"eth0\"\ngateway = \"10.99.0.254\"\ninternal = [\"10.99.0.0/24\"]\nstate_dir = \"{}\"\n[[profile]]\nname = \"open\"\nusers = [\"*\"]\n",
                dir.path().join("state").display()
            ),
            "t",
        )
        .unwrap();
        let layout = Layout::new(&policy, "n1");
        let path = dir.path().join("extnet.prom");
        let mut m = AgentMetrics::new(path.clone());
        let check = |trigger, repair| Checked {
            trigger,
            repair,
            policy: &policy,
            layout: &layout,
        };
        let read = || std::fs::read_to_string(&path).unwrap();
        m.checked(&check(Trigger::Start, None));
        assert!(
            read().contains("extnet_agent_repairs_total{trigger=\"events\"} 0\n"),
            "{}",
            read()
        );
        assert!(read().contains("extnet_active_jobs{profile=\"open\"} 0\n"));
        let events = Trigger::Events {
            first: std::time::Instant::now(),
            count: 2,
        };
        let repair = Repair {
            trigger: events,
            drift: Vec::new(),
            loaded: true,
            forced: false,
            took: Duration::ZERO,
            since_event: None,
        };
        m.checked(&check(events, Some(&repair)));
        assert!(read().contains("extnet_agent_repairs_total{trigger=\"events\"} 1\n"));
        std::fs::remove_file(&path).unwrap();
        m.checked(&check(events, None));
        assert!(
            !path.exists(),
            "rewritten after a check that repaired nothing"
        );
        m.checked(&check(Trigger::Reconcile, None));
        assert!(read().contains("extnet_agent_repairs_total{trigger=\"events\"} 1\n"));

        let missing = dir.path().join("no-exporter/extnet.prom");
        let mut m = AgentMetrics::new(missing.clone());
        m.checked(&check(Trigger::Start, None));
        assert!(
            !missing.parent().unwrap().exists(),
            "the directory was made"
        );
        assert!(m.skipped.as_ref().unwrap().contains("does not exist"));
    }
}

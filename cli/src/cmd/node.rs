//! `extnet node setup`, `extnet node teardown` and `extnet node watch`: the node's base (nft
//! tables, `ip rule`s, routing tables, job cgroup root), which the prolog otherwise loads on demand,
//! and the agent that puts it back when it drifts.

use super::node_name;
use anyhow::Context;
use extnet::kernel::netlink::Netlink;
use extnet::node::watch::{WatchConfig, Watcher};
use extnet::plan::layout::Layout;
use extnet::store::fs::Lock;
use extnet::store::lease::LeaseTable;
use extnet_policy::Policy;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

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
/// Logs to stderr and to the policy's `log.file`.
pub fn watch(policy_path: &Path, node: Option<String>) -> anyhow::Result<ExitCode> {
    // the policy first: its log file is where the agent's repairs go, beside the prologs'
    let policy = Policy::load(policy_path)?;
    let node = node_name(node)?;
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
    let mut watcher = Watcher::start(WatchConfig::new(policy_path, node))?;
    watcher.run(signals.as_fd(), &mut |_| {})?;
    if let Ok(Some(info)) = signals.read_signal() {
        let name = Signal::try_from(info.ssi_signo as i32).map_or("a signal", Signal::as_str);
        tracing::info!("{name} received: exiting");
    }
    Ok(ExitCode::SUCCESS)
}

/// The policy and the node's layout. The policy is read before the node's name is resolved,
/// so a policy that does not load is the error the admin sees first.
fn load(policy_path: &Path, node: Option<String>) -> anyhow::Result<(Policy, Layout)> {
    let policy = Policy::load(policy_path)?;
    let layout = Layout::new(&policy, &node_name(node)?);
    Ok((policy, layout))
}

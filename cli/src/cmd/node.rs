//! `extnet node setup` and `extnet node teardown`: the node's base (nft table, `ip rule`,
//! routing tables, slot cgroups), which the prolog otherwise loads on demand.

use super::node_name;
use extnet::kernel::netlink::Netlink;
use extnet::plan::layout::Layout;
use extnet::store::lease::LeaseTable;
use extnet_policy::Policy;
use std::path::Path;
use std::process::ExitCode;

/// `extnet node setup`: loads the base now, or says it is already current.
pub fn setup(policy_path: &Path, node: Option<String>) -> anyhow::Result<ExitCode> {
    let (policy, layout) = load(policy_path, node)?;
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

/// The policy and the node's layout. The policy is read before the node's name is resolved,
/// so a policy that does not load is the error the admin sees first.
fn load(policy_path: &Path, node: Option<String>) -> anyhow::Result<(Policy, Layout)> {
    let policy = Policy::load(policy_path)?;
    let layout = Layout::new(&policy, &node_name(node)?);
    Ok((policy, layout))
}

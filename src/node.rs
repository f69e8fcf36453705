//! The node's base setup, shared by all jobs: the nft table (static, one element per slot), the
//! one `ip rule`, the external routing table, the slot cgroups, forwarding for netns jobs.
//!
//! Idempotent and cheap when nothing changed: the prolog calls [`ensure`] for every external
//! job. The nft table is reloaded (one `nft -f`) only when the planned ruleset differs from what
//! the marker file says was applied, the table is gone, the node's namespace changed, or the
//! leased slot's cgroup was recreated. Rule and routes are re-asserted over netlink every time,
//! so a link flap that flushed them is repaired by the next external job.

use crate::bpf;
use crate::cgroup;
use crate::fsutil::write_atomic;
use crate::layout::Layout;
use crate::netlink::route::{Route, RouteKind};
use crate::netlink::rule::FwmarkRule;
use crate::netlink::Netlink;
use crate::nft;
use crate::plan::{self, BaseFacts};
use extnet_policy::Policy;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node interface {iface:?} (node.interface) does not exist on node {node}; fix node.interface in the policy")]
    NoInterface { iface: String, node: String },
    #[error("node interface {iface} has no IPv4 address on node {node}; extnet translates job traffic to it")]
    NoAddress { iface: String, node: String },
    #[error("{0}")]
    Layout(String),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error("nftables: {0}")]
    Nft(#[from] nft::NftError),
    #[error("bpf: {0}")]
    Bpf(#[from] bpf::BpfError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("{0}")]
    Fs(#[from] crate::fsutil::FsError),
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the last base load applied, in `<state_dir>/base.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub version: u32,
    pub fingerprint: String,
    /// Inode of the network namespace the table was loaded into.
    pub netns: u64,
    /// cgroup id (inode) of each slot cgroup when the table was loaded, by slot.
    pub slot_ids: Vec<u64>,
    pub node_addr: Ipv4Addr,
}

/// The node's IPv4 address on `node.interface`, and the interface index.
pub fn node_addr(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
) -> Result<(u32, Ipv4Addr), NodeError> {
    let iface = &policy.node.interface;
    let idx = nl.index(iface)?.ok_or_else(|| NodeError::NoInterface {
        iface: iface.clone(),
        node: layout.node.clone(),
    })?;
    let addr = nl
        .addrs_v4(idx)?
        .first()
        .map(|(a, _)| *a)
        .ok_or_else(|| NodeError::NoAddress {
            iface: iface.clone(),
            node: layout.node.clone(),
        })?;
    Ok((idx, addr))
}

fn current_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Brings the node's base to what the policy says. `slot`: the slot about to be used, whose
/// cgroup id is checked against the loaded table. Returns whether the nft table was (re)loaded.
pub fn ensure(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr: Ipv4Addr,
    slot: Option<u32>,
) -> Result<bool, NodeError> {
    let n = &policy.node;
    // routing: one rule for all jobs, one table whose default is the gateway
    nl.rule_ensure(&FwmarkRule {
        fwmark: n.fwmark,
        mask: n.fwmark,
        table: n.route_table,
        priority: n.rule_priority,
    })?;
    nl.route_replace(&Route {
        table: n.route_table,
        dst: Ipv4Net::default(),
        kind: RouteKind::Unicast {
            gateway: Some(n.gateway),
            oif: Some(iface_index),
        },
    })?;
    for net in &n.internal {
        nl.route_replace(&Route {
            table: n.route_table,
            dst: *net,
            kind: RouteKind::Throw,
        })?;
    }
    if policy.uses_netns() {
        sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/forwarding", n.interface),
            "1",
        )?;
    }

    let facts = BaseFacts::new(policy, layout, node_addr).map_err(NodeError::Layout)?;
    let ruleset = plan::base_ruleset(policy, &facts);
    let fingerprint = plan::fingerprint(&ruleset);
    let netns = current_netns();
    let marker: Option<Marker> = std::fs::read(layout.base_marker())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let current = marker.as_ref().is_some_and(|m| {
        m.fingerprint == fingerprint
            && m.netns == netns
            && slot.is_none_or(|s| {
                m.slot_ids.get(s as usize).copied() == cgroup::id(&layout.slot_cgroup(s)).ok()
            })
    }) && nft::table_exists(plan::TABLE)?;
    if current {
        return Ok(false);
    }
    let mut slot_ids = Vec::new();
    for s in 0..policy.ports.blocks() {
        let dir = layout.slot_cgroup(s);
        cgroup::create(&dir)?;
        bpf::attach_sock_mark(&dir, plan::mark(policy, s))?;
        slot_ids.push(cgroup::id(&dir)?);
    }
    // running jobs keep what their slots' traffic counters hold across the reload
    // the reload empties the allowlist map: bind the running jobs again in the same transaction
    let (rebind, unbound) = rebind_leases(policy, layout);
    nft::apply(&(crate::accounting::carry_over(&ruleset) + &rebind))?;
    for why in unbound {
        tracing::warn!(node = %layout.node, "{why}");
    }
    let m = Marker {
        version: 1,
        fingerprint,
        netns,
        slot_ids,
        node_addr,
    };
    write_atomic(
        &layout.base_marker(),
        &serde_json::to_vec_pretty(&m).expect("marker serializes"),
        0o644,
    )?;
    tracing::info!(node = %layout.node, slots = policy.ports.blocks(), "loaded the extnet nftables table");
    Ok(true)
}

/// `add element` commands that bind the node's running jobs to their profiles' allowlists
/// (see [`crate::allowlist::rebind`]), and why some could not be bound. An unreadable lease
/// table binds none: their traffic is dropped (fail closed) and the reason logged.
fn rebind_leases(policy: &Policy, layout: &Layout) -> (String, Vec<String>) {
    match crate::lease::LeaseTable::load(&layout.lease_table(), &layout.node) {
        Ok(t) => crate::allowlist::rebind(policy, &t.leases),
        Err(e) => (
            String::new(),
            vec![format!(
                "running jobs are not bound to their destination allowlists, so their external traffic is dropped: {e}"
            )],
        ),
    }
}

/// Writes `value` to a sysctl file unless it already holds it.
pub fn sysctl(path: &str, value: &str) -> Result<(), NodeError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| NodeError::Sysctl {
        path: path.into(),
        source,
    })
}

/// Removes the node's base (the `extnet node teardown` command and the tests): nft table, rule,
/// table routes, slot cgroups, marker. Carries on past errors and returns them together.
pub fn teardown(policy: &Policy, layout: &Layout, nl: &mut Netlink) -> Vec<String> {
    let n = &policy.node;
    let mut errors = Vec::new();
    if let Err(e) = nft::delete_table(plan::TABLE) {
        errors.push(e.to_string());
    }
    if let Err(e) = nl.rule_del(&FwmarkRule {
        fwmark: n.fwmark,
        mask: n.fwmark,
        table: n.route_table,
        priority: n.rule_priority,
    }) {
        errors.push(e.to_string());
    }
    match nl.routes(n.route_table) {
        Ok(routes) => {
            for r in routes {
                if let Err(e) = nl.route_del(&r) {
                    errors.push(e.to_string());
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    for s in 0..policy.ports.blocks() {
        if let Err(e) = cgroup::remove(&layout.slot_cgroup(s)) {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = cgroup::remove(&layout.cgroup_root) {
        errors.push(e.to_string());
    }
    let _ = std::fs::remove_file(layout.base_marker());
    errors
}

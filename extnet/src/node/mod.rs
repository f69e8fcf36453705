//! The node's base setup, shared by all jobs: the nft table (static, one element per slot), the
//! the job routing (main and hold tables), the job cgroup root, forwarding for netns jobs.
//!
//! Idempotent and cheap when nothing changed: the prolog calls [`ensure`] for every external
//! job. The nft table is reloaded (one `nft -f`) only when the planned ruleset differs from what
//! the marker file says was applied, the table is gone, the node's namespace changed, or the
//! leased slot's cgroup was recreated. Rule and routes are re-asserted over netlink every time,
//! so a link flap that flushed them is repaired by the next external job, or at once by the
//! node agent ([`watch`], `extnet node watch`), which compares the base with the plan
//! ([`drift`]) whenever the kernel reports a change.

pub mod allowlist;
pub mod counters;
pub mod drift;
pub mod job_cgroups;
pub mod metrics;
pub mod watch;

use crate::kernel::netlink::rule::{FwmarkRule, SourceRule};
use crate::kernel::netlink::Netlink;
use crate::kernel::nftables::netlink::Family;
use crate::kernel::{bpf, cgroup, nftables as nft, sysctl};
use crate::plan;
use crate::plan::layout::Layout;
use crate::plan::ruleset::{self, BaseFacts};
use crate::store::fs::write_replace;
use crate::store::state::JobState;
use extnet_policy::Policy;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node interface {iface:?} (node.interface) does not exist on node {node}; fix node.interface in the policy")]
    NoInterface { iface: String, node: String },
    #[error("node interface {iface} has no IPv4 address on node {node}; extnet translates job traffic to it")]
    NoAddress { iface: String, node: String },
    #[error(transparent)]
    Layout(#[from] ruleset::CgroupRootError),
    #[error("netlink: {0}")]
    Netlink(#[from] crate::kernel::netlink::NetlinkError),
    #[error("nftables: {0}")]
    Nft(#[from] nft::NftError),
    #[error("bpf: {0}")]
    Bpf(#[from] bpf::BpfError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("{0}")]
    Fs(#[from] crate::store::fs::FsError),
    #[error("{0}")]
    Sysctl(#[from] sysctl::SysctlError),
}

/// What the last base load applied, in `<state_dir>/base.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub version: u32,
    pub fingerprint: String,
    /// Inode of the network namespace the table was loaded into.
    pub netns: u64,
    /// Ids of the per-slot cgroups of versions before job cgroups; no longer written.
    #[serde(default, skip_serializing)]
    pub slot_ids: Vec<u64>,
    pub node_addr: Ipv4Addr,
    /// Fingerprint of what the ruleset was rendered from ([`inputs_key`]): equal inputs mean
    /// an equal ruleset, so a job need not render the whole table (thousands of elements) to
    /// learn that nothing changed. Absent in markers of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// [`table_structure`] right after the load: chains and rules that differ from it were
    /// changed by someone else. Absent in records of earlier versions (then not compared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<String>,
}

impl BaseRecord {
    /// The record of the last load, `None` when there is none or it does not read (then the
    /// base counts as not loaded).
    pub fn read(layout: &Layout) -> Option<BaseRecord> {
        std::fs::read(layout.base_marker())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

/// Fingerprint of everything [`ruleset::base_ruleset`] is rendered from: this program's version,
/// the validated policy, the node's address and cgroup layout. The values are hashed as they
/// are (every policy type derives `Hash`), not formatted first: this runs in every prolog,
/// and formatting the whole policy would grow with its size.
pub fn inputs_key(
    policy: &Policy,
    layout: &Layout,
    node_addr: Ipv4Addr,
    node_addr6: Option<Ipv6Addr>,
) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = plan::Fnv::default();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    policy.hash(&mut h);
    node_addr.hash(&mut h);
    node_addr6.hash(&mut h);
    layout.node.hash(&mut h);
    layout.cgroup_root.hash(&mut h);
    layout.job_cgroup_levels().hash(&mut h);
    format!("{:016x}", h.finish())
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

/// The node's IPv6 address on `node.interface` that jobs' IPv6 is translated to: its first
/// global or unique local address (not link-local, not tentative). Read only when the policy
/// has `node.gateway6` (`None` otherwise, at no cost); `None` with a warning when the
/// interface has none: jobs' IPv6 then stays dropped.
pub fn node_addr6(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
) -> Result<Option<Ipv6Addr>, NodeError> {
    if policy.node.gateway6.is_none() || !sysctl::ipv6_available() {
        return Ok(None);
    }
    let addr = nl.addrs_v6_global(iface_index)?.first().copied();
    if addr.is_none() {
        tracing::warn!(
            iface = %policy.node.interface,
            "node.gateway6 is set but the interface has no global or unique local IPv6 address: jobs' IPv6 is dropped; give the interface its cluster IPv6 address"
        );
    }
    Ok(addr)
}

/// A hash of the chains and rules of extnet's `inet` table as the kernel has them now (not
/// its elements or counter values: see
/// [`crate::kernel::nftables::netlink::NfSocket::hash_structure`]), and of the `ip` and `ip6`
/// tables of earlier versions, which must stay absent. A missing table hashes too.
pub fn table_structure() -> Result<String, NodeError> {
    use std::hash::{Hash, Hasher};
    let mut h = plan::Fnv::default();
    for family in [Family::Inet, Family::Ip, Family::Ip6] {
        family.to_string().hash(&mut h);
        nft::hash_structure_in(family, plan::TABLE, &mut h)?.hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// The inode of the calling thread's network namespace.
pub(crate) fn current_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Brings the node's base to what the policy says. Returns whether the nft table was
/// (re)loaded.
pub fn ensure(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr: Ipv4Addr,
) -> Result<bool, NodeError> {
    let node_addr6 = node_addr6(policy, nl, iface_index)?;
    ensure_with(policy, layout, nl, iface_index, node_addr, node_addr6)
}

/// [`ensure`] with the node's IPv6 address already read ([`node_addr6`]).
pub fn ensure_with(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr: Ipv4Addr,
    node_addr6: Option<Ipv6Addr>,
) -> Result<bool, NodeError> {
    let n = &policy.node;
    ensure_routing_with(policy, nl, iface_index, node_addr6)?;
    if policy.uses_netns() {
        sysctl::enable_forwarding(&n.interface)?;
    }

    let netns = current_netns();
    let marker = BaseRecord::read(layout);
    // the loaded table is in this namespace
    let in_place = |m: &BaseRecord| m.netns == netns;
    let inputs = inputs_key(policy, layout, node_addr, node_addr6);
    // fast path (every job while nothing changed): same inputs, so the same ruleset
    if let Some(m) = &marker {
        if m.inputs.as_deref() == Some(inputs.as_str())
            && in_place(m)
            && nft::table_exists(plan::TABLE)?
        {
            return Ok(false);
        }
    }
    let facts = BaseFacts::new(layout, node_addr, node_addr6)?;
    let ruleset = ruleset::base_ruleset(policy, &facts);
    let fingerprint = plan::fingerprint(&ruleset);
    if let Some(m) = &marker {
        if m.fingerprint == fingerprint && in_place(m) && nft::table_exists(plan::TABLE)? {
            // inputs changed without changing the ruleset (a new profile member, a comment):
            // remember them so the next job takes the fast path
            let m = BaseRecord {
                inputs: Some(inputs),
                ..m.clone()
            };
            write_replace(
                &layout.base_marker(),
                &serde_json::to_vec_pretty(&m).expect("marker serializes"),
                0o644,
            )?;
            return Ok(false);
        }
    }
    load(
        policy,
        layout,
        node_addr,
        &ruleset,
        fingerprint,
        netns,
        inputs,
    )?;
    Ok(true)
}

/// Loads the base's nft tables even when its record says they are current, after
/// re-asserting the routing as [`ensure`] does: the repair of drift the record cannot show
/// (the `ip6` table deleted alone). Equals [`ensure`] of a node without a record.
pub fn reload(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr: Ipv4Addr,
) -> Result<(), NodeError> {
    let node_addr6 = node_addr6(policy, nl, iface_index)?;
    ensure_routing_with(policy, nl, iface_index, node_addr6)?;
    if policy.uses_netns() {
        sysctl::enable_forwarding(&policy.node.interface)?;
    }
    let facts = BaseFacts::new(layout, node_addr, node_addr6)?;
    let ruleset = ruleset::base_ruleset(policy, &facts);
    let fingerprint = plan::fingerprint(&ruleset);
    let inputs = inputs_key(policy, layout, node_addr, node_addr6);
    load(
        policy,
        layout,
        node_addr,
        &ruleset,
        fingerprint,
        current_netns(),
        inputs,
    )
}

/// Makes the job cgroup root, loads `ruleset` (the running jobs' counters carried over and
/// their allowlist and job cgroup elements added in the same transaction), and writes the
/// base record.
fn load(
    policy: &Policy,
    layout: &Layout,
    node_addr: Ipv4Addr,
    ruleset: &str,
    fingerprint: String,
    netns: u64,
    inputs: String,
) -> Result<(), NodeError> {
    // where the prolog makes job cgroups
    cgroup::create(&layout.cgroup_root)?;
    // running jobs keep what their slots' traffic counters hold across the reload
    // the reload empties the allowlist and job cgroup maps: bind the running jobs again in
    // the same transaction
    let (rebind, unbound) = rebind_leases(policy, layout);
    nft::apply(&(counters::carry_over(ruleset) + &rebind))?;
    for why in unbound {
        tracing::warn!(node = %layout.node, "{why}");
    }
    // under the node lock, right after the load: what is there now is what was loaded
    let structure = table_structure()?;
    let m = BaseRecord {
        version: 1,
        fingerprint,
        netns,
        slot_ids: Vec::new(),
        node_addr,
        inputs: Some(inputs),
        structure: Some(structure),
    };
    write_replace(
        &layout.base_marker(),
        &serde_json::to_vec_pretty(&m).expect("marker serializes"),
        0o644,
    )?;
    tracing::info!(node = %layout.node, slots = policy.slots(), "loaded the extnet nftables table");
    Ok(())
}

/// `add element` commands that bind the node's running jobs to their profiles' allowlists
/// (see [`allowlist::rebind`]), and why some could not be bound. An unreadable lease
/// table binds none: their traffic is dropped (fail closed) and the reason logged.
fn rebind_leases(policy: &Policy, layout: &Layout) -> (String, Vec<String>) {
    match crate::store::lease::LeaseTable::load(&layout.lease_table(), &layout.node) {
        Ok(t) => {
            let (mut cmds, mut unbound) = allowlist::rebind(policy, &t.leases);
            let (more, why) = rebind_job_cgroups(policy, layout, &t.leases);
            cmds.push_str(&more);
            unbound.extend(why);
            (cmds, unbound)
        }
        Err(e) => (
            String::new(),
            vec![format!(
                "running jobs are not bound to their destination allowlists, so their external traffic is dropped: {e}"
            )],
        ),
    }
}

/// Removes the node's base (the `extnet node teardown` command and the tests): nft tables,
/// rules, table routes, the hold link, job cgroups left, marker. Carries on past errors and
/// returns them together.
pub fn teardown(policy: &Policy, layout: &Layout, nl: &mut Netlink) -> Vec<String> {
    let n = &policy.node;
    let mut errors = Vec::new();
    if let Err(e) = nft::delete_table(plan::TABLE) {
        errors.push(e.to_string());
    }
    // the tables of earlier versions: created if missing and deleted in one transaction
    // (absent is fine)
    if let Err(e) = nft::apply(&format!(
        "table ip {t}\ndelete table ip {t}\ntable ip6 {t}\ndelete table ip6 {t}\n",
        t = plan::TABLE
    )) {
        errors.push(e.to_string());
    }
    for rule in [plan::main_rule(policy), plan::hold_rule(policy)] {
        if let Err(e) = nl.rule_del(&rule) {
            errors.push(e.to_string());
        }
    }
    match netns_hold_rules_now(nl) {
        Ok(have) => {
            for r in have.iter().filter(|r| is_netns_hold_rule(policy, r)) {
                if let Err(e) = nl.source_rule_del(r) {
                    errors.push(e.to_string());
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if sysctl::ipv6_available() {
        for rule in [plan::main_rule(policy), plan::hold_rule(policy)] {
            if let Err(e) = nl.rule6_del(&rule) {
                errors.push(e.to_string());
            }
        }
        for table in [n.route_table, n.hold_table] {
            for r in nl.routes6(table).unwrap_or_default() {
                if let Err(e) = nl.route6_del(&r) {
                    errors.push(e.to_string());
                }
            }
        }
        if let Err(e) = nl.route6_del_default(n.hold_table) {
            errors.push(e.to_string());
        }
    }
    for table in [n.route_table, n.hold_table] {
        errors.extend(flush_table(nl, table));
    }
    if let Err(e) = nl.delete(plan::HOLD_LINK) {
        errors.push(e.to_string());
    }
    errors.extend(teardown_pool_routing(policy, nl));
    // the per-slot cgroups of earlier versions, and job cgroups their epilog left (the
    // caller made sure no job holds a lease)
    for s in 0..policy.slots() {
        if let Err(e) = cgroup::remove(&layout.legacy_slot_cgroup(s)) {
            errors.push(e.to_string());
        }
    }
    if let Ok(dir) = std::fs::read_dir(&layout.cgroup_root) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("job_") {
                if let Err(e) = cgroup::remove(&e.path()) {
                    errors.push(e.to_string());
                }
            }
        }
    }
    if let Err(e) = cgroup::remove(&layout.cgroup_root) {
        errors.push(e.to_string());
    }
    let _ = std::fs::remove_file(layout.base_marker());
    errors
}

/// The node's policy routing for jobs, re-asserted over netlink on every call (a link flap
/// that flushed routes is repaired by the next job): checked job packets
/// (`fwmark | checked_fwmark`) to the gateway's table, unchecked ones (a socket's own mark,
/// which extnet's nft chain did not confirm: its table is gone, or the socket belongs to no
/// running job) to the hold table, whose default route is the dummy link `extnet0`, so they
/// go nowhere; and the pools' own tables. Equals `ip rule add fwmark F|C/F|C lookup T
/// priority P`, `ip rule add fwmark F/F lookup H priority P+1`, `ip link add extnet0 type
/// veth peer name extnet0p` (see [`plan::HOLD_LINK`]), `ip route replace default via GW dev
/// IFACE table T`, `ip route replace default dev extnet0 table H`, a `throw` per internal
/// network in both, and [`ensure_pool_routing`].
pub fn ensure_routing(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
) -> Result<(), NodeError> {
    let node_addr6 = node_addr6(policy, nl, iface_index)?;
    ensure_routing_with(policy, nl, iface_index, node_addr6)
}

/// [`ensure_routing`] with the node's IPv6 address already read ([`node_addr6`]).
pub fn ensure_routing_with(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr6: Option<Ipv6Addr>,
) -> Result<(), NodeError> {
    // routing: checked job packets to the gateway's table, unchecked ones to the hold table,
    // whose default route is a link that drops them; one rule each for all jobs. One rule
    // dump serves the main, hold and pool rules.
    let have = nl.rules_v4()?;
    ensure_main_and_hold_rules(policy, nl, &have)?;
    for r in plan::main_routes(policy, iface_index) {
        nl.route_replace(&r)?;
    }
    let ipv6 = policy.node.gateway6.is_some() && node_addr6.is_some();
    let hold_link = hold_link(nl, ipv6)?;
    for r in plan::hold_routes(policy, hold_link) {
        nl.route_replace(&r)?;
    }
    ensure_ipv6_routing(policy, nl, iface_index, hold_link, ipv6)?;
    ensure_netns_hold_rules(policy, nl)?;
    // pools with a gateway of their own: their rules and tables (and none left from an
    // earlier policy)
    pool_routing(policy, nl, iface_index, &have)
}

/// Puts the netns hold rules in place ([`plan::netns_hold_rules`]) and deletes extnet's
/// other source rules at their priority (of an earlier policy, or with netns mode gone).
/// Equals `ip rule add from NETNS_SUBNET lookup hold_table priority P+2` (and `ip -6 rule`
/// of `netns_subnet6`), after `ip rule del` of the stale ones.
fn ensure_netns_hold_rules(policy: &Policy, nl: &mut Netlink) -> Result<(), NodeError> {
    let want = plan::netns_hold_rules(policy, sysctl::ipv6_available());
    for have in netns_hold_rules_now(nl)? {
        if is_netns_hold_rule(policy, &have) && !want.contains(&have) {
            nl.source_rule_del(&have)?;
            tracing::info!(rule = %have, "removed a netns hold rule of an earlier extnet or policy");
        }
    }
    for r in &want {
        nl.source_rule_ensure(r)?;
    }
    Ok(())
}

/// The node's `from PREFIX lookup TABLE` rules of both families (IPv6 only on a kernel with
/// it).
pub(crate) fn netns_hold_rules_now(nl: &mut Netlink) -> Result<Vec<SourceRule>, NodeError> {
    let mut have = nl.source_rules(false)?;
    if sysctl::ipv6_available() {
        have.extend(nl.source_rules(true)?);
    }
    Ok(have)
}

/// Whether `rule` is a netns hold rule of extnet's (this policy's or an earlier one's): a
/// source rule at `rule_priority + 2` that looks up the hold table.
pub(crate) fn is_netns_hold_rule(policy: &Policy, rule: &SourceRule) -> bool {
    let n = &policy.node;
    rule.priority == n.rule_priority.saturating_add(2) && rule.table == n.hold_table
}

/// The IPv6 side of the routing. Without IPv6 out (`ipv6` false: no `node.gateway6`, or no
/// IPv6 address on `node.interface`), fail closed by construction: every IPv6 packet with a
/// job's flag, checked or not, is routed by the hold table's IPv6 side, whose default is
/// `unreachable` (the job's `connect` fails at once with `EHOSTUNREACH`), but for
/// `node.internal6`, thrown back to the main table. With IPv6 out, as for IPv4
/// ([`plan::routes6`]): checked packets (`fwmark | checked_fwmark`) to `route_table`,
/// `default via gateway6`; unchecked ones to the hold table, `default dev extnet0`, a link
/// that drops them, so a job's `connect` succeeds and its packets wait for extnet's chain.
/// Local destinations (the node's own addresses, `::1`) are routed by the `local` table
/// before any fwmark rule. Stale rules of an earlier policy at the same priorities go, as for
/// IPv4. Nothing on a kernel without IPv6. Equals `ip -6 rule add fwmark F|C/F|C lookup T
/// priority P` (with IPv6 out), `ip -6 rule add fwmark F/F lookup H priority P+1`, and `ip -6
/// route replace` of each route.
pub fn ensure_ipv6_routing(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
    hold_link: u32,
    ipv6: bool,
) -> Result<(), NodeError> {
    if !sysctl::ipv6_available() {
        return Ok(());
    }
    let want = plan::rules6(policy, ipv6);
    let pools = plan::pool_rules6(policy, ipv6);
    let have = nl.rules_v6()?;
    // the tables whose IPv6 routes are extnet's: the main and hold table, every pool table
    // planned for IPv4 (their IPv6 side goes when IPv6 out goes), and those of stale rules
    let n = &policy.node;
    let mut tables = vec![n.route_table, n.hold_table];
    tables.extend(plan::pool_rules(policy).iter().map(|r| r.table));
    for stale in have.iter().filter(|r| {
        (is_main_or_hold_rule(policy, r) && !want.contains(r))
            || (is_pool_rule(policy, r) && !pools.contains(r))
    }) {
        nl.rule6_del(stale)?;
        tracing::info!(rule = %stale, "removed an IPv6 rule of an earlier extnet or policy");
        tables.push(stale.table);
    }
    for r in want.iter().chain(&pools) {
        if !have.contains(r) {
            nl.rule6_ensure(r)?;
        }
    }
    let mut routes = plan::routes6(policy, iface_index, hold_link, ipv6);
    routes.extend(plan::pool_routes6(policy, iface_index, ipv6));
    // the wanted routes first (a replace of the same table and destination changes the
    // route in place, so there is no moment without a default), then the stale ones go
    if !ipv6 {
        nl.route6_unreachable_default(n.hold_table)?;
    }
    for r in &routes {
        nl.route6_replace(r)?;
    }
    tables.sort_unstable();
    tables.dedup();
    for table in tables {
        for stale in nl.routes6(table)?.iter().filter(|a| !routes.contains(a)) {
            nl.route6_del(stale)?;
        }
    }
    Ok(())
}

/// The hold table's link ([`plan::HOLD_LINK`]): made if missing, up, its peer down and not
/// forwarding (so a packet that reached the peer would be dropped too), no IPv6 on the
/// peer, and IPv6 on the link itself only with `ipv6` (jobs' IPv6 goes out: the hold table's
/// IPv6 default route needs a link with IPv6). Returns its index.
fn hold_link(nl: &mut Netlink, ipv6: bool) -> Result<u32, NodeError> {
    let index = nl.veth_pair_ensure(plan::HOLD_LINK, plan::HOLD_PEER)?;
    sysctl::disable_ipv6(plan::HOLD_PEER)?;
    if ipv6 {
        sysctl::set(
            &format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", plan::HOLD_LINK),
            "0",
        )?;
    } else {
        sysctl::disable_ipv6(plan::HOLD_LINK)?;
    }
    sysctl::set(
        &format!("/proc/sys/net/ipv4/conf/{}/forwarding", plan::HOLD_PEER),
        "0",
    )?;
    nl.set_up(index)?;
    Ok(index)
}

/// Puts the main and the hold rule in place ([`plan::main_rule`], [`plan::hold_rule`]) and
/// deletes any other rule of extnet's at their priorities: one from an earlier version or
/// policy that would send a packet extnet did not check to a gateway. Equals `ip rule add` of
/// each, after `ip rule del` of the stale ones.
fn ensure_main_and_hold_rules(
    policy: &Policy,
    nl: &mut Netlink,
    have: &[FwmarkRule],
) -> Result<(), NodeError> {
    let planned = [plan::main_rule(policy), plan::hold_rule(policy)];
    for stale in have
        .iter()
        .filter(|r| is_main_or_hold_rule(policy, r) && !planned.contains(r))
    {
        nl.rule_del(stale)?;
        tracing::info!(rule = %stale, "removed a rule of an earlier extnet or policy");
    }
    for rule in planned.iter().filter(|r| !have.contains(r)) {
        nl.rule_ensure(rule)?;
    }
    Ok(())
}

/// `add element` commands that put the running cgroup-mode jobs' cgroups back into the job
/// cgroup map (a reload empties it), and why some could not be: a job whose cgroup is gone
/// has nothing left to send with.
fn rebind_job_cgroups(
    policy: &Policy,
    layout: &Layout,
    leases: &[crate::store::lease::Lease],
) -> (String, Vec<String>) {
    let mut elems = Vec::new();
    let mut why = Vec::new();
    for l in leases
        .iter()
        .filter(|l| l.mode == extnet_policy::Mode::Cgroup)
    {
        let mark = plan::mark(policy, l.slot);
        // Slurm's job cgroup (cgroup/v2), when a step of the job bound it: the same directory
        // still (its id as recorded), or nothing
        if let Ok(Some(state)) = JobState::load(&layout.job_state(l.job_id), l.job_id) {
            if let Some(b) = state.grant().and_then(|g| g.slurm_cgroup.as_ref()) {
                if cgroup::id(&b.path).is_ok_and(|id| id == b.id) {
                    match ruleset::cgroup_element(layout, &b.path, mark) {
                        Ok(e) => elems.push(e),
                        Err(e) => why.push(format!("job {}: {e}", l.job_id)),
                    }
                }
            }
        }
        if !layout.job_cgroup(l.job_id).is_dir() {
            continue;
        }
        match ruleset::job_cgroup_element(layout, l.job_id, mark) {
            Ok(e) => elems.push(e),
            Err(e) => why.push(format!("job {}: {e}", l.job_id)),
        }
    }
    let cmds = if elems.is_empty() {
        String::new()
    } else {
        format!(
            "add element inet {} {} {{ {} }}\n",
            plan::TABLE,
            ruleset::JOB_CGROUP_MAP,
            elems.join(", ")
        )
    };
    (cmds, why)
}

/// Whether `rule` is at the main or the hold rule's priority with the flag bits of
/// `node.fwmark` in its mark and mask: extnet's, of this policy or an earlier one or version.
pub(crate) fn is_main_or_hold_rule(policy: &Policy, rule: &FwmarkRule) -> bool {
    let n = &policy.node;
    (rule.priority == n.rule_priority || rule.priority == n.rule_priority.saturating_add(1))
        && rule.fwmark & n.fwmark == n.fwmark
        && rule.mask & n.fwmark == n.fwmark
}

/// Deletes every route of `table` (`ip route flush table T`); carries on past errors and
/// returns them.
fn flush_table(nl: &mut Netlink, table: u32) -> Vec<String> {
    let mut errors = Vec::new();
    match nl.routes(table) {
        Ok(routes) => {
            for r in routes {
                if let Err(e) = nl.route_del(&r) {
                    errors.push(e.to_string());
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    errors
}

/// Whether `rule` is a pool rule of extnet (made by [`ensure_pool_routing`] for this policy or
/// an earlier one): at the priority just before the main rule, with the flag bits of
/// `node.fwmark` in its mark and mask, and not the main rule itself.
pub(crate) fn is_pool_rule(policy: &Policy, rule: &FwmarkRule) -> bool {
    let n = &policy.node;
    rule.priority == n.rule_priority.saturating_sub(1)
        && rule.fwmark & n.fwmark == n.fwmark
        && rule.mask & n.fwmark == n.fwmark
        && !(rule.fwmark == n.fwmark && rule.mask == n.fwmark && rule.table == n.route_table)
}

/// Routing of the pools whose gateway is not `node.gateway` ([`plan::pool_rules`],
/// [`plan::pool_routes`]). Per such pool, equals `ip rule add fwmark FLAG|V/FLAG|M lookup T
/// priority P-1` for each prefix of its slots, `ip route replace default via GW dev IFACE
/// table T` and `ip route replace throw NET table T` for each internal network.
///
/// Re-asserted on every call, like the main rule (a link flap that flushed the routes is
/// repaired by the next job), and reconciled: a pool rule the policy no longer plans is
/// deleted, with the routes of its table when no planned rule uses that table, and so is a
/// route of a pool table that is not planned. A changed pool layout therefore never leaves
/// a rule that sends another pool's slots to the wrong gateway. Costs one rule dump and one
/// route dump per routed pool when nothing changed.
pub fn ensure_pool_routing(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
) -> Result<(), NodeError> {
    let have = nl.rules_v4()?;
    pool_routing(policy, nl, iface_index, &have)
}

/// [`ensure_pool_routing`] with the node's rules as `have` (one dump serves
/// [`ensure_routing`]'s main, hold and pool rules: they live at different priorities).
fn pool_routing(
    policy: &Policy,
    nl: &mut Netlink,
    iface_index: u32,
    have: &[FwmarkRule],
) -> Result<(), NodeError> {
    let planned = plan::pool_rules(policy);
    let routes = plan::pool_routes(policy, iface_index);
    for stale in have
        .iter()
        .filter(|r| is_pool_rule(policy, r) && !planned.contains(r))
    {
        nl.rule_del(stale)?;
        tracing::info!(rule = %stale, "removed a pool rule the policy no longer has");
        let table_used = planned.iter().any(|r| r.table == stale.table)
            || stale.table == policy.node.route_table;
        if !table_used {
            for r in nl.routes(stale.table)? {
                nl.route_del(&r)?;
            }
        }
    }
    for rule in planned.iter().filter(|r| !have.contains(r)) {
        nl.rule_ensure(rule)?;
    }
    let mut tables: Vec<u32> = routes.iter().map(|r| r.table).collect();
    tables.dedup();
    for table in tables {
        for actual in nl.routes(table)? {
            if !routes.iter().any(|r| r.matches(&actual)) {
                nl.route_del(&actual)?;
            }
        }
    }
    for r in &routes {
        nl.route_replace(r)?;
    }
    Ok(())
}

/// Removes the pools' rules (planned ones and any left from an earlier policy) and the routes
/// of their tables. Carries on past errors and returns them.
pub fn teardown_pool_routing(policy: &Policy, nl: &mut Netlink) -> Vec<String> {
    let mut errors = Vec::new();
    let mut tables: Vec<u32> = plan::pool_rules(policy).iter().map(|r| r.table).collect();
    match nl.rules_v4() {
        Ok(have) => {
            for r in have.iter().filter(|r| is_pool_rule(policy, r)) {
                if let Err(e) = nl.rule_del(r) {
                    errors.push(e.to_string());
                }
                tables.push(r.table);
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    let ipv6 = sysctl::ipv6_available();
    if ipv6 {
        match nl.rules_v6() {
            Ok(have) => {
                for r in have.iter().filter(|r| is_pool_rule(policy, r)) {
                    if let Err(e) = nl.rule6_del(r) {
                        errors.push(e.to_string());
                    }
                    tables.push(r.table);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    tables.sort_unstable();
    tables.dedup();
    for table in tables.into_iter().filter(|&t| t != policy.node.route_table) {
        errors.extend(flush_table(nl, table));
        if ipv6 {
            for r in nl.routes6(table).unwrap_or_default() {
                if let Err(e) = nl.route6_del(&r) {
                    errors.push(e.to_string());
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test cluster's policy, with `edit` applied to its text.
    fn policy(edit: impl Fn(String) -> String) -> Policy {
        let text =
            include_str!("../../../slurm-test-env/extnet-test.toml").replace("@XN_DIR@", "/x");
        Policy::from_toml(&edit(text), "t").unwrap()
    }

    /// The key stays for equal inputs and moves with the policy, the node and its address.
    #[test]
    fn inputs_key_follows_policy_node_and_address() {
        let same = |t: String| t;
        let addr = Ipv4Addr::new(10, 99, 0, 11);
        let p = policy(same);
        let l = Layout::new(&p, "n1");
        let k = inputs_key(&p, &l, addr, None);
        assert_eq!(k.len(), 16);
        assert_eq!(
            k,
            inputs_key(&policy(same), &Layout::new(&p, "n1"), addr, None)
        );
        // a comment changes no value: same key
        assert_eq!(
            k,
            inputs_key(&policy(|t| t + "\n# a comment\n"), &l, addr, None)
        );
        let other = [
            inputs_key(&p, &l, Ipv4Addr::new(10, 99, 0, 12), None),
            inputs_key(&p, &l, addr, Some("fd00:78e7::11".parse().unwrap())),
            inputs_key(&p, &Layout::new(&p, "n2"), addr, None),
            inputs_key(
                &policy(|t| t.replace("mode = \"cgroup\"", "mode = \"netns\"")),
                &l,
                addr,
                None,
            ),
            inputs_key(
                &policy(|t| t.replace("quarantine_secs = 2", "quarantine_secs = 3")),
                &l,
                addr,
                None,
            ),
            inputs_key(
                &policy(|t| t + "\n[[profile]]\nname = \"second\"\nusers = [\"bob\"]\n"),
                &l,
                addr,
                None,
            ),
        ];
        for (i, o) in other.iter().enumerate() {
            assert_ne!(&k, o, "change {i} kept the key");
        }
    }
}

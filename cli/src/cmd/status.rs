//! `extnet status`: the node's active external jobs with their traffic, its port pools, and
//! what the destination allowlists dropped.

use crate::output::{self, human_bytes, Column};
use extnet::plan::layout::Layout;
use extnet::store::lease::{self, LeaseTable};
use extnet_policy::Policy;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

/// The table of active jobs: their traffic of both IP families, then its IPv6 part.
const JOBS: [Column; 14] = [
    Column::right("JOB", 8),
    Column::left("USER", 12).apart(),
    Column::left("MODE", 7),
    Column::right("SLOT", 5),
    Column::right("MARK", 9),
    Column::left("PORTS", 13).apart(),
    Column::left("PROFILE", 12),
    Column::left("SINCE", 20),
    Column::right("OUT", 10).apart(),
    Column::right("IN", 10),
    Column::right("CONNS", 6),
    Column::right("OUT6", 10).apart(),
    Column::right("IN6", 10),
    Column::right("CONNS6", 6),
];

/// The node's addresses on `node.interface`: IPv4, and the IPv6 one jobs' IPv6 is translated
/// to (`None`: no `node.gateway6`, or no address to translate to). `Err`: not readable.
fn node_addresses(
    policy: &Policy,
    layout: &Layout,
) -> Result<(Ipv4Addr, Option<Ipv6Addr>), String> {
    let mut nl = extnet::kernel::netlink::Netlink::open().map_err(|e| e.to_string())?;
    let (idx, a) = extnet::node::node_addr(policy, layout, &mut nl).map_err(|e| e.to_string())?;
    let a6 = extnet::node::node_addr6(policy, &mut nl, idx).map_err(|e| e.to_string())?;
    Ok((a, a6))
}

/// What `extnet status` says of jobs' IPv6 on the node: where it leaves, or why it does not.
fn ipv6_line(policy: &Policy, addresses: &Result<(Ipv4Addr, Option<Ipv6Addr>), String>) -> String {
    match (policy.node.gateway6, addresses) {
        (None, _) => "jobs' IPv6: dropped (no node.gateway6)".to_owned(),
        (Some(g), Ok((_, Some(a6)))) => format!(
            "jobs' IPv6: translated to {a6} (the job's port block), via node.gateway6 {g}, for cgroup-mode jobs of profiles with IPv6"
        ),
        (Some(_), Ok((_, None))) => format!(
            "jobs' IPv6: dropped ({} has no global or unique local IPv6 address to translate to)",
            policy.node.interface
        ),
        (Some(_), Err(e)) => format!("jobs' IPv6: the node's IPv6 address is unreadable: {e}"),
    }
}

/// `extnet status [--json]` for `node`.
pub fn show(policy_path: &Path, node: &str, json: bool) -> anyhow::Result<ExitCode> {
    let policy = Policy::load_for_node(policy_path, node)?;
    let layout = Layout::new(&policy, node);
    let table = LeaseTable::load(&layout.lease_table(), node)?;
    let now = lease::now();
    let quarantined = table.quarantine.iter().filter(|q| q.until > now).count();
    let total = policy.slots() as usize;
    let pools = pool_usage(&policy, &table, now);
    // counters of the active slots only (never a listing of the table or a cgroup map)
    let slots: Vec<u32> = table.leases.iter().map(|l| l.slot).collect();
    let counters = extnet::node::counters::read(&slots).map_err(|e| e.to_string());
    let of = |slot: u32| counters.as_ref().ok().and_then(|m| m.get(&slot));
    let addresses = node_addresses(&policy, &layout);
    if json {
        let jobs: Vec<serde_json::Value> = table
            .leases
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l).expect("lease serializes");
                v["counters"] = serde_json::to_value(of(l.slot)).expect("counters serialize");
                v
            })
            .collect();
        let mut v = serde_json::json!({
            "node": node,
            // all pools together (every slot of the node)
            "pool": { "blocks": total, "used": table.leases.len(), "quarantined": quarantined,
                      "free": total.saturating_sub(table.leases.len() + quarantined) },
            "pools": pools.iter().map(|u| serde_json::json!({
                "name": u.pool.name(),
                "range": format!("{}-{}", u.pool.ports.first, u.pool.ports.last),
                "block_size": u.pool.ports.block_size,
                "slots": format!("{}-{}", u.pool.slots().start, u.pool.slots().end - 1),
                "gateway": u.pool.gateway.to_string(),
                "route_table": u.pool.route_table,
                "profiles": u.profiles,
                "blocks": u.blocks, "used": u.used, "quarantined": u.quarantined, "free": u.free(),
            })).collect::<Vec<_>>(),
            "jobs": jobs,
        });
        if let Err(e) = &counters {
            v["counters_error"] = e.clone().into();
        }
        match &addresses {
            Ok((a, a6)) => {
                v["node_addr"] = a.to_string().into();
                // what jobs' IPv6 is translated to (null: it is dropped)
                v["node_addr6"] = serde_json::to_value(a6).expect("address serializes");
            }
            Err(e) => v["node_addr_error"] = e.clone().into(),
        }
        v["warnings"] = extnet::job::netns::ipv6_forwarding_warning(&policy)
            .into_iter()
            .collect::<Vec<_>>()
            .into();
        let (pinned, unreadable) = extnet::store::pinned::list(&layout);
        v["pinned_namespaces"] = serde_json::to_value(&pinned).expect("records serialize");
        if !unreadable.is_empty() {
            v["pinned_unreadable"] = unreadable.into();
        }
        v["allowlist_drops"] = match allowlist_drops() {
            Ok(d) => d
                .into_iter()
                .map(|(name, packets, bytes)| serde_json::json!({ "counter": name, "packets": packets, "bytes": bytes }))
                .collect(),
            Err(e) => serde_json::json!({ "error": e }),
        };
        output::print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "node {node}: {} external jobs; blocks {} used, {} in quarantine, {} free of {total}",
        table.leases.len(),
        table.leases.len(),
        quarantined,
        total.saturating_sub(table.leases.len() + quarantined)
    );
    if let Ok((a, _)) = &addresses {
        println!("  address {a}");
    }
    if policy.node.gateway6.is_some() || table.leases.iter().any(|l| l.node_addr6.is_some()) {
        println!("  {}", ipv6_line(&policy, &addresses));
    }
    for u in &pools {
        println!(
            "  pool {}: ports {}-{} in blocks of {}, gateway {}: {} used, {} in quarantine, {} free of {} (profiles: {})",
            u.pool.name(),
            u.pool.ports.first,
            u.pool.ports.last,
            u.pool.ports.block_size,
            u.pool.gateway,
            u.used,
            u.quarantined,
            u.free(),
            u.blocks,
            if u.profiles.is_empty() {
                "none".to_owned()
            } else {
                u.profiles.join(", ")
            }
        );
    }
    let stray: Vec<String> = table
        .leases
        .iter()
        .filter(|l| policy.slot_block(l.slot) != Some((l.port_first, l.port_last)))
        .map(|l| {
            format!(
                "job {} (slot {}, ports {}-{})",
                l.job_id, l.slot, l.port_first, l.port_last
            )
        })
        .collect();
    if let Some(w) = extnet::job::netns::ipv6_forwarding_warning(&policy) {
        println!("warning: {w}");
    }
    if !stray.is_empty() {
        println!(
            "warning: leases that no longer match the policy's pools (the pools changed while they ran; their traffic now uses the slot's new block and gateway): {}",
            stray.join(", ")
        );
    }
    if !table.leases.is_empty() {
        println!("{}", output::header(&JOBS));
        for l in &table.leases {
            let [out, inn, conns, out6, in6, conns6] = match of(l.slot) {
                Some(c) => [
                    human_bytes(c.bytes_out),
                    human_bytes(c.bytes_in),
                    c.connections.to_string(),
                    human_bytes(c.bytes_out6),
                    human_bytes(c.bytes_in6),
                    c.connections6.to_string(),
                ],
                None => ["?", "?", "?", "?", "?", "?"].map(String::from),
            };
            println!(
                "{}",
                output::row(
                    &JOBS,
                    [
                        &l.job_id,
                        &l.user,
                        &l.mode,
                        &l.slot,
                        &format!("0x{:x}", l.mark),
                        &format!("{}-{}", l.port_first, l.port_last),
                        &l.profile,
                        &lease::rfc3339(l.since),
                        &out,
                        &inn,
                        &conns,
                        &out6,
                        &in6,
                        &conns6,
                    ]
                )
            );
        }
        let v6: Vec<String> = table
            .leases
            .iter()
            .filter_map(|l| l.node_addr6.map(|a| format!("job {} as {a}", l.job_id)))
            .collect();
        if !v6.is_empty() {
            println!("IPv6 translated (ports as above): {}", v6.join(", "));
        }
        if let Err(e) = &counters {
            println!("traffic counters unavailable: {e}");
        }
    }
    print_pinned(&layout);
    print_allowlist_drops(&policy);
    Ok(ExitCode::SUCCESS)
}

/// The namespaces of ended netns-mode jobs that something still held after their teardown
/// ([`extnet::store::pinned`]), as their records say (`extnet reconcile` looks again).
fn print_pinned(layout: &Layout) {
    let (pinned, unreadable) = extnet::store::pinned::list(layout);
    if pinned.is_empty() && unreadable.is_empty() {
        return;
    }
    println!("pinned namespaces of ended jobs (veth pair deleted, only lo left; extnet reconcile drops a record once its namespace is gone):");
    for p in &pinned {
        println!(
            "  job {}: net:[{}] since {}, held by {}",
            p.job_id,
            p.inode,
            lease::rfc3339(p.since),
            p.holders_line()
        );
    }
    for u in &unreadable {
        println!("  unreadable record {u}");
    }
}

/// One pool's use on a node.
struct PoolUsage<'a> {
    pool: &'a extnet_policy::Pool,
    profiles: Vec<&'a str>,
    blocks: usize,
    used: usize,
    quarantined: usize,
}

impl PoolUsage<'_> {
    fn free(&self) -> usize {
        self.blocks.saturating_sub(self.used + self.quarantined)
    }
}

/// Each pool's blocks in use (leases on its slots) and in quarantine (by ports) at `now`.
fn pool_usage<'a>(policy: &'a Policy, table: &LeaseTable, now: u64) -> Vec<PoolUsage<'a>> {
    let blocks = extnet::node::metrics::pool_blocks(policy, table, now);
    policy
        .pools
        .iter()
        .zip(blocks)
        .enumerate()
        .map(|(i, (pool, b))| PoolUsage {
            pool,
            profiles: policy.profiles_of_pool(i),
            blocks: b.total as usize,
            used: b.used as usize,
            quarantined: b.quarantined as usize,
        })
        .collect()
}

/// The allowlists' drop counters of this node's nft table.
fn allowlist_drops() -> Result<Vec<(String, u64, u64)>, String> {
    if !extnet::kernel::nftables::table_exists(extnet::plan::TABLE).map_err(|e| e.to_string())? {
        return Ok(Vec::new());
    }
    extnet::node::allowlist::drops()
}

/// Packets each allowlist dropped on this node (since the table was loaded).
fn print_allowlist_drops(policy: &Policy) {
    if !policy.profiles.iter().any(|p| p.destinations.is_some()) && policy.node.gateway6.is_none() {
        return;
    }
    match allowlist_drops() {
        Ok(d) if d.is_empty() => {
            println!("destination allowlists: nothing dropped (no extnet table loaded yet)")
        }
        Ok(d) => {
            println!("destination allowlists, packets dropped on this node since its table was loaded:");
            for (name, packets, bytes) in d {
                use extnet::plan::ruleset::allowlist::{profile_of_counter, IPV6_COUNTER};
                match profile_of_counter(&name) {
                    Some(p) => println!("  profile {p}: {packets} packets dropped ({bytes} bytes)"),
                    None if name == IPV6_COUNTER => println!("  IPv6 of jobs without IPv6 out (no node.gateway6 or node IPv6 address, or profile ipv6 = false): {packets} packets dropped ({bytes} bytes)"),
                    None => println!("  no binding (fail closed): {packets} packets dropped ({bytes} bytes)"),
                }
            }
        }
        Err(e) => println!("destination allowlist counters unavailable: {e}; run extnet status as root in the node's network namespace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's lines are those of the format strings it replaced.
    #[test]
    fn jobs_table_lines() {
        assert_eq!(
            output::header(&JOBS),
            format!(
                "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} {:<20}  {:>10} {:>10} {:>6}  {:>10} {:>10} {:>6}",
                "JOB",
                "USER",
                "MODE",
                "SLOT",
                "MARK",
                "PORTS",
                "PROFILE",
                "SINCE",
                "OUT",
                "IN",
                "CONNS",
                "OUT6",
                "IN6",
                "CONNS6"
            )
        );
        let mode = extnet_policy::Mode::Netns;
        let since = lease::rfc3339(1_700_000_000);
        let (out, inn, conns) = (human_bytes(1536), "?".to_owned(), "12".to_owned());
        let (out6, in6, conns6) = (human_bytes(512), human_bytes(0), "1".to_owned());
        assert_eq!(
            output::row(
                &JOBS,
                [
                    &4242u32,
                    &"alice",
                    &mode,
                    &3u32,
                    &"0x10003",
                    &"20000-20511",
                    &"downloads",
                    &since,
                    &out,
                    &inn,
                    &conns,
                    &out6,
                    &in6,
                    &conns6,
                ]
            ),
            format!(
                "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} {:<20}  {out:>10} {inn:>10} {conns:>6}  {out6:>10} {in6:>10} {conns6:>6}",
                4242,
                "alice",
                mode.to_string(),
                3,
                "0x10003",
                "20000-20511",
                "downloads",
                since
            )
        );
    }
}

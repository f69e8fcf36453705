//! The node's nftables table, rendered from the policy: the static base (marks, port-block
//! SNAT, routing marks) with its [`allowlist`] chains and traffic [`counters`]. Text only; the
//! table is loaded by [`crate::node`].

pub mod allowlist;
pub mod counters;

use crate::plan::layout::Layout;
use crate::plan::{mark, netns_addrs, netns_addrs6, TABLE, VETH_PREFIX};
use extnet_policy::Policy;
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// What the base ruleset is built from (facts read from the node at setup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFacts {
    /// The node's address on `node.interface`: what job traffic is translated to.
    pub node_addr: Ipv4Addr,
    /// The node's IPv6 address on `node.interface` (its first global or unique local one),
    /// what job IPv6 is translated to; read only with `node.gateway6`. `None`: every job's
    /// IPv6 is dropped.
    pub node_addr6: Option<Ipv6Addr>,
    /// The `socket cgroupv2` levels of the job cgroups (extnet's own and Slurm's).
    pub cgroup_levels: Vec<usize>,
}

impl BaseFacts {
    /// Facts for `layout`, given the node address. Fails when the cgroup root is not below
    /// `/sys/fs/cgroup` (nft resolves cgroup paths relative to it).
    pub fn new(
        layout: &Layout,
        node_addr: Ipv4Addr,
        node_addr6: Option<Ipv6Addr>,
    ) -> Result<BaseFacts, CgroupRootError> {
        cgroup_path(layout, &layout.cgroup_root)?;
        Ok(BaseFacts {
            node_addr,
            node_addr6,
            cgroup_levels: layout.job_cgroup_levels(),
        })
    }

    /// The node's IPv6 address when jobs' IPv6 goes out at all: `node.gateway6` is set and
    /// the node has an address to translate to.
    pub fn ipv6(&self, policy: &Policy) -> Option<Ipv6Addr> {
        policy.node.gateway6.and(self.node_addr6)
    }
}

/// The node's cgroup root is where nft cannot name it.
#[derive(Debug, thiserror::Error)]
#[error("cgroup root {} is not below /sys/fs/cgroup; set node.cgroup_root to a directory of the cgroup2 hierarchy", root.display())]
pub struct CgroupRootError {
    pub root: std::path::PathBuf,
}

/// A cgroup directory as nft names it: relative to `/sys/fs/cgroup`.
pub fn cgroup_path(layout: &Layout, dir: &std::path::Path) -> Result<String, CgroupRootError> {
    dir.strip_prefix("/sys/fs/cgroup")
        .map(|rel| rel.display().to_string())
        .map_err(|_| CgroupRootError {
            root: layout.cgroup_root.clone(),
        })
}

/// The job cgroup map's element of a running cgroup-mode job, as `add element` text for a
/// base reload (which empties the map): `"PATH" : MARK`.
pub fn job_cgroup_element(
    layout: &Layout,
    job_id: u32,
    mark: u32,
) -> Result<String, CgroupRootError> {
    cgroup_element(layout, &layout.job_cgroup(job_id), mark)
}

/// The job cgroup map's element of cgroup `dir` (extnet's or Slurm's job cgroup) with `mark`.
pub fn cgroup_element(
    layout: &Layout,
    dir: &std::path::Path,
    mark: u32,
) -> Result<String, CgroupRootError> {
    Ok(format!("\"{}\" : 0x{mark:x}", cgroup_path(layout, dir)?))
}

/// The job cgroup map: a running cgroup-mode job's cgroup (its id, as sockets carry it) →
/// the job's checked mark. Elements are added by the prolog and deleted by the epilog
/// ([`crate::node::job_cgroups`]); a cgroup that is gone matches nothing.
pub const JOB_CGROUP_MAP: &str = "job_cgroup";

/// The node's complete nftables table `inet extnet`, for both IP families, as one atomic
/// `nft -f` transaction that replaces any earlier version (running jobs keep working: their
/// slots' elements are the same, and their job cgroups' elements are added again in the same
/// transaction) and deletes the `ip extnet` and `ip6 extnet` tables of earlier versions.
/// The mark check, the job cgroup map, the allowlist verdict map and the per-slot counters
/// serve both families; a job's IPv6 leaves only when [`BaseFacts::ipv6`] says so and its
/// profile has IPv6 ([`Policy::ipv6_of`], decided in its allowlist chain), translated into
/// the same port block as its IPv4.
pub fn base_ruleset(policy: &Policy, facts: &BaseFacts) -> String {
    let n = &policy.node;
    let flag = n.fwmark;
    let blocks = policy.slots();
    let v6 = facts.ipv6(policy);
    let mut s = String::with_capacity(256 + blocks as usize * 200);
    // `table; delete table` in one transaction: create-if-missing, then delete; then the
    // new table. The same for the two tables of earlier versions, which stay deleted.
    for family in ["ip", "ip6", "inet"] {
        let _ = writeln!(s, "table {family} {TABLE}\ndelete table {family} {TABLE}");
    }
    let _ = writeln!(s, "table inet {TABLE} {{");
    interval_set(&mut s, "internal", "ipv4_addr", n.internal.iter());
    interval_set(&mut s, "internal6", "ipv6_addr", n.internal6.iter());
    // job cgroup → mark (elements per running job); slot → job address, slot → port block
    // (static, one element per slot)
    let _ = writeln!(s, "  map {JOB_CGROUP_MAP} {{ type cgroupsv2 : mark; }}");
    let _ = write!(s, "  map slot_netns {{ type ipv4_addr : mark;");
    list(
        &mut s,
        (0..blocks).map(|i| format!("{} : 0x{:x}", netns_addrs(policy, i).1, mark(policy, i))),
    );
    // slot → job IPv6 address of netns jobs, only when their IPv6 goes out (else no netns
    // job has an IPv6 address, and an IPv6 packet from a veth gets no mark)
    let _ = write!(s, "  map slot_netns6 {{ type ipv6_addr : mark;");
    list(
        &mut s,
        (0..blocks).filter_map(|i| {
            let (_, job) = netns_addrs6(policy, i).filter(|_| v6.is_some())?;
            Some(format!("{job} : 0x{:x}", mark(policy, i)))
        }),
    );
    // each slot's block comes from its pool: blocks of different pools differ in size
    let _ = write!(
        s,
        "  map slot_snat {{ type mark : interval ipv4_addr . inet_service;"
    );
    list(
        &mut s,
        policy.pools.iter().flat_map(|pool| {
            pool.slots().filter_map(move |i| {
                let (lo, hi) = pool.block(i)?;
                Some(format!(
                    "0x{:x} : {} . {lo}-{hi}",
                    mark(policy, i),
                    facts.node_addr
                ))
            })
        }),
    );
    // a slot's IPv6 takes the same block, on the node's one IPv6 address: one chain per slot
    // whose rule names its block, reached through a verdict map by the slot's mark. (nft
    // 1.0.6 cannot load `snat ip6 to` a map of `ipv6_addr . inet_service` intervals, and
    // `snat ip6 to ADDR : meta mark map` of port intervals loads only each interval's first
    // port: one connection per job.) The map is static like `slot_snat`: a job costs no
    // nft change. `jump`, not `goto`: a packet no chain translates comes back to the drop.
    let _ = write!(s, "  map slot_snat6 {{ type mark : verdict;");
    let snat6_chains: Vec<(u32, u16, u16)> = match v6 {
        Some(_) => policy
            .pools
            .iter()
            .flat_map(|pool| {
                pool.slots()
                    .filter_map(move |i| pool.block(i).map(|(lo, hi)| (mark(policy, i), lo, hi)))
            })
            .collect(),
        None => Vec::new(),
    };
    list(
        &mut s,
        snat6_chains
            .iter()
            .map(|(m, _, _)| format!("0x{m:x} : jump snat6_{m:x}")),
    );
    if let Some(a) = v6 {
        for (m, lo, hi) in &snat6_chains {
            let _ = writeln!(
                s,
                "  chain snat6_{m:x} {{\n    meta l4proto {{ tcp, udp, icmpv6 }} snat ip6 to [{a}]:{lo}-{hi}\n  }}"
            );
        }
    }
    // per-slot traffic counters and their `mark : counter` maps (see counters)
    s.push_str(&counters::nft_objects(policy));
    // per-profile destination allowlists and their filter chains (see allowlist)
    s.push_str(&allowlist::nft_objects(policy, v6.is_some()));
    // one lookup per level: a socket's job cgroup is extnet's own or Slurm's; a lookup that
    // finds nothing leaves the mark alone
    let lookups: String = facts
        .cgroup_levels
        .iter()
        .map(|l| format!("    meta mark set socket cgroupv2 level {l} map @{JOB_CGROUP_MAP}\n"))
        .collect();
    let both = flag | n.checked_fwmark;
    // netns jobs: a packet from a job veth is marked by its source address, IPv4 by
    // `slot_netns`, IPv6 by `slot_netns6` only when that address routes back through the
    // veth it came in by (`fib saddr . iif`): a job that writes another slot's address (or
    // any other) gets no mark, and `allow_forward` drops it as a packet of no job
    let _ = writeln!(
        s,
        r#"  chain output_mark {{
    type route hook output priority mangle; policy accept;
    meta mark & 0x{both:x} != 0 meta mark set meta mark & 0x{keep:x}
    ip daddr @internal return
    ip6 daddr @internal6 return
{lookups}  }}
  chain prerouting_mark {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "{VETH_PREFIX}*" ip daddr @internal return
    iifname "{VETH_PREFIX}*" ip6 daddr @internal6 return
    iifname "{VETH_PREFIX}*" meta mark set ip saddr map @slot_netns
    iifname "{VETH_PREFIX}*" meta nfproto ipv6 fib saddr . iif oif missing return
    iifname "{VETH_PREFIX}*" meta mark set ip6 saddr map @slot_netns6
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{VETH_PREFIX}*" accept
    oifname "{VETH_PREFIX}*" ct state established,related accept
    oifname "{VETH_PREFIX}*" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname "{VETH_PREFIX}*" ip daddr @internal masquerade
    iifname "{VETH_PREFIX}*" ip6 daddr @internal6 masquerade
    ip daddr @internal return
    ip6 daddr @internal6 return
    meta mark & 0x{flag:x} == 0x{flag:x} meta l4proto {{ tcp, udp, icmp }} snat ip to meta mark map @slot_snat
{snat6}    meta mark & 0x{flag:x} == 0x{flag:x} counter drop comment "marked without a port block: never leave untranslated"
  }}
{accounting}}}"#,
        keep = !both,
        snat6 = v6.map_or(String::new(), |_| format!(
            "    meta mark & 0x{flag:x} == 0x{flag:x} meta nfproto ipv6 meta l4proto {{ tcp, udp, icmpv6 }} meta mark vmap @slot_snat6\n"
        )),
        accounting = counters::nft_chains(policy)
    );
    s
}

/// `set NAME { type TYPE; flags interval; elements = { ... }; }` of `nets`.
fn interval_set<T: std::fmt::Display>(
    s: &mut String,
    name: &str,
    ty: &str,
    nets: impl Iterator<Item = T>,
) {
    let nets: Vec<String> = nets.map(|n| n.to_string()).collect();
    if nets.is_empty() {
        let _ = writeln!(s, "  set {name} {{ type {ty}; flags interval; }}");
    } else {
        let _ = writeln!(
            s,
            "  set {name} {{ type {ty}; flags interval; elements = {{ {} }}; }}",
            nets.join(", ")
        );
    }
}

fn list(s: &mut String, elems: impl Iterator<Item = String>) {
    let v: Vec<String> = elems.collect();
    if v.is_empty() {
        s.push_str(" }\n");
    } else {
        let _ = writeln!(s, " elements = {{ {} }}; }}", v.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::policy;

    #[test]
    fn ruleset_has_one_element_per_slot_and_no_per_job_rule() {
        let p = policy();
        let layout = Layout::new(&p, "n1");
        assert_eq!(
            layout.job_cgroup(17).display().to_string(),
            "/sys/fs/cgroup/unified/extnet/n1/job_17"
        );
        assert_eq!(
            job_cgroup_element(&layout, 17, 0x30002).unwrap(),
            "\"unified/extnet/n1/job_17\" : 0x30002"
        );
        let mut facts = BaseFacts::new(&layout, "10.99.0.11".parse().unwrap(), None).unwrap();
        facts.cgroup_levels = vec![3];
        let r = base_ruleset(&p, &facts);
        // job cgroups come and go with the jobs: the map starts empty
        assert!(
            r.contains("map job_cgroup { type cgroupsv2 : mark; }"),
            "{r}"
        );
        assert!(r.contains("0x30001 : 10.99.0.11 . 20256-20511"), "{r}");
        assert!(r.contains("100.64.0.10 : 0x30002"), "{r}");
        assert!(r.contains("socket cgroupv2 level 3 map @job_cgroup"), "{r}");
        assert!(
            r.contains("elements = { 10.99.0.0/24, 172.16.0.0/12 }"),
            "{r}"
        );
        // slot_netns, slot_snat (slot_snat6 is empty without IPv6), the six accounting maps
        assert_eq!(r.matches("0x30002").count(), 8, "{r}");
        assert!(
            r.contains("map slot_snat6 { type mark : verdict; }") && !r.contains("chain snat6_"),
            "{r}"
        );
        assert!(
            !r.contains("\"unified/extnet/n1/job"),
            "no per-job element in the base ruleset: {r}"
        );
        // only this chain says a packet was checked: flag and checked bits set by anyone
        // else (a socket of no running job, SO_MARK) are cleared first
        assert!(
            r.contains("meta mark & 0x30000 != 0 meta mark set meta mark & 0xfffcffff\n    ip daddr @internal return\n    ip6 daddr @internal6 return\n    meta mark set socket cgroupv2"),
            "{r}"
        );
        // protocols other than TCP, UDP and ICMP are dropped in both filter chains
        assert_eq!(
            r.matches("meta l4proto != { tcp, udp, icmp } counter name proto_drop drop")
                .count(),
            2,
            "{r}"
        );
        // TCP, UDP and ICMP (its echo identifier as the port) leave only inside the slot's
        // block; a marked packet that no block translates is dropped, never sent as it is
        assert!(
            r.contains("meta l4proto { tcp, udp, icmp } snat ip to meta mark map @slot_snat\n    meta mark & 0x10000 == 0x10000 counter drop"),
            "{r}"
        );
        assert!(!r.contains("snat ip to 10.99.0.11"), "{r}");
        // one inet table; the tables of earlier versions go in the same transaction
        assert!(
            r.starts_with("table ip extnet\ndelete table ip extnet\ntable ip6 extnet\ndelete table ip6 extnet\ntable inet extnet\ndelete table inet extnet\ntable inet extnet {\n"),
            "{r}"
        );
        assert_eq!(r.matches("table inet extnet {").count(), 1, "{r}");
        // without gateway6, every IPv6 packet of a job is dropped before the verdict map
        let out = &r[r.find("chain allow_out").unwrap()..];
        let out = &out[..out.find("\n  }").unwrap()];
        assert!(
            out.find("meta nfproto ipv6 counter name ipv6_drop drop")
                .unwrap()
                < out.find("vmap @slot_profile").unwrap(),
            "{out}"
        );
        assert!(
            r.contains(
                "iifname != \"xj*\" return\n    meta nfproto ipv6 counter name ipv6_drop drop"
            ),
            "netns jobs get no IPv6: {r}"
        );
    }

    #[test]
    fn with_gateway6_a_slots_ipv6_takes_the_same_block_on_the_nodes_ipv6_address() {
        let text = crate::plan::testing::policy_text().replace(
            "internal = [",
            "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\ninternal = [",
        );
        let p = Policy::from_toml(&text, "t").unwrap();
        let layout = Layout::new(&p, "n1");
        let v6: Ipv6Addr = "fd00:78e7::11".parse().unwrap();
        let mut facts = BaseFacts::new(&layout, "10.99.0.11".parse().unwrap(), Some(v6)).unwrap();
        facts.cgroup_levels = vec![3];
        let r = base_ruleset(&p, &facts);
        assert!(r.contains("0x30001 : 10.99.0.11 . 20256-20511"), "{r}");
        // each slot's whole block, on the node's IPv6 address, through its own chain
        assert!(r.contains("map slot_snat6 { type mark : verdict; elements = { 0x30000 : jump snat6_30000, 0x30001 : jump snat6_30001,"), "{r}");
        assert!(
            r.contains("  chain snat6_30001 {\n    meta l4proto { tcp, udp, icmpv6 } snat ip6 to [fd00:78e7::11]:20256-20511\n  }"),
            "{r}"
        );
        assert_eq!(r.matches("snat ip6 to").count(), p.slots() as usize, "{r}");
        assert!(
            r.contains("meta l4proto { tcp, udp, icmp } snat ip to meta mark map @slot_snat\n    meta mark & 0x10000 == 0x10000 meta nfproto ipv6 meta l4proto { tcp, udp, icmpv6 } meta mark vmap @slot_snat6\n    meta mark & 0x10000 == 0x10000 counter drop"),
            "{r}"
        );
        assert!(
            r.contains(
                "set internal6 { type ipv6_addr; flags interval; elements = { fd00:78e7::/48 }; }"
            ),
            "{r}"
        );
        // internal IPv6 is never marked, never translated
        assert!(
            r.contains("ip daddr @internal return\n    ip6 daddr @internal6 return\n    meta mark set socket cgroupv2"),
            "{r}"
        );
        let out = &r[r.find("chain allow_out").unwrap()..];
        let out = &out[..out.find("\n  }").unwrap()];
        assert!(!out.contains("ipv6_drop"), "{out}");
        assert!(
            out.contains("meta nfproto ipv6 meta l4proto != { tcp, udp, icmpv6 } counter name proto_drop drop"),
            "{out}"
        );
        // the node has gateway6 but no IPv6 address: IPv6 stays dropped
        facts.node_addr6 = None;
        let r = base_ruleset(&p, &facts);
        assert!(!r.contains("fd00:78e7::11"), "{r}");
        let out = &r[r.find("chain allow_out").unwrap()..];
        assert!(
            out.contains("meta nfproto ipv6 counter name ipv6_drop drop"),
            "{out}"
        );
    }

    /// The test policy with IPv6 out, `netns_subnet6` (when given) and a netns profile
    /// `ns` with `ns_keys`.
    fn netns6_policy(subnet6: Option<&str>, ns_keys: &str) -> Policy {
        let node = match subnet6 {
            Some(n) => format!("netns_subnet6 = \"{n}\"\n"),
            None => String::new(),
        };
        let text = crate::plan::testing::policy_text().replace(
            "internal = [",
            &format!(
                "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\n{node}internal = ["
            ),
        ) + &format!(
            "[[profile]]\nname = \"ns\"\nusers = [\"a\"]\nmode = \"netns\"\n{ns_keys}"
        );
        Policy::from_toml(&text, "t").unwrap()
    }

    fn chain<'a>(r: &'a str, name: &str) -> &'a str {
        let c = &r[r
            .find(&format!("chain {name} {{"))
            .unwrap_or_else(|| panic!("{name}: {r}"))..];
        &c[..c.find("\n  }").unwrap()]
    }

    #[test]
    fn netns_jobs_ipv6_is_marked_by_its_own_address_and_meets_the_profiles_verdict() {
        let p = netns6_policy(Some("fd00:ffff::/112"), "");
        let layout = Layout::new(&p, "n1");
        let v6: Ipv6Addr = "fd00:78e7::11".parse().unwrap();
        let mut facts = BaseFacts::new(&layout, "10.99.0.11".parse().unwrap(), Some(v6)).unwrap();
        facts.cgroup_levels = vec![3];
        let r = base_ruleset(&p, &facts);
        // slot s: the /126 number s, job side ::2
        assert_eq!(
            crate::plan::netns_addrs6(&p, 1),
            Some((
                "fd00:ffff::5".parse().unwrap(),
                "fd00:ffff::6".parse().unwrap()
            ))
        );
        assert!(
            r.contains("map slot_netns6 { type ipv6_addr : mark; elements = { fd00:ffff::2 : 0x30000, fd00:ffff::6 : 0x30001, fd00:ffff::a : 0x30002 }; }"),
            "{r}"
        );
        // internal IPv6 is not marked; a source that does not route back through its veth
        // (another slot's address, any other) gets no mark
        let pre = chain(&r, "prerouting_mark");
        let order: Vec<usize> = [
            "iifname \"xj*\" ip6 daddr @internal6 return",
            "iifname \"xj*\" meta nfproto ipv6 fib saddr . iif oif missing return",
            "iifname \"xj*\" meta mark set ip6 saddr map @slot_netns6",
        ]
        .iter()
        .map(|l| pre.find(l).unwrap_or_else(|| panic!("{l} missing: {pre}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{pre}");
        // to internal IPv6 networks: masqueraded to the node address, as IPv4
        assert!(
            chain(&r, "postrouting").contains("iifname \"xj*\" ip daddr @internal masquerade\n    iifname \"xj*\" ip6 daddr @internal6 masquerade\n"),
            "{r}"
        );
        // forwarded IPv6 meets the verdict map as IPv4 does; unmarked (forged) is dropped
        let fwd = chain(&r, "allow_forward");
        assert!(!fwd.contains("ipv6_drop"), "{fwd}");
        let order: Vec<usize> = [
            "ip6 daddr @internal6 return",
            "meta mark & 0x10000 == 0x10000 meta nfproto ipv6 meta l4proto != { tcp, udp, icmpv6 } counter name proto_drop drop",
            "meta mark & 0x10000 == 0x10000 meta mark vmap @slot_profile",
            "counter name unbound_drop drop",
        ]
        .iter()
        .map(|l| fwd.find(l).unwrap_or_else(|| panic!("{l} missing: {fwd}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{fwd}");
        // the forward chain lets replies of both families in, nothing else, to a veth
        assert!(
            chain(&r, "forward").contains(
                "oifname \"xj*\" ct state established,related accept\n    oifname \"xj*\" drop"
            ),
            "{r}"
        );
        // translated into the slot's block by mark, forwarded packets too
        assert!(r.contains("meta mark vmap @slot_snat6"), "{r}");

        // no IPv6 address on the node: no netns job address, every job's IPv6 dropped
        facts.node_addr6 = None;
        let r = base_ruleset(&p, &facts);
        assert!(
            r.contains("map slot_netns6 { type ipv6_addr : mark; }"),
            "{r}"
        );
        assert!(
            chain(&r, "allow_forward").contains("meta nfproto ipv6 counter name ipv6_drop drop"),
            "{r}"
        );
        // without netns_subnet6 (netns profiles without IPv6): netns IPv6 dropped and
        // counted, cgroup jobs' IPv6 still goes out
        let p = netns6_policy(None, "ipv6 = false\n");
        facts.node_addr6 = Some(v6);
        let r = base_ruleset(&p, &facts);
        assert!(
            r.contains("map slot_netns6 { type ipv6_addr : mark; }"),
            "{r}"
        );
        assert!(
            chain(&r, "allow_forward").contains(
                "iifname != \"xj*\" return\n    meta nfproto ipv6 counter name ipv6_drop drop"
            ),
            "{r}"
        );
        assert!(!chain(&r, "allow_out").contains("ipv6_drop"), "{r}");
    }
}

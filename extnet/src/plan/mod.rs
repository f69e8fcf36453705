//! Pure planning: policy + node facts → marks, port blocks, addresses, the node's base
//! nftables ruleset ([`ruleset`]). No I/O; unit-tested without root.
//!
//! Everything that varies per job is keyed by *slot*: slot `s` owns port block `s`, packet
//! mark `fwmark | s`, the `/30` number `s` of `netns_subnet` and the `/126` number `s` of
//! `netns_subnet6`. The node's
//! ruleset holds one static element per slot, so starting or ending a job changes no nftables
//! state at all (no per-job rule, no per-job element, no `nft` call on the job's path).

pub mod gateway;
pub mod layout;
pub mod ruleset;

use crate::kernel::netlink::route::{Route, Route6, RouteKind};
use crate::kernel::netlink::rule::{FwmarkRule, SourceRule};
use extnet_policy::Policy;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Name of the node's nftables table (family `inet`).
pub const TABLE: &str = "extnet";

/// Interface-name prefix of job veths (host side), matched as `xj*` by the ruleset.
pub const VETH_PREFIX: &str = "xj";

/// The link that the hold table routes to: one end of a veth pair whose other end
/// ([`HOLD_PEER`]) stays down and does not forward, so whatever is sent there is dropped (a
/// dummy link would do, but not every kernel has the dummy driver; every node with netns
/// jobs has veth).
pub const HOLD_LINK: &str = "extnet0";
/// The other end of [`HOLD_LINK`]: never up, forwarding off.
pub const HOLD_PEER: &str = "extnet0p";

/// The mark of a packet of slot `slot` that extnet's nft chain has checked
/// (`fwmark | checked_fwmark | slot`): the only mark that routes to a gateway, and the key of
/// the slot in the node table's maps.
pub fn mark(policy: &Policy, slot: u32) -> u32 {
    policy.node.fwmark | policy.node.checked_fwmark | slot
}

/// The mark a socket of slot `slot` gets when it is created (`fwmark | slot`, by the slot
/// cgroup's bpf program). It routes only to the hold table: a job's first route lookup
/// succeeds, and its packets leave only once extnet's nft chain has checked them and added
/// `checked_fwmark` ([`mark`]).
pub fn socket_mark(policy: &Policy, slot: u32) -> u32 {
    policy.node.fwmark | slot
}

/// The one rule for checked packets of every job: `ip rule add fwmark F|C/F|C lookup
/// route_table priority P`.
pub fn main_rule(policy: &Policy) -> FwmarkRule {
    let n = &policy.node;
    let both = n.fwmark | n.checked_fwmark;
    FwmarkRule {
        fwmark: both,
        mask: both,
        table: n.route_table,
        priority: n.rule_priority,
    }
}

/// The rule for job packets that extnet's chain has not checked (its table is gone, or it
/// let them pass unmarked): `ip rule add fwmark F/F lookup hold_table priority P+1`, after
/// the main one.
pub fn hold_rule(policy: &Policy) -> FwmarkRule {
    let n = &policy.node;
    FwmarkRule {
        fwmark: n.fwmark,
        mask: n.fwmark,
        table: n.hold_table,
        priority: n.rule_priority.saturating_add(1),
    }
}

/// The routes of the main external table: `default via GATEWAY dev IFACE` and a `throw` per
/// internal network (those stay on the node's normal path).
pub fn main_routes(policy: &Policy, iface_index: u32) -> Vec<Route> {
    let n = &policy.node;
    std::iter::once(Route {
        table: n.route_table,
        dst: Ipv4Net::default(),
        kind: RouteKind::Unicast {
            gateway: Some(n.gateway),
            oif: Some(iface_index),
        },
    })
    .chain(throw_internal(policy, n.route_table))
    .collect()
}

/// The routes of the hold table: `default dev extnet0` (a link whose packets are dropped), a
/// `throw` per internal network, and with netns mode a `throw` of `netns_subnet` (what the
/// node sends to its jobs' namespaces from their veths' host sides, which
/// [`netns_hold_rules`] sends here, goes on to the main table).
pub fn hold_routes(policy: &Policy, hold_link_index: u32) -> Vec<Route> {
    let n = &policy.node;
    let netns = policy.uses_netns().then_some(Route {
        table: n.hold_table,
        dst: n.netns_subnet,
        kind: RouteKind::Throw,
    });
    std::iter::once(Route {
        table: n.hold_table,
        dst: Ipv4Net::default(),
        kind: RouteKind::Unicast {
            gateway: None,
            oif: Some(hold_link_index),
        },
    })
    .chain(throw_internal(policy, n.hold_table))
    .chain(netns)
    .collect()
}

/// The rules that hold what netns jobs send unless extnet's chain has marked it: `ip rule
/// add from NETNS_SUBNET lookup hold_table priority P+2` (after the main and the hold rule),
/// and its IPv6 twin for `netns_subnet6` (`ipv6`: the kernel has IPv6). Why: a netns job's
/// packets are forwarded, and marked by extnet's prerouting chain; with that chain gone (a
/// firewall reload flushed the table) they would be routed by the node's main table, and
/// leave untranslated through a default route the node has (one learned from router
/// advertisements, say). With these rules they go to the hold table, whose default is
/// `extnet0`, and are dropped; internal destinations and the namespaces' own addresses are
/// thrown back. Nothing without a netns profile.
pub fn netns_hold_rules(policy: &Policy, ipv6: bool) -> Vec<SourceRule> {
    let n = &policy.node;
    if !policy.uses_netns() {
        return Vec::new();
    }
    let priority = n.rule_priority.saturating_add(2);
    let mut rules = vec![SourceRule {
        src: n.netns_subnet.into(),
        table: n.hold_table,
        priority,
    }];
    if let (true, Some(net6)) = (ipv6, n.netns_subnet6) {
        rules.push(SourceRule {
            src: net6.into(),
            table: n.hold_table,
            priority,
        });
    }
    rules
}

fn throw_internal(policy: &Policy, table: u32) -> impl Iterator<Item = Route> + '_ {
    policy.node.internal.iter().map(move |net| Route {
        table,
        dst: *net,
        kind: RouteKind::Throw,
    })
}

/// The IPv6 `ip -6 rule`s: the hold rule always (every IPv6 packet with a job's flag that
/// is not routed otherwise goes to the hold table), and with IPv6 out (`ipv6`: the node has
/// `gateway6` and an IPv6 address) the main rule too, as for IPv4.
pub fn rules6(policy: &Policy, ipv6: bool) -> Vec<FwmarkRule> {
    let mut rules = vec![hold_rule(policy)];
    if ipv6 {
        rules.insert(0, main_rule(policy));
    }
    rules
}

/// The IPv6 twins of [`pool_rules`]: with IPv6 out, a pool with a table of its own sends
/// its checked IPv6 there too (the same rules in the IPv6 rule list), so its IPv6 leaves
/// through the pool's `gateway6`, as its IPv4 through its `gateway`. None without IPv6 out.
pub fn pool_rules6(policy: &Policy, ipv6: bool) -> Vec<FwmarkRule> {
    if ipv6 {
        pool_rules(policy)
    } else {
        Vec::new()
    }
}

/// The IPv6 routes of the main external and the hold table: a `throw` per `internal6`
/// network in both (internal IPv6 stays on the node's normal path), and with IPv6 out
/// (`ipv6`) `default via gateway6 dev IFACE` in the main one and `default dev extnet0` in the
/// hold one. Without IPv6 out the hold table's default is `unreachable`
/// ([`crate::node::ensure_ipv6_routing`]) and the main one has none.
pub fn routes6(policy: &Policy, iface_index: u32, hold_link_index: u32, ipv6: bool) -> Vec<Route6> {
    let n = &policy.node;
    let mut routes = Vec::new();
    if let (true, Some(gw)) = (ipv6, n.gateway6) {
        routes.push(Route6 {
            table: n.route_table,
            dst: Ipv6Net::default(),
            via: Some((Some(gw), iface_index)),
        });
        routes.push(Route6 {
            table: n.hold_table,
            dst: Ipv6Net::default(),
            via: Some((None, hold_link_index)),
        });
    }
    for table in [n.route_table, n.hold_table] {
        routes.extend(throw_internal6(policy, table));
    }
    // as for IPv4 (hold_routes): the node's own packets to its jobs' namespaces go on
    if let (true, Some(net6)) = (policy.uses_netns(), n.netns_subnet6) {
        routes.push(Route6 {
            table: n.hold_table,
            dst: net6,
            via: None,
        });
    }
    routes
}

/// The IPv6 routes of the pools' own tables ([`pool_rules6`]): `default via gateway6 dev
/// IFACE` of each routed pool and a `throw` per `internal6` network, with IPv6 out. A
/// routed pool without `gateway6` (the node has none) gets none.
pub fn pool_routes6(policy: &Policy, iface_index: u32, ipv6: bool) -> Vec<Route6> {
    if !ipv6 {
        return Vec::new();
    }
    policy
        .routed_pools()
        .filter_map(|pool| Some((pool.route_table, pool.gateway6?)))
        .flat_map(|(table, gw)| {
            std::iter::once(Route6 {
                table,
                dst: Ipv6Net::default(),
                via: Some((Some(gw), iface_index)),
            })
            .chain(throw_internal6(policy, table))
        })
        .collect()
}

fn throw_internal6(policy: &Policy, table: u32) -> impl Iterator<Item = Route6> + '_ {
    policy.node.internal6.iter().map(move |net| Route6 {
        table,
        dst: *net,
        via: None,
    })
}

/// The `/30` of slot `slot` in `netns_subnet`: (host side, job side).
pub fn netns_addrs(policy: &Policy, slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(policy.node.netns_subnet.network()) + slot * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// The `/126` of slot `slot` in `netns_subnet6`: (host side `::1`, job side `::2`); `None`
/// without `node.netns_subnet6`.
pub fn netns_addrs6(policy: &Policy, slot: u32) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let base = u128::from(policy.node.netns_subnet6?.network()) + u128::from(slot) * 4;
    Some((Ipv6Addr::from(base + 1), Ipv6Addr::from(base + 2)))
}

/// The bits of the packet mark that carry the slot.
pub const SLOT_MASK: u32 = 0xffff;

/// The aligned power-of-two runs of slots that cover `first..=last` exactly, in order, as
/// `(value, mask)` over the slot bits: a mark `m` is in a run when `m & mask == value`. The
/// CIDR decomposition of an address range, on 16 bits: at most 2 × 16 runs, whatever the
/// range.
pub fn slot_prefixes(first: u32, last: u32) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let (mut cur, last) = (u64::from(first), u64::from(last.min(SLOT_MASK)));
    while cur <= last {
        // the largest run that starts at `cur` (aligned) and ends at or before `last`
        let mut size = if cur == 0 {
            u64::from(SLOT_MASK) + 1
        } else {
            cur & cur.wrapping_neg()
        };
        while cur + size - 1 > last {
            size /= 2;
        }
        out.push((cur as u32, SLOT_MASK & !((size - 1) as u32)));
        cur += size;
    }
    out
}

/// The `ip rule`s of the pools whose gateway is not `node.gateway`: for each, rules that
/// match exactly the marks of the pool's slots (flag bits and slot prefix, [`slot_prefixes`])
/// and look up the pool's own table, at the priority just before the main rule (so they win
/// over it). Equals `ip rule add fwmark FLAG|VALUE/FLAG|MASK lookup TABLE priority P-1`.
pub fn pool_rules(policy: &Policy) -> Vec<FwmarkRule> {
    let n = &policy.node;
    policy
        .routed_pools()
        .flat_map(|pool| {
            let slots = pool.slots();
            slot_prefixes(slots.start, slots.end.saturating_sub(1))
                .into_iter()
                .map(move |(value, mask)| FwmarkRule {
                    fwmark: n.fwmark | n.checked_fwmark | value,
                    mask: n.fwmark | n.checked_fwmark | mask,
                    table: pool.route_table,
                    priority: n.rule_priority.saturating_sub(1),
                })
        })
        .collect()
}

/// The routes of the pools' own tables: `default via GATEWAY dev IFACE` and a `throw` per
/// internal network (as in the main external table), for each pool whose gateway is not
/// `node.gateway`.
pub fn pool_routes(policy: &Policy, iface_index: u32) -> Vec<Route> {
    policy
        .routed_pools()
        .flat_map(|pool| {
            std::iter::once(Route {
                table: pool.route_table,
                dst: Ipv4Net::default(),
                kind: RouteKind::Unicast {
                    gateway: Some(pool.gateway),
                    oif: Some(iface_index),
                },
            })
            .chain(throw_internal(policy, pool.route_table))
        })
        .collect()
}

/// A stable fingerprint of text (FNV-1a 64), to tell whether the applied base is current.
pub fn fingerprint(text: &str) -> String {
    let mut h = Fnv::default();
    std::hash::Hasher::write(&mut h, text.as_bytes());
    format!("{:016x}", std::hash::Hasher::finish(&h))
}

/// FNV-1a (64 bit) as a [`std::hash::Hasher`]: [`fingerprint`] of a text, or of values that
/// derive `Hash` without formatting them first (`node::inputs_key`). Not for hash tables
/// that face input an attacker chooses.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
/// Policies the unit tests of the plan build on.
#[cfg(test)]
pub(crate) mod testing {
    use extnet_policy::Policy;

    /// A node with 3 slots of 256 ports (20000-20767) and two internal networks.
    pub fn policy_text() -> String {
        r#"version = 1
[node]
interface = "eth0"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24", "172.16.0.0/12"]
cgroup_root = "/sys/fs/cgroup/unified/extnet/%n"
[ports]
range = "20000-20767"
block_size = 256
"#
        .to_owned()
    }

    pub fn policy() -> Policy {
        Policy::from_toml(&policy_text(), "t").unwrap()
    }

    /// A node on `interface` with one internal network, 3 slots of 256 ports
    /// (20000-20767), and `profiles` (TOML) after it.
    pub fn node_policy(interface: &str, profiles: &str) -> Policy {
        let text = format!(
            r#"version = 1
[node]
interface = "{interface}"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
[ports]
range = "20000-20767"
block_size = 256
{profiles}"#
        );
        Policy::from_toml(&text, "t").unwrap()
    }

    /// Two profiles: `open` (no allowlist) and `web-only`, whose allowlist has a
    /// destination of every kind.
    pub const ALLOWLIST_PROFILES: &str = r#"
[[profile]]
name = "open"
users = ["a"]
[[profile]]
name = "web-only"
users = ["a"]
destinations = [
  { net = "203.0.113.10", proto = "tcp", ports = "80,443,8000-8100" },
  { net = "198.51.100.0/24", proto = "udp", ports = 53 },
  { net = "192.0.2.0/24", proto = "icmp" },
  { net = "192.0.2.0/24", proto = "tcp" },
  { net = "203.0.113.64/26", ports = "7000-7001" },
  { net = "100.100.0.0/16" },
]
"#;
}

#[cfg(test)]
mod tests {
    use super::layout::Layout;
    use super::ruleset::{base_ruleset, BaseFacts};
    use super::testing::{policy, policy_text};
    use super::*;

    #[test]
    fn slots_map_to_marks_blocks_and_addresses() {
        let p = policy();
        assert_eq!(p.slots(), 3);
        assert_eq!(mark(&p, 2), 0x30002);
        assert_eq!(p.slot_block(2), Some((20512, 20767)));
        assert_eq!(p.slot_block(3), None);
        assert_eq!(
            netns_addrs(&p, 0),
            ("100.64.0.1".parse().unwrap(), "100.64.0.2".parse().unwrap())
        );
        assert_eq!(
            netns_addrs(&p, 65),
            ("100.64.1.5".parse().unwrap(), "100.64.1.6".parse().unwrap())
        );
    }
    /// The test policy with two profile pools: "bulk" (own gateway, 2 slots of 1024 ports)
    /// and "big" (the node's gateway, 3 slots of 512 ports).
    fn pooled() -> Policy {
        let text = policy_text()
            + r#"[[profile]]
name = "default"
users = ["*"]
[[profile]]
name = "bulk"
users = ["*"]
gateway = "10.99.0.253"
[profile.ports]
range = "30000-32047"
block_size = 1024
[[profile]]
name = "big"
users = ["*"]
ports = { range = "40000-41535", block_size = 512 }
"#;
        Policy::from_toml(&text, "t").unwrap()
    }

    /// Every slot `0..=SLOT_MASK` is matched by exactly the prefixes of `first..=last` when it
    /// is inside, by none otherwise, and runs are aligned and no more than 2 × 16.
    fn assert_exact_cover(first: u32, last: u32) {
        let runs = slot_prefixes(first, last);
        assert!(runs.len() <= 32, "{first}-{last}: {} runs", runs.len());
        for &(v, m) in &runs {
            assert_eq!(v & !m & SLOT_MASK, 0, "run {v:#x}/{m:#x} is not aligned");
        }
        for slot in 0..=SLOT_MASK {
            let hits = runs.iter().filter(|&&(v, m)| slot & m == v).count();
            let inside = (first..=last).contains(&slot);
            assert_eq!(
                hits,
                usize::from(inside),
                "slot {slot} in {first}-{last}: matched by {hits} of {runs:x?}"
            );
        }
    }

    #[test]
    fn slot_prefixes_cover_exactly_the_range() {
        assert_eq!(slot_prefixes(0, SLOT_MASK), vec![(0, 0)]);
        assert_eq!(slot_prefixes(39, 39), vec![(39, 0xffff)]);
        assert_eq!(slot_prefixes(4, 7), vec![(4, 0xfffc)]);
        assert_eq!(
            slot_prefixes(3, 8),
            vec![(3, 0xffff), (4, 0xfffc), (8, 0xffff)]
        );
        for (first, last) in [
            (0, 0),
            (0, 38),
            (39, 39),
            (39, 40),
            (1, SLOT_MASK),
            (1, SLOT_MASK - 1),
            (255, 4096),
            (1000, 1999),
            (32767, 32768),
            (SLOT_MASK, SLOT_MASK),
        ] {
            assert_exact_cover(first, last);
        }
        // a pseudo-random sample of ranges
        let mut x: u32 = 12345;
        for _ in 0..20 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let a = (x >> 8) & SLOT_MASK;
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = (x >> 8) & SLOT_MASK;
            assert_exact_cover(a.min(b), a.max(b));
        }
    }

    #[test]
    fn pools_number_their_slots_after_each_other_with_their_own_blocks() {
        let p = pooled();
        assert_eq!(p.pools.len(), 3);
        assert_eq!(p.slots(), 3 + 2 + 3);
        let bulk = p.pool_of_profile("bulk").unwrap();
        assert_eq!(bulk.slots(), 3..5);
        assert_eq!(p.pool_of_profile("default").unwrap().slots(), 0..3);
        assert_eq!(p.pool_of_profile("big").unwrap().slots(), 5..8);
        let layout = Layout::new(&p, "n1");
        let facts = BaseFacts::new(&layout, "10.99.0.11".parse().unwrap(), None).unwrap();
        let r = base_ruleset(&p, &facts);
        let snat = r
            .lines()
            .find(|l| l.contains("map slot_snat"))
            .expect("slot_snat map");
        for elem in [
            "0x30000 : 10.99.0.11 . 20000-20255",
            "0x30002 : 10.99.0.11 . 20512-20767",
            "0x30003 : 10.99.0.11 . 30000-31023",
            "0x30004 : 10.99.0.11 . 31024-32047",
            "0x30005 : 10.99.0.11 . 40000-40511",
            "0x30007 : 10.99.0.11 . 41024-41535",
        ] {
            assert!(snat.contains(elem), "{elem} missing in {snat}");
        }
        assert_eq!(snat.matches(" : 10.99.0.11 . ").count(), 8, "{snat}");
        // one netns element per slot of every pool
        assert!(
            r.contains(&format!("{} : 0x30007", netns_addrs(&p, 7).1)),
            "{r}"
        );
    }

    #[test]
    fn only_pools_with_their_own_gateway_get_rules_and_a_table() {
        let p = pooled();
        let bulk = p.pool_of_profile("bulk").unwrap();
        assert_eq!(
            (bulk.gateway.to_string(), bulk.route_table),
            ("10.99.0.253".into(), 7701)
        );
        let big = p.pool_of_profile("big").unwrap();
        assert_eq!((big.gateway, big.route_table), (p.node.gateway, 7700));
        // slots 3 and 4: prefixes 3/0xffff and 4/0xffff, with the flag bit in mark and mask
        let rules = pool_rules(&p);
        let want = |fwmark, mask| FwmarkRule {
            fwmark,
            mask,
            table: 7701,
            priority: 7699,
        };
        assert_eq!(rules, vec![want(0x30003, 0x3ffff), want(0x30004, 0x3ffff)]);
        for slot in 0..p.slots() {
            let m = mark(&p, slot);
            let hit = rules.iter().any(|r| m & r.mask == r.fwmark);
            assert_eq!(hit, bulk.slots().contains(&slot), "slot {slot}");
        }
        let routes = pool_routes(&p, 2);
        assert_eq!(
            routes.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            [
                "default via 10.99.0.253 dev if#2 table 7701",
                "throw 10.99.0.0/24 table 7701",
                "throw 172.16.0.0/12 table 7701"
            ]
        );
        // the one-pool policy has none
        assert!(pool_rules(&policy()).is_empty() && pool_routes(&policy(), 2).is_empty());
    }

    #[test]
    fn netns_subnets_are_held_unless_marked_and_thrown_back_in_the_hold_table() {
        assert!(netns_hold_rules(&policy(), true).is_empty());
        let text = policy_text().replace(
            "internal = [",
            "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\nnetns_subnet6 = \"fd00:78e8::/112\"\ninternal = [",
        ) + "[[profile]]\nname = \"ns\"\nusers = [\"*\"]\nmode = \"netns\"\n";
        let p = Policy::from_toml(&text, "t").unwrap();
        let rules: Vec<String> = netns_hold_rules(&p, true)
            .iter()
            .map(|r| r.to_string())
            .collect();
        let (hold, prio) = (p.node.hold_table, p.node.rule_priority + 2);
        assert_eq!(
            rules,
            [
                format!("from 100.64.0.0/16 lookup {hold} priority {prio}"),
                format!("from fd00:78e8::/112 lookup {hold} priority {prio}"),
            ]
        );
        assert_eq!(netns_hold_rules(&p, false).len(), 1);
        let h: Vec<String> = hold_routes(&p, 9).iter().map(|r| r.to_string()).collect();
        assert!(
            h.contains(&format!("throw 100.64.0.0/16 table {hold}")),
            "{h:?}"
        );
        let h6: Vec<String> = routes6(&p, 2, 9, true)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert!(
            h6.contains(&format!("throw fd00:78e8::/112 table {hold}")),
            "{h6:?}"
        );
    }

    #[test]
    fn a_pool_sends_its_ipv6_through_its_own_gateway6_and_a_gateway6_alone_gets_a_table() {
        let v6 = |t: String| {
            t.replace(
                "internal = [",
                "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::254\"\ninternal = [",
            )
        };
        // bulk names only an IPv4 gateway: its IPv6 goes to node.gateway6, in its own table
        let text = v6(policy_text())
            + r#"[[profile]]
name = "bulk"
users = ["*"]
gateway = "10.99.0.253"
ports = { range = "30000-32047", block_size = 1024 }
[[profile]]
name = "v6bulk"
users = ["*"]
gateway6 = "fd00:78e7::253"
ports = { range = "40000-41023", block_size = 1024 }
[[profile]]
name = "plain"
users = ["*"]
ports = { range = "50000-50255", block_size = 256 }
"#;
        let p = Policy::from_toml(&text, "t").unwrap();
        let bulk = p.pool_of_profile("bulk").unwrap();
        let v6bulk = p.pool_of_profile("v6bulk").unwrap();
        let plain = p.pool_of_profile("plain").unwrap();
        assert_eq!(bulk.gateway6, p.node.gateway6);
        // a pool with only gateway6 of its own still gets a table (its IPv4 goes to
        // node.gateway there); one with neither stays in the main table
        assert_eq!(
            (v6bulk.gateway, v6bulk.gateway6.unwrap().to_string()),
            (p.node.gateway, "fd00:78e7::253".into())
        );
        assert_ne!(v6bulk.route_table, p.node.route_table);
        assert_eq!(plain.route_table, p.node.route_table);
        // the IPv6 rules are the IPv4 ones, only with IPv6 out
        assert_eq!(pool_rules6(&p, true), pool_rules(&p));
        assert_eq!(pool_rules(&p).len(), 2 + 1, "{:?}", pool_rules(&p));
        assert!(pool_rules6(&p, false).is_empty());
        let routes: Vec<String> = pool_routes6(&p, 2, true)
            .iter()
            .map(|r| r.to_string())
            .collect();
        let t = |pool: &extnet_policy::Pool| pool.route_table;
        assert_eq!(
            routes,
            [
                format!("default via fd00:78e7::254 dev if#2 table {}", t(bulk)),
                format!("throw fd00:78e7::/48 table {}", t(bulk)),
                format!("default via fd00:78e7::253 dev if#2 table {}", t(v6bulk)),
                format!("throw fd00:78e7::/48 table {}", t(v6bulk)),
            ]
        );
        assert!(pool_routes6(&p, 2, false).is_empty());
        // without node.gateway6 a pool has no IPv6 gateway and no IPv6 routes
        let p4 = pooled();
        assert!(p4.pools.iter().all(|pool| pool.gateway6.is_none()));
        assert!(pool_routes6(&p4, 2, true).is_empty());
    }

    #[test]
    fn only_the_checked_mark_selects_the_gateway_table_and_a_socket_mark_selects_the_hold_table() {
        let p = policy();
        assert_eq!(
            socket_mark(&p, 2),
            0x10002,
            "a socket gets the flag and its slot"
        );
        assert_eq!(
            mark(&p, 2),
            0x30002,
            "a checked packet has the checked bit too"
        );
        let main = main_rule(&p);
        let hold = hold_rule(&p);
        let selects = |r: &FwmarkRule, m: u32| m & r.mask == r.fwmark;
        assert!(selects(&main, mark(&p, 2)) && !selects(&main, socket_mark(&p, 2)));
        assert!(selects(&hold, socket_mark(&p, 2)));
        assert!(
            hold.priority > main.priority,
            "the hold rule comes after the main one"
        );
        assert_eq!((main.table, hold.table), (7700, 7699));
        let routes = hold_routes(&p, 9);
        assert_eq!(routes[0].table, 7699);
        assert!(
            matches!(
                routes[0].kind,
                RouteKind::Unicast {
                    gateway: None,
                    oif: Some(9)
                }
            ),
            "{routes:?}"
        );
        assert_eq!(
            routes.len(),
            1 + p.node.internal.len(),
            "a throw per internal network"
        );
    }

    #[test]
    fn fingerprint_changes_with_content() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}

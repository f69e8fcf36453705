//! The parts of a node's base that the kernel tests and micro-benchmarks load by hand into a
//! private namespace, without the rest of `node::ensure`: the main routing rule and table,
//! the allowlist's nft objects, the accounting's.

use extnet::kernel::netlink::Netlink;
use extnet::plan::ruleset::{allowlist, counters};
use extnet_policy::Policy;

/// The main rule and table, as `node::ensure` makes them: checked job traffic to table
/// `route_table`, whose default route goes through the node's gateway on the interface of
/// index `ifindex`, the internal nets thrown back to the main table.
pub fn main_routing(p: &Policy, nl: &mut Netlink, ifindex: u32) {
    nl.rule_ensure(&extnet::plan::main_rule(p)).unwrap();
    for r in extnet::plan::main_routes(p, ifindex) {
        nl.route_replace(&r).unwrap();
    }
}

/// The allowlist part of the node table `inet extnet` (as the base ruleset declares it),
/// with the set `internal` holding 10.98.0.0/24 (the net of [`crate::policy::allowlist`]),
/// `internal6` empty, and jobs' IPv6 dropped (no `gateway6`).
pub fn allowlist_table(p: &Policy) -> String {
    format!(
        "table inet extnet {{\n  set internal {{ type ipv4_addr; flags interval; elements = {{ 10.98.0.0/24 }}; }}\n  set internal6 {{ type ipv6_addr; flags interval; }}\n{}}}\n",
        allowlist::nft_objects(p, false)
    )
}

/// A table `inet extnet` (replacing any) with the accounting objects and chains, `internal` =
/// 127.0.0.2, and a test chain that gives UDP to port 9999 the mark of slot 1 (as the cgroup
/// or netns marking of a job would).
pub fn accounting_table(p: &Policy) -> String {
    format!(
        "table inet extnet\ndelete table inet extnet\ntable inet extnet {{\n  set internal {{ type ipv4_addr; flags interval; elements = {{ 127.0.0.2 }}; }}\n  set internal6 {{ type ipv6_addr; flags interval; }}\n{}  chain mark_test {{\n    type route hook output priority mangle; policy accept;\n    udp dport 9999 meta mark set 0x{:x}\n  }}\n{}}}\n",
        counters::nft_objects(p),
        extnet::plan::mark(p, 1),
        counters::nft_chains(p)
    )
}

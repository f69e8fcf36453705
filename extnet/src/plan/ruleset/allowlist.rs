//! Destination allowlists on the node: a granted job reaches only its profile's external
//! destinations; everything else it sends outside is dropped on the node and counted.
//!
//! The slot's mark is static, the profile varies per job, so the node table holds one verdict
//! map, `slot_profile` (`mark : verdict`), with at most one element per slot:
//! `0x10003 : jump dest_web` (or `: accept` for a profile without `destinations`). The prolog
//! makes the slot's element carry its job's verdict ([`crate::node::allowlist::bind`], raw
//! netlink through [`crate::kernel::nftables::netlink`]) before it writes the job state that
//! lets tasks start: one `get element` and, only when the slot was last bound to another
//! profile (or never), one add or one delete+add transaction. The element stays when the job
//! ends: the epilog does not delete it (a delete is slow: the kernel frees the element after
//! an RCU grace period when the netlink socket closes). That is
//! harmless, because nothing can send with the slot's mark between two jobs: the epilog has
//! killed every process of the slot's cgroup (cgroup mode) or dropped the job's namespace and
//! veth (netns mode), and the next holder's prolog binds the slot again before its tasks start.
//! Fail closed is kept: a mark that was never bound has no element and gets nothing out.
//! [`crate::node::allowlist::unbind`] remains for the node teardown, tests and a prolog's rollback. Two filter chains
//! look the job's mark up:
//!
//! - `allow_out` (hook output): cgroup-mode jobs, whose sockets carry the mark from birth
//!   (see [`crate::kernel::bpf`]);
//! - `allow_forward` (hook forward): netns-mode jobs, whose packets get the mark in
//!   `prerouting_mark`.
//!
//! Internal destinations and the node itself pass before the lookup; a marked packet with no
//! element is dropped (fail closed) and counted in `unbound_drop`. Each profile with an
//! allowlist has a chain `dest_<profile>` that accepts its destinations and ends in
//! `counter name dest_<profile>_drop drop`. These chains and counters are static per policy
//! (part of the base ruleset and its fingerprint); only the map's elements change per job. A
//! base reload empties the map and binds the slots of running jobs again in the same
//! transaction ([`crate::node::allowlist::rebind`]); counters keep their values across it
//! ([`crate::node::counters::carry_over`] carries every `counter NAME { }` line over).

use crate::kernel::nftables::netlink::Verdict;
use crate::plan::VETH_PREFIX;
use extnet_policy::{Destination, Policy, Profile, Proto};
use std::fmt::Write;

/// The verdict map: job mark → what the job's external traffic gets.
pub const MAP: &str = "slot_profile";
/// Counter of marked packets that had no element in [`MAP`] (a job without a binding).
pub const UNBOUND_COUNTER: &str = "unbound_drop";
/// Counter of a job's packets of a protocol other than TCP, UDP and ICMP: dropped, since only
/// those three are translated into the job's port block or to the node's address.
pub const PROTO_COUNTER: &str = "proto_drop";

/// Chain of a profile's allowlist.
pub fn chain(profile: &str) -> String {
    format!("dest_{profile}")
}

/// Counter of the packets a profile's allowlist dropped.
pub fn drop_counter(profile: &str) -> String {
    format!("dest_{profile}_drop")
}

/// Counter of a job's IPv6 packets that may not leave: every one when the node has no
/// `gateway6` or no IPv6 address, those of profiles with `ipv6 = false` otherwise.
pub const IPV6_COUNTER: &str = "ipv6_drop";

/// What a job of `profile` gets: `accept` (no allowlist, IPv6 allowed) or `jump
/// dest_<profile>` (its allowlist, or the drop of its IPv6).
pub fn verdict_of(profile: &Profile) -> Verdict {
    if profile.destinations.is_none() && profile.ipv6 {
        Verdict::Accept
    } else {
        Verdict::Jump(chain(&profile.name))
    }
}

/// [`verdict_of`] in nft syntax.
pub fn verdict(profile: &Profile) -> String {
    verdict_of(profile).to_string()
}

/// One nft rule that accepts `d`: `ip daddr` or `ip6 daddr` by the entry's family, which
/// matches only packets of that family (the table is `inet`); `icmp` of an IPv6 entry is
/// ICMPv6.
pub fn rule(d: &Destination) -> String {
    let net = if d.net.prefix_len() == d.net.max_prefix_len() {
        d.net.addr().to_string()
    } else {
        d.net.to_string()
    };
    let (daddr, icmp) = if d.net.addr().is_ipv6() {
        ("ip6 daddr", "icmpv6")
    } else {
        ("ip daddr", "icmp")
    };
    let ports = || {
        let p = d.ports_text();
        if d.ports.len() == 1 {
            p
        } else {
            format!("{{ {} }}", p.replace(',', ", "))
        }
    };
    match (d.proto, d.ports.is_empty()) {
        (Proto::Any, true) => format!("{daddr} {net} accept"),
        (Proto::Any, false) => {
            format!(
                "{daddr} {net} meta l4proto {{ tcp, udp }} th dport {} accept",
                ports()
            )
        }
        (Proto::Tcp | Proto::Udp, false) => {
            format!("{daddr} {net} {} dport {} accept", d.proto, ports())
        }
        (Proto::Icmp, _) => format!("{daddr} {net} meta l4proto {icmp} accept"),
        (p, _) => format!("{daddr} {net} meta l4proto {p} accept"),
    }
}

/// The map, the counters, the per-profile chains and the two filter chains, as lines of the
/// base table (after the `internal` sets). `ipv6`: the node sends jobs' IPv6 out at all
/// (`node.gateway6` and an IPv6 address to translate to); otherwise every IPv6 packet of a
/// job is dropped before the verdict map, and so is every IPv6 packet of a netns job
/// without `node.netns_subnet6`. Otherwise a job's IPv6 meets its profile's verdict as its
/// IPv4 does, in both modes.
pub fn nft_objects(policy: &Policy, ipv6: bool) -> String {
    let flag = policy.node.fwmark;
    let mut s = String::new();
    let _ = writeln!(s, "  map {MAP} {{ type mark : verdict; }}");
    let _ = writeln!(s, "  counter {UNBOUND_COUNTER} {{ }}");
    let _ = writeln!(s, "  counter {PROTO_COUNTER} {{ }}");
    let _ = writeln!(s, "  counter {IPV6_COUNTER} {{ }}");
    for p in &policy.profiles {
        if verdict_of(p) == Verdict::Accept {
            continue;
        }
        if p.destinations.is_some() {
            let _ = writeln!(s, "  counter {} {{ }}", drop_counter(&p.name));
        }
        let _ = writeln!(s, "  chain {} {{", chain(&p.name));
        if !p.ipv6 {
            let _ = writeln!(s, "    meta nfproto ipv6 counter name {IPV6_COUNTER} drop");
        }
        match &p.destinations {
            Some(dests) => {
                for d in dests {
                    let _ = writeln!(s, "    {}", rule(d));
                }
                let _ = writeln!(s, "    counter name {} drop", drop_counter(&p.name));
            }
            None => {
                let _ = writeln!(s, "    accept");
            }
        }
        let _ = writeln!(s, "  }}");
    }
    // every job's IPv6 when the node sends none; netns jobs' IPv6 also without
    // `netns_subnet6` (none of them has an IPv6 address then)
    let v6_drop = format!("    meta nfproto ipv6 counter name {IPV6_COUNTER} drop\n");
    let v6_out = if ipv6 { "" } else { v6_drop.as_str() };
    let netns6 = if ipv6 && policy.node.netns_subnet6.is_some() {
        ""
    } else {
        v6_drop.as_str()
    };
    // priority filter - 5: before any other filter chain of these hooks; a drop here is final
    let _ = write!(
        s,
        r#"  chain allow_out {{
    type filter hook output priority filter - 5; policy accept;
    meta mark & 0x{flag:x} != 0x{flag:x} return
    oifname "lo" return
    ip daddr @internal return
    ip6 daddr @internal6 return
{v6_out}    meta nfproto ipv4 meta l4proto != {{ tcp, udp, icmp }} counter name {PROTO_COUNTER} drop
    meta nfproto ipv6 meta l4proto != {{ tcp, udp, icmpv6 }} counter name {PROTO_COUNTER} drop
    meta mark vmap @{MAP}
    counter name {UNBOUND_COUNTER} drop
  }}
  chain allow_forward {{
    type filter hook forward priority filter - 5; policy accept;
    iifname != "{VETH_PREFIX}*" return
{netns6}    ip daddr @internal return
    ip6 daddr @internal6 return
    meta mark & 0x{flag:x} == 0x{flag:x} meta nfproto ipv4 meta l4proto != {{ tcp, udp, icmp }} counter name {PROTO_COUNTER} drop
    meta mark & 0x{flag:x} == 0x{flag:x} meta nfproto ipv6 meta l4proto != {{ tcp, udp, icmpv6 }} counter name {PROTO_COUNTER} drop
    meta mark & 0x{flag:x} == 0x{flag:x} meta mark vmap @{MAP}
    counter name {UNBOUND_COUNTER} drop
  }}
"#
    );
    s
}

/// The profile whose drop counter is `counter`, if any (`dest_web_drop` → `web`).
pub fn profile_of_counter(counter: &str) -> Option<&str> {
    counter.strip_prefix("dest_")?.strip_suffix("_drop")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{node_policy, ALLOWLIST_PROFILES};

    #[test]
    fn each_destination_becomes_one_accept_rule() {
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        let d = p.profile("web-only").unwrap().destinations.clone().unwrap();
        let rules: Vec<String> = d.iter().map(rule).collect();
        assert_eq!(
            rules,
            [
                "ip daddr 203.0.113.10 tcp dport { 80, 443, 8000-8100 } accept",
                "ip daddr 198.51.100.0/24 udp dport 53 accept",
                "ip daddr 192.0.2.0/24 meta l4proto icmp accept",
                "ip daddr 192.0.2.0/24 meta l4proto tcp accept",
                "ip daddr 203.0.113.64/26 meta l4proto { tcp, udp } th dport 7000-7001 accept",
                "ip daddr 100.100.0.0/16 accept",
            ]
        );
    }

    #[test]
    fn profiles_get_accept_or_their_chain_which_ends_in_a_counted_drop() {
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        assert_eq!(verdict(p.profile("open").unwrap()), "accept");
        assert_eq!(
            verdict(p.profile("web-only").unwrap()),
            "jump dest_web-only"
        );
        let s = nft_objects(&p, true);
        assert!(s.contains("  counter dest_web-only_drop { }\n"), "{s}");
        assert!(
            s.contains("    counter name dest_web-only_drop drop\n  }\n"),
            "the allowlist chain ends in a counted drop: {s}"
        );
        assert!(
            !s.contains("dest_open"),
            "no chain for a profile without allowlist: {s}"
        );
        // fail closed: marked traffic without a binding is dropped, internal traffic passes
        let out = &s[s.find("chain allow_out").unwrap()..];
        let order: Vec<usize> = [
            "ip daddr @internal return",
            "vmap @slot_profile",
            "counter name unbound_drop drop",
        ]
        .iter()
        .map(|r| out.find(r).unwrap_or_else(|| panic!("{r} missing: {out}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
        assert!(s.contains("iifname != \"xj*\" return"), "{s}");
    }

    #[test]
    fn ipv6_entries_match_their_family_and_ipv4_less_profiles_drop_ipv6_first() {
        let p = node_policy(
            "eth0",
            r#"
[[profile]]
name = "v4only"
users = ["a"]
ipv6 = false
[[profile]]
name = "v4list"
users = ["a"]
ipv6 = false
destinations = [ { net = "192.0.2.0/24" } ]
[[profile]]
name = "mixed"
users = ["a"]
destinations = [
  { net = "2001:db8::/32", proto = "tcp", ports = 443 },
  { net = "2001:db8:1::7", proto = "icmp" },
  { net = "2001:db8:2::/48" },
]
"#,
        );
        let d = p.profile("mixed").unwrap().destinations.clone().unwrap();
        let rules: Vec<String> = d.iter().map(rule).collect();
        assert_eq!(
            rules,
            [
                "ip6 daddr 2001:db8::/32 tcp dport 443 accept",
                "ip6 daddr 2001:db8:1::7 meta l4proto icmpv6 accept",
                "ip6 daddr 2001:db8:2::/48 accept",
            ]
        );
        // a profile without IPv6 always gets a chain, whose first rule drops its IPv6
        assert_eq!(verdict(p.profile("v4only").unwrap()), "jump dest_v4only");
        let s = nft_objects(&p, true);
        assert!(
            s.contains("  chain dest_v4only {\n    meta nfproto ipv6 counter name ipv6_drop drop\n    accept\n  }\n"),
            "{s}"
        );
        assert!(
            s.contains("  chain dest_v4list {\n    meta nfproto ipv6 counter name ipv6_drop drop\n    ip daddr 192.0.2.0/24 accept\n    counter name dest_v4list_drop drop\n  }\n"),
            "{s}"
        );
        assert!(!s.contains("counter dest_v4only_drop"), "{s}");
        assert!(s.contains("  chain dest_mixed {\n    ip6 daddr"), "{s}");
    }

    #[test]
    fn drop_counter_names_round_trip() {
        assert_eq!(
            profile_of_counter(&drop_counter("web-only")),
            Some("web-only")
        );
        assert_eq!(profile_of_counter(UNBOUND_COUNTER), None);
    }
}

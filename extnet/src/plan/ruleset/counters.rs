//! The traffic counters of the node's table: three named counters per slot and the two
//! chains that count through `mark : counter` maps. Text only; reading and resetting them is
//! [`crate::node::counters`], the records the epilog writes are [`crate::store::accounting`].
//!
//! Every slot owns three named counters in table `inet extnet`, declared once with the base
//! ruleset (so a job costs no nft object change, and nothing here grows with the number of
//! jobs):
//!
//! - `slot<N>_out`: packets and bytes the job sends to the outside (postrouting, marked,
//!   leaving through `node.interface`, destination not in `@internal`);
//! - `slot<N>_in`: packets and bytes the outside sends back (prerouting, `ct direction reply`
//!   of a connection whose conntrack mark was set to the job's mark on the way out; this one
//!   place counts both cgroup-mode replies, which go on to input, and netns-mode replies,
//!   which are forwarded);
//! - `slot<N>_conn`: connections (conntrack entries) the job opened to the outside, counted
//!   on their first packet (`ct state new`).
//!
//! These three count both IP families. Each has an IPv6 twin (`slot<N>_out6`, `_in6`,
//! `_conn6`) counting the IPv6 part only (`meta nfproto ipv6`), so a record can say how much
//! of a job's traffic was IPv6; its IPv4 part is the difference. Twins of the totals rather
//! than an IPv4 and an IPv6 counter: records and readers of earlier versions keep their
//! meaning, and an IPv4-only job costs no extra counter update per packet.
//!
//! They are reached through maps `mark : counter` (`counter name meta mark map @slot_out`), so
//! each rule is one hash lookup whatever the number of slots. Counters count packets as the
//! kernel handles them: with segmentation offload (GSO/GRO) one large packet of up to 64 KiB
//! counts once, so `packets_*` can be lower than the number of packets on the wire; bytes are
//! exact.

use crate::plan;
use extnet_policy::Policy;
use std::collections::HashMap;
use std::fmt::Write;

/// The counters of a slot, by the suffix of their names: the totals of both families, then
/// their IPv6 parts.
pub const KINDS: [&str; 6] = ["out", "in", "conn", "out6", "in6", "conn6"];

/// The name of counter `kind` (one of [`KINDS`]) of `slot`.
pub fn counter_name(slot: u32, kind: &str) -> String {
    format!("slot{slot}_{kind}")
}

/// The counters and `mark : counter` maps, one of each per slot, as lines of the base table.
pub fn nft_objects(policy: &Policy) -> String {
    let blocks = policy.slots();
    let mut s = String::with_capacity(blocks as usize * 200);
    for slot in 0..blocks {
        for kind in KINDS {
            let _ = writeln!(s, "  counter {} {{ }}", counter_name(slot, kind));
        }
    }
    for kind in KINDS {
        let _ = write!(s, "  map slot_{kind} {{ type mark : counter;");
        if blocks == 0 {
            s.push_str(" }\n");
            continue;
        }
        let elems: Vec<String> = (0..blocks)
            .map(|slot| {
                format!(
                    "0x{:x} : \"{}\"",
                    plan::mark(policy, slot),
                    counter_name(slot, kind)
                )
            })
            .collect();
        let _ = writeln!(s, " elements = {{ {} }}; }}", elems.join(", "));
    }
    s
}

/// The two counting chains of the base table. Static: no rule names a slot.
pub fn nft_chains(policy: &Policy) -> String {
    let flag = policy.node.fwmark;
    let iface = &policy.node.interface;
    // out: after srcnat (priority 100), so a packet the nat chain drops is not counted.
    // The conntrack mark carries the job's mark to the replies, which have no socket mark.
    format!(
        r#"  chain account_out {{
    type filter hook postrouting priority srcnat + 10; policy accept;
    meta mark & 0x{flag:x} != 0x{flag:x} return
    oifname != "{iface}" return
    ip daddr @internal return
    ct state new ct mark set meta mark counter name meta mark map @slot_conn
    counter name meta mark map @slot_out
    meta nfproto ipv6 ct state new counter name meta mark map @slot_conn6
    meta nfproto ipv6 counter name meta mark map @slot_out6
  }}
  chain account_in {{
    type filter hook prerouting priority filter; policy accept;
    ct direction != reply return
    ct mark & 0x{flag:x} != 0x{flag:x} return
    counter name ct mark map @slot_in
    meta nfproto ipv6 counter name ct mark map @slot_in6
  }}
"#
    )
}

/// `ruleset` with the declarations of counters named in `values` carrying those values.
pub fn with_values(ruleset: &str, values: &HashMap<String, (u64, u64)>) -> String {
    let mut out = String::with_capacity(ruleset.len() + values.len() * 32);
    for line in ruleset.lines() {
        let name = line
            .trim()
            .strip_prefix("counter ")
            .and_then(|r| r.strip_suffix(" { }"));
        match name.and_then(|n| values.get(n).map(|v| (n, v))) {
            Some((n, (p, b))) => {
                let _ = writeln!(out, "  counter {n} {{ packets {p} bytes {b} }}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::node_policy;

    #[test]
    fn objects_are_six_counters_and_one_element_per_map_per_slot() {
        let p = node_policy("ib0", "");
        let o = nft_objects(&p);
        assert_eq!(o.matches("counter slot").count(), 18, "{o}");
        for kind in KINDS {
            assert!(
                o.contains(&format!(
                    "map slot_{kind} {{ type mark : counter; elements = {{ 0x30000 : \"slot0_{kind}\", 0x30001 : \"slot1_{kind}\", 0x30002 : \"slot2_{kind}\" }}; }}"
                )),
                "{o}"
            );
        }
        assert!(!o.contains("slot3_"), "{o}");
    }

    #[test]
    fn chains_count_only_marked_external_traffic_through_maps() {
        let c = nft_chains(&node_policy("ib0", ""));
        assert!(c.contains("meta mark & 0x10000 != 0x10000 return"), "{c}");
        assert!(c.contains("oifname != \"ib0\" return"), "{c}");
        assert!(c.contains("ip daddr @internal return"), "{c}");
        assert!(
            c.contains("ct state new ct mark set meta mark counter name meta mark map @slot_conn"),
            "{c}"
        );
        assert!(
            c.contains("ct direction != reply return\n    ct mark & 0x10000 != 0x10000 return\n    counter name ct mark map @slot_in\n"),
            "{c}"
        );
        // the IPv6 twins count only IPv6, after the totals (the conntrack mark is set once)
        for (map, mark) in [("conn6", "meta"), ("out6", "meta"), ("in6", "ct")] {
            assert!(
                c.contains(&format!(
                    "meta nfproto ipv6 {}counter name {mark} mark map @slot_{map}\n",
                    if map == "conn6" { "ct state new " } else { "" }
                )),
                "{map}: {c}"
            );
        }
        assert!(
            c.find("@slot_out\n").unwrap() < c.find("@slot_conn6").unwrap(),
            "{c}"
        );
        // O(1): no rule names a slot, a mark value or a counter
        assert!(!c.contains("slot0") && !c.contains("0x30001"), "{c}");
    }

    #[test]
    fn with_values_sets_only_the_named_counters() {
        let p = node_policy("ib0", "");
        let r = nft_objects(&p);
        let mut v = HashMap::new();
        v.insert("slot1_in".to_string(), (3, 4096));
        v.insert("slot9_in".to_string(), (1, 1));
        let out = with_values(&r, &v);
        assert!(
            out.contains("  counter slot1_in { packets 3 bytes 4096 }\n"),
            "{out}"
        );
        assert!(out.contains("  counter slot0_in { }\n"), "{out}");
        assert_eq!(out.lines().count(), r.lines().count());
        assert_eq!(with_values(&r, &HashMap::new()), r);
    }
}

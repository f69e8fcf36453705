//! Kernel test of the routing of port pools with a gateway of their own
//! (`extnet::node::ensure_pool_routing` / `teardown_pool_routing`): the real `ip rule`s and
//! routing tables in a private network namespace, checked with the kernel's own route lookup
//! (`ip route get ... mark M`). As root; without root it prints why it was skipped.
//!
//! The namespace belongs to one thread of the test (`unshare(CLONE_NEWNET)`), so nothing is
//! ever changed in the machine's own namespace, and it disappears with the thread.

use extnet::kernel::netlink::{FwmarkRule, Netlink};
use extnet::node::{ensure_pool_routing, teardown_pool_routing};
use extnet::plan;
use extnet_policy::Policy;
use support::netns::{in_private_netns, ip, node_link};
use support::policy::{pools_a, pools_b};
use support::root::is_root;
use support::sorted;
use support::tables::main_routing;

/// The next hop the kernel picks for `dst` from a packet with mark `mark` ("direct" when none).
fn next_hop(dst: &str, mark: u32) -> String {
    let out = ip(&["-4", "route", "get", dst, "mark", &format!("{mark:#x}")]);
    let f: Vec<&str> = out.split_whitespace().collect();
    f.iter()
        .position(|w| *w == "via")
        .map_or("direct".to_owned(), |i| f[i + 1].to_owned())
}

/// The pool rules (of any policy) in the namespace: at the priority before the main rule,
/// with the flag bit.
fn pool_rules_now(p: &Policy, nl: &mut Netlink) -> Vec<FwmarkRule> {
    sorted(
        nl.rules_v4()
            .unwrap()
            .into_iter()
            .filter(|r| r.priority == p.node.rule_priority - 1)
            .filter(|r| r.fwmark & p.node.fwmark != 0)
            .collect(),
    )
}

/// In the calling thread's (new) network namespace: the node interface eth0 10.99.0.11/24
/// (the net of the pools policies); a netlink socket and eth0's index.
fn node_interface() -> (Netlink, u32) {
    node_link("eth0", "10.99.0.11/24", None);
    let mut nl = Netlink::open().unwrap();
    let idx = nl.index("eth0").unwrap().expect("eth0");
    (nl, idx)
}

#[test]
fn pool_rules_and_tables_route_exactly_their_slots_and_are_repaired_reconciled_and_removed() {
    if !is_root(
        "pool_rules_and_tables_route_exactly_their_slots_and_are_repaired_reconciled_and_removed",
        "a network namespace, rules and routes",
    ) {
        return;
    }
    in_private_netns(|| {
        let (mut nl, idx) = node_interface();
        let a = pools_a();
        main_routing(&a, &mut nl, idx);
        // a rule of someone else at the same priority: never ours to touch
        ip(&[
            "rule",
            "add",
            "pref",
            "7699",
            "fwmark",
            "0x40000/0x40000",
            "lookup",
            "100",
        ]);

        ensure_pool_routing(&a, &mut nl, idx).unwrap();
        let planned = sorted(plan::pool_rules(&a));
        assert_eq!(
            planned.len(),
            1 + 2,
            "bulk: one slot; wide: 40-47 and 48-55"
        );
        assert_eq!(pool_rules_now(&a, &mut nl), planned);
        let mark = |s: u32| plan::mark(&a, s);
        let out = "203.0.113.10";
        for (slot, hop) in [
            (0, "10.99.0.254"),
            (38, "10.99.0.254"),
            (39, "10.99.0.253"),
            (40, "10.99.0.252"),
            (47, "10.99.0.252"),
            (48, "10.99.0.252"),
            (55, "10.99.0.252"),
            (56, "10.99.0.254"),
        ] {
            assert_eq!(next_hop(out, mark(slot)), hop, "slot {slot}");
        }
        // internal destinations stay on the main table whatever the pool
        assert_eq!(next_hop("10.99.0.5", mark(39)), "direct");
        assert_eq!(next_hop("10.99.0.5", mark(40)), "direct");
        // idempotent: a second call changes nothing
        ensure_pool_routing(&a, &mut nl, idx).unwrap();
        assert_eq!(pool_rules_now(&a, &mut nl), planned);
        assert_eq!(nl.routes(7701).unwrap().len(), 2);

        // drift (a link flap flushed a table, someone deleted a rule): the next call repairs
        ip(&["route", "flush", "table", "7701"]);
        ip(&[
            "rule",
            "del",
            "pref",
            "7699",
            "fwmark",
            "0x30027/0x3ffff",
            "lookup",
            "7701",
        ]);
        assert_eq!(
            next_hop(out, mark(39)),
            "10.99.0.254",
            "lost: falls to the main rule"
        );
        ensure_pool_routing(&a, &mut nl, idx).unwrap();
        assert_eq!(next_hop(out, mark(39)), "10.99.0.253", "repaired");
        assert_eq!(pool_rules_now(&a, &mut nl), planned);

        // the pools changed: the old rules and the table of the removed pool go, the new
        // layout's rules come, and slot 40 now belongs to bulk
        let b = pools_b();
        ensure_pool_routing(&b, &mut nl, idx).unwrap();
        assert_eq!(pool_rules_now(&b, &mut nl), sorted(plan::pool_rules(&b)));
        assert!(
            nl.routes(7702).unwrap().is_empty(),
            "table of the removed pool"
        );
        assert_eq!(next_hop(out, mark(40)), "10.99.0.253");
        assert_eq!(next_hop(out, mark(41)), "10.99.0.254");
        assert!(
            ip(&["rule", "show"]).contains("fwmark 0x40000/0x40000 lookup 100"),
            "another's rule at the same priority is kept"
        );

        // teardown: no pool rule and no pool route is left; the main rule is not its business
        let errors = teardown_pool_routing(&b, &mut nl);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pool_rules_now(&b, &mut nl), Vec::new());
        assert!(nl.routes(7701).unwrap().is_empty());
        assert_eq!(next_hop(out, mark(39)), "10.99.0.254");
        let rules = ip(&["rule", "show"]);
        assert!(
            rules.contains("fwmark 0x40000/0x40000 lookup 100")
                && rules.contains("fwmark 0x30000/0x30000 lookup 7700"),
            "{rules}"
        );
        // a teardown with nothing there is fine
        assert!(teardown_pool_routing(&b, &mut nl).is_empty());
    });
}

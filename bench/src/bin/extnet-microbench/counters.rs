//! `counters`: what accounting adds to a job at 1008 slots (ports 1024-65535 in blocks of
//! 64): the prolog's reset of its slot's counters, the epilog's read (each over a fresh
//! netlink socket, as the binaries do), `extnet status` reading 100 active slots, and the
//! base's load and reload with carry-over. In a private network namespace. Then what the
//! IPv6 counters (three more per slot) cost the whole base ruleset at the cluster
//! benchmark's 1562 slots: its size and load time with and without them.

use crate::stats::{human, show};
use extnet::kernel::nftables as nft;
use extnet::node::counters;
use std::time::{Duration, Instant};
use support::netns::in_private_netns;
use support::tables::accounting_table;

const RUNS: u32 = 200;

pub fn run() {
    in_private_netns(|| {
        let p = support::policy::accounting("1024-65535", 64);
        let slots = p.slots();
        let text = accounting_table(&p);
        let t = Instant::now();
        nft::apply(&text).unwrap();
        let load = t.elapsed();
        let t = Instant::now();
        nft::apply(&counters::carry_over(&text)).unwrap();
        let carry = t.elapsed();
        // spread over the slots: 0, 5, 10, ...
        let each = |f: &mut dyn FnMut(u32)| -> Vec<Duration> {
            (0..RUNS)
                .map(|i| {
                    let t = Instant::now();
                    f(i * 5 % slots);
                    t.elapsed()
                })
                .collect()
        };
        let reset = each(&mut |s| {
            counters::reset(s).unwrap();
        });
        let read1 = each(&mut |s| {
            counters::read(&[s]).unwrap();
        });
        let active: Vec<u32> = (0..100).map(|i| i * 10).collect();
        let read100 = each(&mut |_| {
            counters::read(&active).unwrap();
        });
        println!(
            "accounting at {slots} slots ({} counters):",
            slots * extnet::plan::ruleset::counters::KINDS.len() as u32
        );
        println!(
            "  {:<48} {}",
            "base load (counters, maps, chains only)",
            human(load)
        );
        println!("  {:<48} {}", "base reload with carry-over", human(carry));
        show("  prolog reset of one slot", reset);
        show("  epilog read of one slot", read1);
        show("  status read of 100 slots", read100);
    });
    in_private_netns(base_with_and_without_ipv6_counters);
}

/// Loads of the whole base ruleset at 1562 slots (ports 10000-59999 in blocks of 32, the
/// cluster benchmark's `jobs` policy), each replacing the last, alternating the ruleset as
/// rendered and the same without the IPv6 counters, their maps and rules (the ruleset of the
/// version before them).
fn base_with_and_without_ipv6_counters() {
    const LOADS: usize = 15;
    let p = support::policy::accounting("10000-59999", 32);
    let facts = extnet::plan::ruleset::BaseFacts {
        node_addr: "10.99.0.11".parse().unwrap(),
        node_addr6: None,
        cgroup_levels: vec![3],
    };
    let with6 = extnet::plan::ruleset::base_ruleset(&p, &facts);
    let ipv6_counter = |l: &&str| ["_out6", "_in6", "_conn6"].iter().any(|k| l.contains(k));
    let without6: String = with6
        .lines()
        .filter(|l| !ipv6_counter(l))
        .flat_map(|l| [l, "\n"])
        .collect();
    assert!(with6.lines().any(|l| ipv6_counter(&l)));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..LOADS {
        for (text, times) in [(&without6, &mut a), (&with6, &mut b)] {
            let t = Instant::now();
            nft::apply(text).unwrap();
            times.push(t.elapsed());
        }
    }
    println!(
        "base ruleset at {} slots (whole table, {LOADS} loads each, alternating):",
        p.slots()
    );
    for (what, text, times) in [
        ("without IPv6 counters", &without6, a),
        ("with IPv6 counters", &with6, b),
    ] {
        println!(
            "  {what}: {} bytes, {} lines",
            text.len(),
            text.lines().count()
        );
        show(&format!("    load ({what})"), times);
    }
}

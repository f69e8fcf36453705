//! `counters`: what accounting adds to a job at 1008 slots (ports 1024-65535 in blocks of
//! 64): the prolog's reset of its slot's counters, the epilog's read (each over a fresh
//! netlink socket, as the binaries do), `extnet status` reading 100 active slots, and the
//! base's load and reload with carry-over. In a private network namespace.

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
        println!("accounting at {slots} slots ({} counters):", slots * 3);
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
}

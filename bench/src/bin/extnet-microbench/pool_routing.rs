//! `pool-routing`: what the routing of port pools with a gateway of their own
//! (`extnet::node::ensure_pool_routing`) adds to every external job's `node::ensure` when
//! nothing changed: with no such pool (one rule dump) and with two (a rule dump, two route
//! dumps, six route replaces). In a private network namespace with the node's `eth0`.

use crate::stats::show;
use extnet::kernel::netlink::Netlink;
use extnet::node::ensure_pool_routing;
use std::time::{Duration, Instant};
use support::netns::{in_private_netns, node_link};
use support::policy::{pools_a, pools_base};
use support::tables::main_routing;

const RUNS: usize = 500;

pub fn run() {
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        for (name, p) in [
            ("no routed pool", pools_base().policy()),
            ("two routed pools", pools_a()),
        ] {
            main_routing(&p, &mut nl, idx);
            ensure_pool_routing(&p, &mut nl, idx).unwrap();
            let times: Vec<Duration> = (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    ensure_pool_routing(&p, &mut nl, idx).unwrap();
                    t.elapsed()
                })
                .collect();
            show(&format!("ensure_pool_routing, {name}"), times);
        }
    });
}

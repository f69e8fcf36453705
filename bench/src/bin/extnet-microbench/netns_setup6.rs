//! `netns-setup6`: what IPv6 adds to a netns-mode job's setup and teardown
//! (`extnet::job::netns::setup` and `teardown`, as the prolog and epilog call them): the same
//! job set up and torn down again and again in a private node namespace, alternating a
//! profile without IPv6 (the host side's IPv6 off) and one with it (the slot's /126 on both
//! ends, no link-local address, a default route and two permanent neighbour entries).
//!
//! Everything happens in a private network namespace and a temporary namespace directory,
//! removed at the end.

use crate::stats::show;
use extnet::job::netns;
use extnet::kernel::netlink::Netlink;
use extnet::plan::layout::Layout;
use std::time::{Duration, Instant};
use support::netns::{addr6, in_private_netns, node_link, NetnsDir};
use support::policy::TestPolicy;

const RUNS: u32 = 100;
const WARMUP: u32 = 5;

pub fn run() {
    let dir = NetnsDir::temporary();
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        addr6("eth0", "fd00:78e7::11/64");
        // this thread's namespace: /proc/sys/net is the writer's
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
            .expect("IPv6 forwarding in the private namespace");
        let policy = TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(&format!("netns_dir = \"{}\"", dir.path().display()))
            .node(r#"gateway6 = "fd00:78e7::1""#)
            .node(r#"internal6 = ["fd00:78e7::/48"]"#)
            .node(r#"netns_subnet6 = "fd00:78e8::/112""#)
            .profile("ns", &["*"], &[r#"mode = "netns""#])
            .policy();
        let layout = Layout::new(&policy, "b1");
        let mut nl = Netlink::open().expect("netlink");
        let job = 42;
        let mut times: [(Vec<Duration>, Vec<Duration>); 2] = Default::default();
        for round in 0..(RUNS + WARMUP) * 2 {
            let ipv6 = round % 2 == 1;
            let t = Instant::now();
            let got = netns::setup(&policy, &layout, &mut nl, job, 1, ipv6).expect("setup");
            let setup = t.elapsed();
            assert_eq!(got, ipv6, "IPv6 configured as asked");
            let t = Instant::now();
            netns::teardown(&layout, &mut nl, job).expect("teardown");
            let teardown = t.elapsed();
            if round >= WARMUP * 2 {
                times[usize::from(ipv6)].0.push(setup);
                times[usize::from(ipv6)].1.push(teardown);
            }
        }
        let [(s4, t4), (s6, t6)] = times;
        println!("netns job setup and teardown ({RUNS} of each, alternating):");
        show("  setup, profile without IPv6", s4);
        show("  setup, profile with IPv6", s6);
        show("  teardown, job without IPv6", t4);
        show("  teardown, job with IPv6", t6);
    });
    dir.finish();
}

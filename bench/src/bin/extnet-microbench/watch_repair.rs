//! `watch-repair`: the node agent's reaction time. Its loop (`extnet::node::watch`, what
//! `extnet node watch` runs) on a thread of a private network namespace with a node of its own
//! (`support::node`: three slots), then `nft flush ruleset` again and again: the time from the
//! kernel's notification that table `inet extnet` was deleted to its notification that it is
//! there again, both read by the benchmark's own nf_tables listener; and, from the agent's
//! report, its repair alone (node lock, `ensure` loading the table, the checks around it).
//! With the agent's default quiet period (100 ms, which coalesces a burst) and with none.

use crate::stats::show;
use extnet::kernel::nftables::netlink::{self as nfnl, Family};
use extnet::node::watch::{WatchConfig, Watcher};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::netns::{in_private_netns, node_link};
use support::node::{TestNode, NODE};

const RUNS: usize = 30;

pub fn run() {
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        for quiet in [WatchConfig::QUIET, Duration::ZERO] {
            let node = TestNode::new("bench-watch");
            let mut config = WatchConfig::new(node.policy_path.clone(), NODE);
            config.quiet = quiet;
            let (tx, repairs) = mpsc::channel();
            let (back, took) = std::thread::scope(|s| {
                let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
                let agent = s.spawn(move || {
                    let mut w = Watcher::start(config)?;
                    w.run(stop_r.as_fd(), &mut |r| {
                        let _ = tx.send(r.clone());
                    })
                });
                repairs
                    .recv_timeout(Duration::from_secs(10))
                    .expect("the agent loads the base at start");
                let mut listener = nfnl::listen().expect("listen to nf_tables");
                let (mut back, mut took) = (Vec::new(), Vec::new());
                for _ in 0..RUNS {
                    // read while nft runs: the deletion is timed when the kernel reports it
                    let mut nft = Command::new("nft")
                        .args(["flush", "ruleset"])
                        .spawn()
                        .expect("run nft");
                    let mut gone = None;
                    let mut again = None;
                    while again.is_none() {
                        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                        let n = poll(&mut fds, PollTimeout::from(5000u16)).expect("poll");
                        assert!(n > 0, "the table is not back after 5 s");
                        listener
                            .drain(256, &mut |m| {
                                let Some(c) = nfnl::change(&m) else { return };
                                if c.what == "table"
                                    && c.table == extnet::plan::TABLE
                                    && c.family == Some(Family::Inet)
                                {
                                    if !c.new {
                                        gone.get_or_insert(Instant::now());
                                    } else if gone.is_some() {
                                        again.get_or_insert(Instant::now());
                                    }
                                }
                            })
                            .expect("read nf_tables notifications");
                    }
                    assert!(nft.wait().unwrap().success(), "nft flush ruleset failed");
                    back.push(again.unwrap() - gone.expect("the flush deleted the table"));
                    let r = repairs
                        .recv_timeout(Duration::from_secs(5))
                        .expect("the agent reports its repair");
                    took.push(r.took);
                    assert!(
                        repairs.recv_timeout(Duration::from_millis(50)).is_err(),
                        "one repair per flush"
                    );
                }
                drop(stop_w);
                agent.join().unwrap().expect("the agent stops cleanly");
                (back, took)
            });
            let q = quiet.as_millis();
            show(&format!("flush ruleset -> table back, quiet {q} ms"), back);
            show(&format!("  the repair alone, quiet {q} ms"), took);
            node.finish();
        }
    });
}

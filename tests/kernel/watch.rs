//! Kernel test of the node agent (`extnet::node::watch`, the library of `extnet node watch`):
//! its loop runs on a thread of a private network namespace with a node of its own
//! (`support::node`: policy, state directory, cgroups), and the test breaks the node's base
//! the ways a node loses it: `nft flush ruleset` (a firewall reload), the main `ip rule`
//! deleted, the hold link deleted, the node interface set down and up (a link flap takes its
//! routes). Each time the base must be back within 2 s (the time is printed), repaired once:
//! one repair per drift, and none while the interface is down. At the end the agent stops on
//! its stop descriptor, and the base, cgroups and files are removed and checked gone. As root;
//! without root it prints why it was skipped.

use extnet::kernel::netlink::Netlink;
use extnet::node::drift;
use extnet::node::watch::{Repair, Trigger, WatchConfig, Watcher};
use extnet::plan::{self, HOLD_LINK};
use extnet::store::fs::Lock;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use support::netns::{in_private_netns, ip, node_link};
use support::node::{TestNode, NODE};
use support::root::is_root;

/// A drift of the base: its name, how the test breaks the base, and when it is back.
type Case<'a> = (&'a str, &'a dyn Fn(), &'a dyn Fn() -> bool);

/// What the agent may take to put the base back.
const BOUND: Duration = Duration::from_secs(2);

/// `nft ARGS` in the calling thread's namespace; its stdout.
fn nft(args: &[&str]) -> String {
    let out = Command::new("nft").args(args).output().expect("run nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `back` holds, polling every 5 ms for at most 5 s; returns how long it took.
fn time_until(what: &str, back: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !back() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: the base is not back after 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

/// The one repair of a drift: it comes, and no second one follows within half a second.
fn one_repair(what: &str, repairs: &Receiver<Repair>) -> Repair {
    let r = repairs
        .recv_timeout(BOUND)
        .unwrap_or_else(|e| panic!("{what}: no repair reported: {e}"));
    match repairs.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Timeout) => r,
        Ok(again) => panic!("{what}: repaired twice: {r:?}, then {again:?}"),
        Err(e) => panic!("{what}: the agent ended: {e}"),
    }
}

#[test]
fn the_agent_puts_the_base_back_within_2_s_of_each_drift_and_repairs_once() {
    if !is_root(
        "the_agent_puts_the_base_back_within_2_s_of_each_drift_and_repairs_once",
        "a network namespace, nft tables, rules, links and cgroups",
    ) {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let node = TestNode::new("watch");
        let p = node.policy.clone();
        let main_rule = plan::main_rule(&p);
        let rule_text = format!(
            "fwmark {:#x}/{:#x} lookup {}",
            main_rule.fwmark, main_rule.mask, main_rule.table
        );
        let route_table = p.node.route_table.to_string();
        let hold_table = p.node.hold_table.to_string();
        let tables_back = || {
            let t = nft(&["list", "tables"]);
            t.contains("table ip extnet") && t.contains("table ip6 extnet")
        };
        let policy_path = node.policy_path.clone();
        let (repairs_tx, repairs) = mpsc::channel();
        std::thread::scope(|s| {
            // closing the write end (also when a check below panics) stops the agent
            let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
            let agent = s.spawn(move || {
                let mut w = Watcher::start(WatchConfig::new(policy_path, NODE))?;
                w.run(stop_r.as_fd(), &mut |r| {
                    let _ = repairs_tx.send(r.clone());
                })
            });

            // at start: nothing is loaded yet
            let r = one_repair("start", &repairs);
            assert_eq!(r.trigger, Trigger::Start);
            assert!(r.loaded, "{r:?}");
            assert!(tables_back());

            // the drifts, each broken on the kernel and put back by the agent
            let drifts: [Case<'_>; 3] = [
                (
                    "nft flush ruleset",
                    &|| {
                        nft(&["flush", "ruleset"]);
                    },
                    &tables_back,
                ),
                (
                    "main rule deleted",
                    &|| {
                        ip(&["rule", "del", "pref", &main_rule.priority.to_string()]);
                    },
                    &|| ip(&["rule", "show"]).contains(&rule_text),
                ),
                (
                    "hold link deleted",
                    &|| {
                        ip(&["link", "del", HOLD_LINK]);
                    },
                    &|| {
                        ip(&["route", "show", "table", &hold_table])
                            .contains(&format!("default dev {HOLD_LINK}"))
                    },
                ),
            ];
            for (what, break_it, back) in drifts {
                break_it();
                let took = time_until(what, back);
                let r = one_repair(what, &repairs);
                println!(
                    "{what}: base back in {:.1} ms (agent: {:.1} ms after the first notification, repair {:.1} ms; {})",
                    took.as_secs_f64() * 1e3,
                    r.since_event.unwrap_or_default().as_secs_f64() * 1e3,
                    r.took.as_secs_f64() * 1e3,
                    drift::describe(&r.drift)
                );
                assert!(took <= BOUND, "{what}: {took:?}");
                assert!(matches!(r.trigger, Trigger::Events { .. }), "{what}: {r:?}");
            }

            // a link flap: down takes the routes through it, and nothing can be repaired
            ip(&["link", "set", "eth0", "down"]);
            let gateway_route = || {
                ip(&["route", "show", "table", &route_table]).contains("default via 10.99.0.254")
            };
            time_until("eth0 down", || !gateway_route());
            match repairs.recv_timeout(Duration::from_secs(1)) {
                Err(RecvTimeoutError::Timeout) => {}
                other => panic!("a repair while eth0 is down: {other:?}"),
            }
            assert!(!gateway_route());
            // up: the routes come back with the link-up notification
            ip(&["link", "set", "eth0", "up"]);
            let took = time_until("eth0 up", gateway_route);
            let r = one_repair("eth0 down and up", &repairs);
            println!(
                "eth0 down and up: base back in {:.1} ms after up (agent: {:.1} ms after the first notification, repair {:.1} ms; {})",
                took.as_secs_f64() * 1e3,
                r.since_event.unwrap_or_default().as_secs_f64() * 1e3,
                r.took.as_secs_f64() * 1e3,
                drift::describe(&r.drift)
            );
            assert!(took <= BOUND, "eth0 up: {took:?}");

            // all of it as planned, by the library's own check too
            let mut nl = Netlink::open().unwrap();
            let (idx, addr) = extnet::node::node_addr(&p, &node.layout, &mut nl).unwrap();
            let left = drift::check(&p, &node.layout, &mut nl, idx, addr).unwrap();
            assert!(left.is_empty(), "{}", drift::describe(&left));

            drop(stop_w);
            agent
                .join()
                .expect("the agent's thread")
                .expect("the agent ends cleanly when told to stop");
        });
        // nothing more was repaired, and the agent let its lock go
        assert!(repairs.try_recv().is_err());
        assert!(
            Lock::try_acquire(&node.layout.agent_lock())
                .unwrap()
                .is_some(),
            "the agent's lock is still held"
        );
        node.finish();
    });
}

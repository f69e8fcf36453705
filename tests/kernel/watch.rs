//! Kernel test of the node agent (`extnet::node::watch`, the library of `extnet node watch`):
//! its loop runs on a thread of a private network namespace with a node of its own
//! (`support::node`: policy, state directory, cgroups), and the test breaks the node's base
//! the ways a node loses it: `nft flush ruleset` (a firewall reload), a rule deleted from and
//! one inserted into extnet's own tables (`nft delete rule`, `nft insert rule`), the main `ip rule`
//! deleted, the hold link deleted, the node interface set down and up (a link flap takes its
//! routes). Each time the base must be back within 2 s (the time is printed), repaired once:
//! one repair per drift, and none while the interface is down. At the end the agent stops on
//! its stop descriptor, and the base, cgroups and files are removed and checked gone. A second
//! test runs the agent with only the capabilities its systemd unit leaves it
//! (`CapabilityBoundingSet=` of packaging/systemd/extnet-node-watch.service). As root; without
//! root it prints why they were skipped.

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

/// extnet's nft table is loaded in the calling thread's namespace, and no table of an
/// earlier version is there.
fn tables_in_place() -> bool {
    let t = nft(&["list", "tables"]);
    t.contains("table inet extnet")
        && !t.contains("table ip extnet")
        && !t.contains("table ip6 extnet")
}

/// The agent's loop on node [`NODE`] of `policy`, with only `caps` when given
/// ([`keep_only_capabilities`]), until `stop` reads end of file; each repair goes to `repairs`.
fn run_agent(
    policy: std::path::PathBuf,
    caps: Option<Vec<u32>>,
    stop: std::os::fd::OwnedFd,
    repairs: mpsc::Sender<Repair>,
) -> Result<(), extnet::node::watch::WatchError> {
    if let Some(caps) = caps {
        keep_only_capabilities(&caps);
    }
    let mut w = Watcher::start(WatchConfig::new(policy, NODE))?;
    w.run(stop.as_fd(), &mut |r| {
        let _ = repairs.send(r.clone());
    })
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
        let hold_rule = plan::hold_rule(&p);
        let ipv6_hold_pref = hold_rule.priority.to_string();
        let ipv6_rule_text = format!(
            "fwmark {:#x}/{:#x} lookup {}",
            hold_rule.fwmark, hold_rule.mask, hold_rule.table
        );
        let route_table = p.node.route_table.to_string();
        let hold_table = p.node.hold_table.to_string();
        let tables_back = tables_in_place;
        let policy_path = node.policy_path.clone();
        let (repairs_tx, repairs) = mpsc::channel();
        std::thread::scope(|s| {
            // closing the write end (also when a check below panics) stops the agent
            let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
            let agent = s.spawn(move || run_agent(policy_path, None, stop_r, repairs_tx));

            // at start: nothing is loaded yet
            let r = one_repair("start", &repairs);
            assert_eq!(r.trigger, Trigger::Start);
            assert!(r.loaded, "{r:?}");
            assert!(tables_back());

            // the chains that the edits below change, as loaded (no traffic here: their
            // counters stay at zero)
            let postrouting = || nft(&["list", "chain", "inet", "extnet", "postrouting"]);
            let allow_out = || nft(&["list", "chain", "inet", "extnet", "allow_out"]);
            let (postrouting_loaded, allow_out_loaded) = (postrouting(), allow_out());
            assert!(postrouting_loaded.contains("never leave untranslated"));

            // the drifts, each broken on the kernel and put back by the agent
            let drifts: [Case<'_>; 8] = [
                (
                    "nft flush ruleset",
                    &|| {
                        nft(&["flush", "ruleset"]);
                    },
                    &tables_back,
                ),
                (
                    // the rule that keeps marked packets without a block from leaving raw
                    "a drop rule deleted inside extnet's table",
                    &|| {
                        let listed = nft(&["-a", "list", "chain", "inet", "extnet", "postrouting"]);
                        let handle = listed
                            .lines()
                            .find(|l| l.contains("never leave untranslated"))
                            .and_then(|l| l.rsplit("# handle ").next())
                            .expect("the drop rule's handle")
                            .trim()
                            .to_owned();
                        nft(&[
                            "delete",
                            "rule",
                            "inet",
                            "extnet",
                            "postrouting",
                            "handle",
                            &handle,
                        ]);
                    },
                    &|| postrouting() == postrouting_loaded,
                ),
                (
                    "an accept rule inserted before extnet's IPv6 drop",
                    &|| {
                        nft(&["insert", "rule", "inet", "extnet", "allow_out", "accept"]);
                    },
                    &|| allow_out() == allow_out_loaded,
                ),
                (
                    // an earlier version's table (an upgrade, or someone's `nft -f` of it)
                    "an ip6 extnet table of an earlier version",
                    &|| {
                        nft(&["add", "table", "ip6", "extnet"]);
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
                    "IPv6 hold rule deleted",
                    &|| {
                        ip(&["-6", "rule", "del", "pref", &ipv6_hold_pref]);
                    },
                    &|| ip(&["-6", "rule", "show"]).contains(&ipv6_rule_text),
                ),
                (
                    "IPv6 hold route flushed",
                    &|| {
                        ip(&["-6", "route", "flush", "table", &hold_table]);
                    },
                    &|| {
                        ip(&["-6", "route", "show", "table", &hold_table])
                            .contains("unreachable default")
                    },
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

/// The capabilities `CapabilityBoundingSet=` of the agent's unit names, as numbers.
fn unit_capabilities() -> Vec<(String, u32)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/systemd/extnet-node-watch.service"
    );
    let unit = std::fs::read_to_string(path).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has a CapabilityBoundingSet=");
    line.split_whitespace()
        .map(|c| {
            let n = match c {
                "CAP_DAC_OVERRIDE" => 1,
                "CAP_NET_ADMIN" => 12,
                "CAP_SYS_ADMIN" => 21,
                "CAP_BPF" => 39,
                other => panic!("{other}: add its number here"),
            };
            (c.to_owned(), n)
        })
        .collect()
}

/// Leaves the calling thread (and what it starts: threads, the `nft` it runs) only `keep`,
/// as systemd's `CapabilityBoundingSet=` leaves a service running as root: every other
/// capability dropped from the bounding set (so an exec cannot get it back) and from the
/// effective and permitted sets.
fn keep_only_capabilities(keep: &[u32]) {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for cap in (0..=last).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes plain integers and changes only this
        // thread's bounding set.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "PR_CAPBSET_DROP {cap}: {}",
            std::io::Error::last_os_error()
        );
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut data = [Data::default(); 2];
    for &c in keep {
        let (word, bit) = ((c / 32) as usize, 1u32 << (c % 32));
        data[word].effective |= bit;
        data[word].permitted |= bit;
    }
    // _LINUX_CAPABILITY_VERSION_3; pid 0: this thread
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    // SAFETY: capset(2) with a valid header and the two data words version 3 wants; it
    // changes only this thread's sets.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

/// Starts the agent on a new node (its own namespace, cgroups and files) with only `caps`,
/// and has it check and load the base once; whether it loaded it. The node is removed after.
fn load_base_with(tag: &str, caps: Vec<u32>) -> Result<bool, String> {
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let node = TestNode::new(tag);
        let path = node.policy_path.clone();
        let loaded = std::thread::scope(|s| {
            s.spawn(move || {
                keep_only_capabilities(&caps);
                Watcher::start(WatchConfig::new(path, NODE))
                    .and_then(|mut w| w.check_and_repair(Trigger::Start))
                    .map(|r| r.is_some_and(|r| r.loaded))
                    .map_err(|e| e.to_string())
            })
            .join()
            .unwrap()
        });
        let in_place = tables_in_place();
        node.finish();
        loaded.map(|l| l && in_place)
    })
}

/// The unit's capabilities are enough for everything the agent does (load the base, put it
/// back after a flush), and each of them is needed: without it, loading the base fails.
#[test]
fn the_agent_runs_with_only_the_capabilities_its_unit_leaves_it() {
    if !is_root(
        "the_agent_runs_with_only_the_capabilities_its_unit_leaves_it",
        "a network namespace, nft tables, rules, links and cgroups",
    ) {
        return;
    }
    let caps = unit_capabilities();
    println!("the unit's CapabilityBoundingSet: {caps:?}");
    // each on a new node: what one attempt created (the cgroup root) would help the next
    for (i, (name, _)) in caps.iter().enumerate() {
        let fewer: Vec<u32> = caps
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, n))| *n)
            .collect();
        let loaded = load_base_with(&format!("wcap{i}"), fewer);
        println!("without {name}: {loaded:?}");
        assert!(
            !matches!(loaded, Ok(true)),
            "the agent needs no {name}: drop it from the unit"
        );
    }
    let keep: Vec<u32> = caps.iter().map(|(_, n)| *n).collect();
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let node = TestNode::new("watchcaps");
        let tables_back = tables_in_place;
        let policy_path = node.policy_path.clone();
        let (repairs_tx, repairs) = mpsc::channel();
        std::thread::scope(|s| {
            let (stop_r, stop_w) = nix::unistd::pipe().unwrap();
            let agent = s.spawn(move || run_agent(policy_path, Some(keep), stop_r, repairs_tx));
            let r = one_repair("start", &repairs);
            assert!(r.loaded, "{r:?}");
            assert!(tables_back());
            nft(&["flush", "ruleset"]);
            time_until("nft flush ruleset", tables_back);
            let r = one_repair("nft flush ruleset", &repairs);
            assert!(r.loaded, "{r:?}");
            drop(stop_w);
            agent
                .join()
                .expect("the agent's thread")
                .expect("the agent ends cleanly when told to stop");
        });
        node.finish();
    });
}

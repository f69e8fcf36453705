//! Kernel test of the node's policy routing for jobs (`extnet::node::ensure_routing`): a job
//! packet reaches a gateway only with the mark that extnet's nft chain gives a packet it has
//! checked; the mark a socket gets when it is created (and any other) goes to the hold table,
//! whose link drops it. So with the nft table gone (`nft flush ruleset`), nothing of a job
//! leaves: fail closed by construction, not by a rule that a flush removes. Checked with the
//! kernel's own route lookup and real sockets, in a private network namespace. As root;
//! without root it prints why it was skipped.

use extnet::kernel::netlink::Netlink;
use extnet::node::ensure_routing;
use extnet::plan::{self, HOLD_LINK};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use support::netns::{addr6, in_private_netns, ip, node_link};
use support::policy::pools_a;
use support::root::is_root;

/// Whether test `name` can run: as root (network namespaces, links, rules and routes), on a
/// kernel with IPv6; says why not otherwise.
fn can_run_ipv6(name: &str) -> bool {
    if !is_root(name, "a network namespace, links, rules and routes") {
        return false;
    }
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        println!("SKIPPED {name}: the kernel has no IPv6");
        return false;
    }
    true
}

/// What the node agent's check finds on node `n1` (address 10.99.0.11), described.
fn drift_of(p: &extnet_policy::Policy, nl: &mut Netlink, idx: u32) -> String {
    let layout = extnet::plan::layout::Layout::new(p, "n1");
    extnet::node::drift::describe(
        &extnet::node::drift::check(p, &layout, nl, idx, "10.99.0.11".parse().unwrap()).unwrap(),
    )
}

/// `ip route get DST mark M`: the device and next hop the kernel picks, or its error.
fn route_get(dst: &str, mark: u32) -> Result<String, String> {
    route_get_with(dst, mark, &[])
}

/// [`route_get`] with more selectors (`from SRC iif DEV`: a packet to forward).
fn route_get_with(dst: &str, mark: u32, more: &[&str]) -> Result<String, String> {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    let mark = format!("{mark:#x}");
    let out = std::process::Command::new("ip")
        .args([family, "route", "get", dst, "mark", &mark])
        .args(more)
        .output()
        .unwrap();
    if out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        let dev = f.iter().position(|w| *w == "dev").map(|i| f[i + 1]);
        let via = f.iter().position(|w| *w == "via").map(|i| f[i + 1]);
        Ok(format!("{} via {}", dev.unwrap_or("-"), via.unwrap_or("-")))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Packets the hold link has dropped (a veth whose peer is down counts them as tx drops),
/// from `ip -s -j link` (this thread's namespace; /sys shows the process's).
fn held() -> u64 {
    let out = ip(&["-s", "-j", "link", "show", "dev", HOLD_LINK]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["tx"]["dropped"].as_u64().unwrap()
}

/// A UDP datagram to `dst` from a socket with mark `mark` (`SO_MARK`, as root), as a job's
/// socket sends it.
fn send_marked(dst: &str, mark: u32) -> std::io::Result<usize> {
    let any = if dst.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let s = UdpSocket::bind(any).unwrap();
    let m = mark as libc::c_int;
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a c_int that
    // lives across the call and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&m as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
    s.send_to(b"extnet", dst)
}

#[test]
fn only_checked_job_packets_reach_a_gateway_and_the_rest_is_held() {
    if !is_root(
        "only_checked_job_packets_reach_a_gateway_and_the_rest_is_held",
        "a network namespace, links, rules and routes",
    ) {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let p = pools_a();
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        // a rule of an earlier extnet at the main rule's priority: the unchecked flag alone
        // to the gateway's table. It must go, or a flushed nft table would open the node.
        ip(&[
            "rule",
            "add",
            "pref",
            "7700",
            "fwmark",
            "0x10000/0x10000",
            "lookup",
            "7700",
        ]);
        // someone else's rule at the same priority stays
        ip(&[
            "rule",
            "add",
            "pref",
            "7700",
            "fwmark",
            "0x40000/0x40000",
            "lookup",
            "100",
        ]);
        ensure_routing(&p, &mut nl, idx).unwrap();
        let rules = ip(&["rule", "show"]);
        assert!(
            !rules.contains("fwmark 0x10000/0x10000 lookup 7700"),
            "{rules}"
        );
        assert!(
            rules.contains("fwmark 0x40000/0x40000 lookup 100"),
            "{rules}"
        );

        let out = "203.0.113.10";
        // checked: through the gateway of the slot's pool
        assert_eq!(
            route_get(out, plan::mark(&p, 0)).unwrap(),
            "eth0 via 10.99.0.254"
        );
        assert_eq!(
            route_get(out, plan::mark(&p, 39)).unwrap(),
            "eth0 via 10.99.0.253"
        );
        // a socket's own mark, unchecked: the hold link, whatever the pool
        for slot in [0, 39, 40] {
            assert_eq!(
                route_get(out, plan::socket_mark(&p, slot)).unwrap(),
                format!("{HOLD_LINK} via -"),
                "slot {slot}"
            );
        }
        // internal destinations stay on the node's path with any mark
        assert_eq!(
            route_get("10.99.0.5", plan::socket_mark(&p, 0)).unwrap(),
            "eth0 via -"
        );
        assert_eq!(
            route_get("10.99.0.5", plan::mark(&p, 0)).unwrap(),
            "eth0 via -"
        );
        // unmarked: the node's own path, which has no way out
        assert!(route_get(out, 0).is_err());

        // a job's socket: its first route lookup works (the job does not fail at once) and
        // the datagram goes to the hold link, where it is dropped
        let before = held();
        send_marked(&format!("{out}:7001"), plan::socket_mark(&p, 1)).unwrap();
        assert_eq!(
            held(),
            before + 1,
            "the datagram was dropped on {HOLD_LINK}"
        );

        // idempotent; and repaired after drift: the hold link deleted, the rules flushed
        ensure_routing(&p, &mut nl, idx).unwrap();
        ip(&["link", "del", HOLD_LINK]);
        ip(&["rule", "del", "pref", "7701"]);
        assert!(
            route_get(out, plan::socket_mark(&p, 1)).is_err(),
            "without the hold routing an unchecked packet has no route at all (still closed)"
        );
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert_eq!(
            route_get(out, plan::socket_mark(&p, 1)).unwrap(),
            format!("{HOLD_LINK} via -")
        );
        // the hold link's peer never forwards, so nothing escapes through it either
        let peer_forwarding = std::fs::read_to_string(format!(
            "/proc/sys/net/ipv4/conf/{}/forwarding",
            plan::HOLD_PEER
        ))
        .unwrap();
        assert_eq!(peer_forwarding.trim(), "0");
    });
}

/// IPv6 is not on the data path: a job's IPv6 packets, with the socket's mark or (forged)
/// the checked one, have no route at all, by an IPv6 rule to the hold table whose IPv6
/// default is `unreachable`: with the nft tables flushed (which takes the `ip6 extnet` drop
/// with them) a granted job still cannot use the node's own IPv6 routes. Unmarked traffic
/// keeps the node's routes; a deleted rule is put back.
#[test]
fn a_jobs_ipv6_has_no_route_whatever_the_nft_tables() {
    if !is_root(
        "a_jobs_ipv6_has_no_route_whatever_the_nft_tables",
        "a network namespace, links, rules and routes",
    ) {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        // the node's own IPv6 way out, as on a dual-stack site
        addr6("eth0", "2001:db8:1::11/64");
        ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::1",
            "dev",
            "eth0",
        ]);
        let p = pools_a();
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        let out = "2001:db8:2::10";
        // before extnet: a job's marked IPv6 follows the node's routes (the hole closed here)
        assert_eq!(
            route_get(out, plan::socket_mark(&p, 1)).unwrap(),
            "eth0 via 2001:db8:1::1"
        );
        ensure_routing(&p, &mut nl, idx).unwrap();
        for mark in [
            plan::socket_mark(&p, 1),
            plan::mark(&p, 1),
            plan::mark(&p, 39),
        ] {
            let err = route_get(out, mark).unwrap_err();
            assert!(err.contains("No route to host"), "mark {mark:#x}: {err}");
        }
        // the node's own traffic and its local addresses keep their routes
        assert_eq!(route_get(out, 0).unwrap(), "eth0 via 2001:db8:1::1");
        assert!(route_get("2001:db8:1::11", plan::socket_mark(&p, 1)).is_ok());
        // a job's socket learns at once (no nft table involved: none is loaded here)
        let e = send_marked(&format!("[{out}]:7001"), plan::socket_mark(&p, 1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EHOSTUNREACH), "{e}");

        // the rule deleted (by hand, by a tool that flushes IPv6 rules): open again, until
        // the base is re-asserted
        ip(&["-6", "rule", "del", "pref", "7701"]);
        assert!(route_get(out, plan::socket_mark(&p, 1)).is_ok());
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert!(route_get(out, plan::socket_mark(&p, 1)).is_err());
        // and the route
        ip(&["-6", "route", "flush", "table", "7699"]);
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert!(nl.has_route6_unreachable_default(7699).unwrap());
        assert!(route_get(out, plan::socket_mark(&p, 1)).is_err());
    });
}

/// With `node.gateway6` and an IPv6 address on the node interface, IPv6 is routed as IPv4:
/// only the checked mark reaches `gateway6`; a socket's own mark goes to the hold table's
/// IPv6 default, `extnet0`, where it is dropped (a job's `connect` succeeds and waits for
/// extnet's chain); internal IPv6 stays on the node's path. The main IPv6 rule deleted:
/// still nothing reaches the gateway (the hold rule catches it), until it is put back.
/// Without an IPv6 address on the interface, IPv6 stays unreachable as without gateway6.
#[test]
fn with_gateway6_only_checked_ipv6_reaches_it_and_the_rest_is_held() {
    if !can_run_ipv6("with_gateway6_only_checked_ipv6_reaches_it_and_the_rest_is_held") {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        let p = support::policy::TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(r#"gateway6 = "fd00:78e7::1""#)
            .node(r#"internal6 = ["fd00:78e7::/48"]"#)
            .policy();
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        let out = "2001:db8:2::10";
        // no IPv6 address on eth0 yet: IPv6 stays closed
        ensure_routing(&p, &mut nl, idx).unwrap();
        for mark in [plan::socket_mark(&p, 1), plan::mark(&p, 1)] {
            let err = route_get(out, mark).unwrap_err();
            assert!(err.contains("No route to host"), "mark {mark:#x}: {err}");
        }
        addr6("eth0", "fd00:78e7::11/64");
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert_eq!(
            route_get(out, plan::mark(&p, 1)).unwrap(),
            "eth0 via fd00:78e7::1"
        );
        assert_eq!(
            route_get(out, plan::socket_mark(&p, 1)).unwrap(),
            format!("{HOLD_LINK} via -")
        );
        // internal IPv6 keeps the node's path with any mark
        for mark in [plan::socket_mark(&p, 1), plan::mark(&p, 1)] {
            assert_eq!(route_get("fd00:78e7::5", mark).unwrap(), "eth0 via -");
        }
        // unmarked: the node's own IPv6 has no way out here
        assert!(route_get(out, 0).is_err());
        // a job's socket: its first route lookup works (the send does not fail at once);
        // the hold link has no neighbour to send it to, so it goes nowhere
        send_marked(&format!("[{out}]:7001"), plan::socket_mark(&p, 1)).unwrap();
        // the main IPv6 rule deleted: a checked packet is held, not sent
        let main = plan::main_rule(&p).priority.to_string();
        let drift = |nl: &mut Netlink| drift_of(&p, nl, idx);
        assert!(!drift(&mut nl).contains("IPv6"), "{}", drift(&mut nl));
        ip(&["-6", "rule", "del", "pref", &main]);
        assert_eq!(
            route_get(out, plan::mark(&p, 1)).unwrap(),
            format!("{HOLD_LINK} via -")
        );
        // the node agent sees it (and repairs what its check reports)
        assert!(
            drift(&mut nl).contains("IPv6 rule fwmark"),
            "{}",
            drift(&mut nl)
        );
        ip(&[
            "-6",
            "route",
            "del",
            "default",
            "table",
            &p.node.route_table.to_string(),
        ]);
        assert!(
            drift(&mut nl).contains("IPv6 route default via fd00:78e7::1"),
            "{}",
            drift(&mut nl)
        );
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert!(!drift(&mut nl).contains("IPv6"), "{}", drift(&mut nl));
        assert_eq!(
            route_get(out, plan::mark(&p, 1)).unwrap(),
            "eth0 via fd00:78e7::1"
        );
        // the hold table's IPv6 routes flushed: no route at all (still closed), then back
        ip(&[
            "-6",
            "route",
            "flush",
            "table",
            &p.node.hold_table.to_string(),
        ]);
        assert!(route_get(out, plan::socket_mark(&p, 1)).is_err());
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert_eq!(
            route_get(out, plan::socket_mark(&p, 1)).unwrap(),
            format!("{HOLD_LINK} via -")
        );
        // the address gone: back to unreachable, and the stale IPv6 routes go
        ip(&["-6", "addr", "del", "fd00:78e7::11/64", "dev", "eth0"]);
        ensure_routing(&p, &mut nl, idx).unwrap();
        for mark in [plan::socket_mark(&p, 1), plan::mark(&p, 1)] {
            let err = route_get(out, mark).unwrap_err();
            assert!(err.contains("No route to host"), "mark {mark:#x}: {err}");
        }
        assert!(!ip(&["-6", "rule", "show"]).contains(&format!("lookup {}", p.node.route_table)));
    });
}

/// A pool with a gateway6 of its own: its checked IPv6 leaves through that gateway and the
/// default pool's through `node.gateway6`, the node agent's check sees a deleted pool rule
/// or route and `ensure_routing` puts it back, and a policy without the pool, or the pools'
/// teardown, leaves no IPv6 rule or route of it.
#[test]
fn a_pools_ipv6_leaves_through_its_own_gateway6_and_its_rules_are_kept_and_removed() {
    if !can_run_ipv6(
        "a_pools_ipv6_leaves_through_its_own_gateway6_and_its_rules_are_kept_and_removed",
    ) {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", None);
        addr6("eth0", "fd00:78e7::11/64");
        let base = support::policy::TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(r#"gateway6 = "fd00:78e7::1""#)
            .node(r#"internal6 = ["fd00:78e7::/48"]"#);
        let p = base
            .clone()
            .profile(
                "bulk",
                &["*"],
                &[
                    r#"gateway6 = "fd00:78e7::2""#,
                    r#"ports = { range = "30000-30511", block_size = 256 }"#,
                ],
            )
            .policy();
        let bulk = p.pool_of_profile("bulk").unwrap().clone();
        let bulk_slot = bulk.first_slot + 1;
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        ensure_routing(&p, &mut nl, idx).unwrap();
        let out = "2001:db8:2::10";
        assert_eq!(
            route_get(out, plan::mark(&p, bulk_slot)).unwrap(),
            "eth0 via fd00:78e7::2"
        );
        assert_eq!(
            route_get(out, plan::mark(&p, 0)).unwrap(),
            "eth0 via fd00:78e7::1"
        );
        // unchecked: held, whatever the pool
        assert_eq!(
            route_get(out, plan::socket_mark(&p, bulk_slot)).unwrap(),
            format!("{HOLD_LINK} via -")
        );
        // internal IPv6 of the pool's jobs stays on the node's path
        assert_eq!(
            route_get("fd00:78e7::5", plan::mark(&p, bulk_slot)).unwrap(),
            "eth0 via -"
        );
        let drift = |p: &extnet_policy::Policy, nl: &mut Netlink| drift_of(p, nl, idx);
        assert!(
            !drift(&p, &mut nl).contains("IPv6"),
            "{}",
            drift(&p, &mut nl)
        );
        // the pool's IPv6 rule deleted: seen, and put back
        let pool_pref = plan::pool_rules(&p)[0].priority.to_string();
        ip(&["-6", "rule", "del", "pref", &pool_pref]);
        assert!(
            drift(&p, &mut nl).contains("IPv6 rule fwmark"),
            "{}",
            drift(&p, &mut nl)
        );
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert!(
            !drift(&p, &mut nl).contains("IPv6"),
            "{}",
            drift(&p, &mut nl)
        );
        // the pool table's IPv6 default deleted: seen, and put back
        let table = bulk.route_table.to_string();
        ip(&["-6", "route", "del", "default", "table", &table]);
        assert!(
            drift(&p, &mut nl).contains("IPv6 route default via fd00:78e7::2"),
            "{}",
            drift(&p, &mut nl)
        );
        ensure_routing(&p, &mut nl, idx).unwrap();
        assert_eq!(
            route_get(out, plan::mark(&p, bulk_slot)).unwrap(),
            "eth0 via fd00:78e7::2"
        );
        // a policy without the pool: its IPv6 rules and routes are stale, then gone
        let q = base.clone().policy();
        assert!(
            drift(&q, &mut nl).contains("stale IPv6 rule"),
            "{}",
            drift(&q, &mut nl)
        );
        ensure_routing(&q, &mut nl, idx).unwrap();
        assert!(
            !drift(&q, &mut nl).contains("IPv6"),
            "{}",
            drift(&q, &mut nl)
        );
        assert!(
            !ip(&["-6", "rule", "show"]).contains(&format!("lookup {table}")),
            "{}",
            ip(&["-6", "rule", "show"])
        );
        assert_eq!(ip(&["-6", "route", "show", "table", &table]).trim(), "");
        // back with the pool, then the pools' teardown leaves no IPv6 rule or route of it
        // (and the main and hold rules to the node's teardown, which this test leaves alone:
        // it also removes the node's cgroups)
        ensure_routing(&p, &mut nl, idx).unwrap();
        let errors = extnet::node::teardown_pool_routing(&p, &mut nl);
        assert!(errors.is_empty(), "{errors:?}");
        let rules = ip(&["-6", "rule", "show"]);
        assert!(!rules.contains(&format!("lookup {table}")), "{rules}");
        assert_eq!(ip(&["-6", "route", "show", "table", &table]).trim(), "");
        assert!(
            rules.contains(&format!("lookup {}", p.node.route_table)),
            "the main rule is not the pools' teardown's: {rules}"
        );
    });
}

/// A netns job's packets, forwarded from its veth, leave only once extnet's chain has marked
/// them, even on a node with default routes of its own (IPv4, and IPv6 as learned from
/// router advertisements): unmarked (the nft table flushed) they are routed by the hold
/// table to `extnet0`, by the source rules of `netns_subnet` and `netns_subnet6`. The node's
/// own packets to the job still reach it; the agent's check sees a deleted source rule (and
/// without it the packet would leave by the node's default route), `ensure_routing` puts it
/// back, and a policy without netns mode removes it.
#[test]
fn unmarked_netns_job_packets_are_held_even_with_a_node_default_route() {
    if !can_run_ipv6("unmarked_netns_job_packets_are_held_even_with_a_node_default_route") {
        return;
    }
    in_private_netns(|| {
        node_link("eth0", "10.99.0.11/24", Some("10.99.0.1"));
        addr6("eth0", "fd00:78e7::11/64");
        ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:78e7::99",
            "dev",
            "eth0",
        ]);
        std::process::Command::new("sysctl")
            .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
            .status()
            .unwrap();
        // a job's veth as the prolog makes it (its peer stands in for the namespace)
        ip(&["link", "add", "xj7", "type", "veth", "peer", "name", "xj7p"]);
        ip(&["addr", "add", "100.64.0.5/30", "dev", "xj7"]);
        addr6("xj7", "fd00:78e8::5/126");
        ip(&["link", "set", "xj7p", "up"]);
        ip(&["link", "set", "xj7", "up"]);
        std::process::Command::new("sysctl")
            .args(["-qw", "net.ipv4.conf.xj7.forwarding=1"])
            .status()
            .unwrap();
        let netns = support::policy::TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(r#"gateway6 = "fd00:78e7::1""#)
            .node(r#"internal6 = ["fd00:78e7::/48"]"#)
            .node(r#"netns_subnet6 = "fd00:78e8::/112""#)
            .profile("ns", &["*"], &[r#"mode = "netns""#]);
        let p = netns.clone().policy();
        let mut nl = Netlink::open().unwrap();
        let idx = nl.index("eth0").unwrap().expect("eth0");
        ensure_routing(&p, &mut nl, idx).unwrap();
        let hold = format!("{HOLD_LINK} via -");
        let cases = [
            ("198.51.100.7", "100.64.0.6", "10.99.0.254"),
            ("2001:db8:2::10", "fd00:78e8::6", "fd00:78e7::1"),
        ];
        for (dst, job, gw) in cases {
            let from = ["from", job, "iif", "xj7"];
            // unmarked: held, not the node's default route
            assert_eq!(
                route_get_with(dst, 0, &from).unwrap(),
                hold,
                "{dst} from {job}"
            );
            // marked by extnet's chain: the gateway
            assert_eq!(
                route_get_with(dst, plan::mark(&p, 1), &from).unwrap(),
                format!("eth0 via {gw}"),
                "{dst} from {job}"
            );
        }
        // the node's own packets to the job reach it (the hold table throws the subnets)
        for (job, host) in [
            ("100.64.0.6", "100.64.0.5"),
            ("fd00:78e8::6", "fd00:78e8::5"),
        ] {
            assert_eq!(
                route_get_with(job, 0, &["from", host]).unwrap(),
                "xj7 via -",
                "{job}"
            );
        }
        let drift = |p: &extnet_policy::Policy, nl: &mut Netlink| drift_of(p, nl, idx);
        assert!(
            !drift(&p, &mut nl).contains("netns hold"),
            "{}",
            drift(&p, &mut nl)
        );
        // a rule deleted: the packet would leave by the node's default route; seen, put back
        let pref = (p.node.rule_priority + 2).to_string();
        for (family, (dst, job, _), node_gw) in [
            ("-4", cases[0], "10.99.0.1"),
            ("-6", cases[1], "fd00:78e7::99"),
        ] {
            ip(&[family, "rule", "del", "pref", &pref]);
            let from = ["from", job, "iif", "xj7"];
            assert_eq!(
                route_get_with(dst, 0, &from).unwrap(),
                format!("eth0 via {node_gw}"),
                "without the rule"
            );
            assert!(
                drift(&p, &mut nl).contains("netns hold rule from"),
                "{}",
                drift(&p, &mut nl)
            );
            ensure_routing(&p, &mut nl, idx).unwrap();
            assert_eq!(route_get_with(dst, 0, &from).unwrap(), hold, "repaired");
        }
        assert!(
            !drift(&p, &mut nl).contains("netns hold"),
            "{}",
            drift(&p, &mut nl)
        );
        // a policy without netns mode: the rules are stale, then gone
        let q = support::policy::TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(r#"gateway6 = "fd00:78e7::1""#)
            .node(r#"internal6 = ["fd00:78e7::/48"]"#)
            .policy();
        assert!(
            drift(&q, &mut nl).contains("stale netns hold rule"),
            "{}",
            drift(&q, &mut nl)
        );
        ensure_routing(&q, &mut nl, idx).unwrap();
        for family in ["-4", "-6"] {
            let rules = ip(&[family, "rule", "show"]);
            assert!(!rules.contains(&format!("{pref}:")), "{rules}");
        }
    });
}

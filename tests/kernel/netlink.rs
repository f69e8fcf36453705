//! Kernel tests for `extnet::kernel::netlink` and `extnet::kernel::netns`: real namespaces, links, addresses,
//! routes and rules, as root.
//!
//! Every test works only inside private network namespaces it creates under its own temporary
//! directory (used as `NETNS_RUN_DIR`); the root namespace's links, routes and rules are never
//! touched. Each test runs its namespace work on a thread of its own, and ends by checking that
//! no namespace file and no mount is left. Without root each test prints why it was skipped.
//!
//! The timings of a per-job setup through this API and through `ip` commands are a benchmark:
//! `extnet-microbench per-job-setup` (`bench/README.md`).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use extnet::kernel::netlink::{FwmarkRule, Netlink, Route, RouteKind};
use extnet::kernel::netns::{self, NetnsError};
use support::netns::{have, ip_in, mounts_under, with_netns_dir};
use support::root::skip;
use support::sorted;
use support::wait;

const TABLE: u32 = 7700;

/// A rule as the node's main one: marked packets to table 7700.
const RULE: FwmarkRule = FwmarkRule {
    fwmark: 0x10000,
    mask: 0x10000,
    table: TABLE,
    priority: 100,
};

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn netns_create_open_enter_delete() {
    with_netns_dir("netns_create_open_enter_delete", |lab| {
        let dir = lab.path().to_owned();
        let original = netns::inode(&netns::current().unwrap());

        let ns = lab.create("job1");
        let ino = netns::inode(&ns);
        assert_ne!(ino, original, "a new namespace");
        assert_eq!(
            netns::inode(&netns::current().unwrap()),
            original,
            "thread is back"
        );
        let reopened = netns::open(&dir, "job1").unwrap().expect("job1 exists");
        assert_eq!(netns::inode(&reopened), ino);
        assert!(netns::open(&dir, "job2").unwrap().is_none());

        // The name is taken: EEXIST, and the existing namespace is untouched.
        let err = netns::create(&dir, "job1").unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(
            netns::inode(&netns::open(&dir, "job1").unwrap().unwrap()),
            ino
        );
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                netns::create(&dir, bad),
                Err(NetnsError::InvalidName { .. })
            ));
        }

        // A process started inside is found by inode, and only it.
        assert_eq!(netns::pids_in(ino), Vec::<i32>::new());
        let mut child = netns::run_in(ns.as_fd(), || Command::new("sleep").arg("30").spawn())
            .unwrap()
            .unwrap();
        assert_eq!(
            netns::inode(&netns::current().unwrap()),
            original,
            "thread is back"
        );
        assert_eq!(netns::pids_in(ino), vec![child.id() as i32]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(netns::pids_in(ino), Vec::<i32>::new());

        // A process whose main thread stays outside while another thread joined the
        // namespace (setns(2) is per thread) holds it just the same, and is found.
        let joiner = concat!(
            "import ctypes, os, sys, threading, time\n",
            "libc = ctypes.CDLL(None, use_errno=True)\n",
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n",
            "def inside():\n",
            "    if libc.setns(fd, 0x40000000) != 0:\n",
            "        os._exit(3)\n",
            "    print('in', flush=True)\n",
            "    time.sleep(30)\n",
            "threading.Thread(target=inside, daemon=True).start()\n",
            "time.sleep(30)\n",
        );
        let mut child = Command::new("python3")
            .args(["-c", joiner])
            .arg(dir.join("job1"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "in", "the thread did not join the namespace");
        let main_ns = std::fs::read_link(format!("/proc/{}/ns/net", child.id())).unwrap();
        assert_ne!(
            main_ns.to_string_lossy(),
            format!("net:[{ino}]"),
            "the main thread stays outside"
        );
        assert_eq!(netns::pids_in(ino), vec![child.id() as i32]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(netns::pids_in(ino), Vec::<i32>::new());

        // run_in() returns the thread also when the closure panics.
        let caught = std::panic::catch_unwind(|| {
            let _ = netns::run_in(ns.as_fd(), || panic!("inside the namespace"));
        });
        assert!(caught.is_err());
        assert_eq!(
            netns::inode(&netns::current().unwrap()),
            original,
            "thread is back"
        );

        // enter() moves the thread for good; going back is the caller's business.
        let here = netns::current().unwrap();
        netns::enter(ns.as_fd()).unwrap();
        assert_eq!(netns::inode(&netns::current().unwrap()), ino);
        netns::enter(here.as_fd()).unwrap();
        assert_eq!(netns::inode(&netns::current().unwrap()), original);

        // A plain file where a namespace should be (a create interrupted by a crash) is not
        // taken for one, and delete() clears it.
        File::create(dir.join("stale")).unwrap();
        assert!(matches!(
            netns::open(&dir, "stale"),
            Err(NetnsError::NotNetns { .. })
        ));
        assert!(netns::delete(&dir, "stale").unwrap());

        assert!(netns::delete(&dir, "job1").unwrap());
        assert!(
            !netns::delete(&dir, "job1").unwrap(),
            "second delete finds nothing"
        );
        assert!(netns::open(&dir, "job1").unwrap().is_none());
        assert_eq!(
            mounts_under(&dir),
            vec![dir.to_str().unwrap().to_owned()],
            "only the dir"
        );
        // Open fds keep the namespace alive after its name is gone.
        assert_eq!(netns::inode(&ns), ino);
        drop((ns, reopened));
    });
}

#[test]
fn veth_addresses_routes_and_rules() {
    with_netns_dir("veth_addresses_routes_and_rules", |lab| {
        // `node` stands for the node's namespace, `job` for the job's.
        let node_ns = lab.create("node");
        let job_ns = lab.create("job");
        let mut node = Netlink::open_in(node_ns.as_fd()).unwrap();
        let mut job = Netlink::open_in(job_ns.as_fd()).unwrap();

        // ip link add ve-j1 type veth peer name eth0 netns job
        node.veth_add("ve-j1", "eth0", job_ns.as_fd(), None)
            .unwrap();
        let node_if = node
            .index("ve-j1")
            .unwrap()
            .expect("host end in the node namespace");
        let job_if = job
            .index("eth0")
            .unwrap()
            .expect("peer in the job namespace");
        assert_eq!(
            node.index("eth0").unwrap(),
            None,
            "peer made directly in the job namespace"
        );
        assert_eq!(job.index("ve-j1").unwrap(), None);
        let again = node
            .veth_add("ve-j1", "eth0", job_ns.as_fd(), None)
            .unwrap_err();
        assert!(again.is_exists(), "{again}");

        // Addresses, idempotent.
        let (node_ip, job_ip) = (ip4("10.99.0.1"), ip4("10.99.0.2"));
        assert!(node.addr_add(node_if, node_ip, 30).unwrap());
        assert!(
            !node.addr_add(node_if, node_ip, 30).unwrap(),
            "already there is Ok(false)"
        );
        assert!(job.addr_add(job_if, job_ip, 30).unwrap());
        assert_eq!(node.addrs_v4(node_if).unwrap(), vec![(node_ip, 30)]);
        assert_eq!(job.addrs_v4(job_if).unwrap(), vec![(job_ip, 30)]);
        assert!(job.addr_add(job_if, ip4("10.99.9.9"), 32).unwrap());
        assert!(job.addr_del(job_if, ip4("10.99.9.9"), 32).unwrap());
        assert!(!job.addr_del(job_if, ip4("10.99.9.9"), 32).unwrap());

        node.set_up(node_if).unwrap();
        job.set_up(job_if).unwrap();
        let lo = job.index("lo").unwrap().unwrap();
        job.set_up(lo).unwrap();

        // Inside the job: default route via the node's end. On the node: the job's address
        // through the veth, a default via a gateway and a throw, in table 7700.
        let job_default = Route {
            table: 254,
            dst: "0.0.0.0/0".parse().unwrap(),
            kind: RouteKind::Unicast {
                gateway: Some(node_ip),
                oif: None,
            },
        };
        job.route_replace(&job_default).unwrap();
        let to_job = Route {
            table: TABLE,
            dst: "10.99.0.2/32".parse().unwrap(),
            kind: RouteKind::Unicast {
                gateway: None,
                oif: Some(node_if),
            },
        };
        let default = Route {
            table: TABLE,
            dst: "0.0.0.0/0".parse().unwrap(),
            kind: RouteKind::Unicast {
                gateway: Some(job_ip),
                oif: Some(node_if),
            },
        };
        let throw = Route {
            table: TABLE,
            dst: "10.0.0.0/8".parse().unwrap(),
            kind: RouteKind::Throw,
        };
        for r in [&to_job, &default, &throw] {
            node.route_replace(r).unwrap();
            node.route_replace(r).unwrap(); // idempotent
        }
        assert_eq!(
            sorted(node.routes(TABLE).unwrap()),
            sorted(vec![to_job, default, throw])
        );
        let job_main = job.routes(254).unwrap();
        assert!(
            job_main.iter().any(|r| job_default.matches(r)),
            "{job_main:?}"
        );
        assert!(node.routes(254).unwrap().iter().all(|r| r.table == 254));

        // Replace changes the gateway of the same destination instead of adding a second one.
        let unreachable = Route {
            table: TABLE,
            dst: "0.0.0.0/0".parse().unwrap(),
            kind: RouteKind::Unreachable,
        };
        node.route_replace(&unreachable).unwrap();
        assert_eq!(
            sorted(node.routes(TABLE).unwrap()),
            sorted(vec![to_job, unreachable, throw])
        );
        node.route_replace(&default).unwrap();

        // The pair carries packets: a datagram from the job reaches the node, from the job's
        // address. Sockets stay in the namespace they were made in.
        let rx = netns::run_in(node_ns.as_fd(), || UdpSocket::bind("10.99.0.1:0"))
            .unwrap()
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = netns::run_in(job_ns.as_fd(), || UdpSocket::bind("0.0.0.0:0"))
            .unwrap()
            .unwrap();
        tx.send_to(b"extnet", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = rx.recv_from(&mut buf).expect("datagram over the veth pair");
        assert_eq!((&buf[..n], from.ip()), (&b"extnet"[..], IpAddr::V4(job_ip)));
        drop((rx, tx));

        // The fwmark rule, twice: added once.
        let rule = RULE;
        assert!(node.rule_ensure(&rule).unwrap());
        assert!(
            !node.rule_ensure(&rule).unwrap(),
            "identical rule is not added twice"
        );
        assert_eq!(node.rules_v4().unwrap(), vec![rule]);
        let other = FwmarkRule {
            priority: 101,
            ..rule
        };
        assert!(
            node.rule_ensure(&other).unwrap(),
            "another priority is another rule"
        );
        assert_eq!(node.rules_v4().unwrap(), vec![rule, other]);
        assert!(
            job.rules_v4().unwrap().is_empty(),
            "rules are per namespace"
        );

        // Delete everything, twice, and check it is gone.
        assert!(node.rule_del(&other).unwrap());
        assert!(node.rule_del(&rule).unwrap());
        assert!(!node.rule_del(&rule).unwrap());
        assert!(node.rules_v4().unwrap().is_empty());
        for r in [&to_job, &default, &throw] {
            assert!(node.route_del(r).unwrap(), "{r}");
            assert!(!node.route_del(r).unwrap(), "{r}");
        }
        assert!(node.routes(TABLE).unwrap().is_empty());
        assert!(job.route_del(&job_default).unwrap());
        assert!(node.delete("ve-j1").unwrap());
        assert!(!node.delete("ve-j1").unwrap());
        assert_eq!(node.index("ve-j1").unwrap(), None);
        assert_eq!(
            job.index("eth0").unwrap(),
            None,
            "deleting one end deletes the pair"
        );

        // Dropping the job's namespace reaps a pair without an explicit delete (the kernel
        // does it asynchronously, so wait for it a little).
        node.veth_add("ve-j2", "eth0", job_ns.as_fd(), None)
            .unwrap();
        assert!(node.index("ve-j2").unwrap().is_some());
        drop(job);
        drop(job_ns);
        assert!(netns::delete(lab.path(), "job").unwrap());
        wait::until(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || match node.index("ve-j2").unwrap() {
                Some(_) => Err("ve-j2 outlived its peer's namespace".to_owned()),
                None => Ok(()),
            },
        );

        drop(node);
        drop(node_ns);
        assert!(netns::delete(lab.path(), "node").unwrap());
    });
}

#[test]
fn errors_name_the_operation_and_absent_objects_are_not_errors() {
    with_netns_dir(
        "errors_name_the_operation_and_absent_objects_are_not_errors",
        |lab| {
            let ns = lab.create("errs");
            let mut nl = Netlink::open_in(ns.as_fd()).unwrap();

            // A gateway on no connected subnet: the error names the route and the errno.
            let route = Route {
                table: TABLE,
                dst: "0.0.0.0/0".parse().unwrap(),
                kind: RouteKind::Unicast {
                    gateway: Some(ip4("10.99.0.254")),
                    oif: None,
                },
            };
            let err = nl.route_replace(&route).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("replace route default via 10.99.0.254 table 7700: ENETUNREACH"),
                "{text}"
            );
            assert_eq!(err.errno(), Some(nix::errno::Errno::ENETUNREACH));

            // Link index that does not exist.
            let err = nl.set_up(999_999).unwrap_err();
            assert!(err.is_not_found(), "{err}");
            assert!(err.to_string().contains("index 999999"), "{err}");
            let err = nl.addr_add(999_999, ip4("10.1.1.1"), 24).unwrap_err();
            assert!(err.is_not_found(), "{err}");

            // Absent objects: None / false / empty, never an error.
            assert_eq!(nl.index("nope0").unwrap(), None);
            assert!(!nl.delete("nope0").unwrap());
            assert!(!nl.route_del(&route).unwrap());
            assert!(
                nl.routes(4242).unwrap().is_empty(),
                "a table that does not exist is empty"
            );
            let rule = FwmarkRule {
                fwmark: 1,
                mask: 1,
                table: 4242,
                priority: 4242,
            };
            assert!(!nl.rule_del(&rule).unwrap());
            let lo = nl.index("lo").unwrap().unwrap();
            assert!(!nl.addr_del(lo, ip4("10.1.1.1"), 24).unwrap());

            // The socket stays usable after all those errors.
            assert_eq!(nl.index("lo").unwrap(), Some(lo));
            drop(nl);
            drop(ns);
            assert!(netns::delete(lab.path(), "errs").unwrap());
        },
    );
}

#[test]
fn dumps_span_many_datagrams_and_filter_by_table() {
    with_netns_dir("dumps_span_many_datagrams_and_filter_by_table", |lab| {
        let ns = lab.create("big");
        let mut nl = Netlink::open_in(ns.as_fd()).unwrap();
        // 3000 routes are about 200 KB of dump: several 32 KiB datagrams.
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let dst = format!("10.{}.{}.0/24", 100 + i / 256, i % 256);
            let r = Route {
                table: TABLE,
                dst: dst.parse().unwrap(),
                kind: RouteKind::Throw,
            };
            nl.route_replace(&r).unwrap();
            want.push(r);
        }
        let other = Route {
            table: TABLE + 1,
            dst: "10.0.0.0/8".parse().unwrap(),
            kind: RouteKind::Throw,
        };
        nl.route_replace(&other).unwrap();
        assert_eq!(sorted(nl.routes(TABLE).unwrap()), sorted(want));
        assert_eq!(nl.routes(TABLE + 1).unwrap(), vec![other]);
        drop(nl);
        drop(ns);
        assert!(netns::delete(lab.path(), "big").unwrap());
    });
}

#[test]
fn objects_are_what_ip_shows() {
    if !have("ip") {
        skip(
            "objects_are_what_ip_shows",
            "needs the `ip` command (iproute2) to compare with",
        );
        return;
    }
    with_netns_dir("objects_are_what_ip_shows", |lab| {
        let ns = lab.create("cmp");
        let peer_ns = lab.create("cmp-peer");
        let mut nl = Netlink::open_in(ns.as_fd()).unwrap();
        nl.veth_add("ve-cmp", "eth0", peer_ns.as_fd(), None)
            .unwrap();
        let ifx = nl.index("ve-cmp").unwrap().unwrap();
        nl.addr_add(ifx, ip4("10.99.0.1"), 30).unwrap();
        nl.set_up(ifx).unwrap();
        for r in [
            Route {
                table: TABLE,
                dst: "0.0.0.0/0".parse().unwrap(),
                kind: RouteKind::Unicast {
                    gateway: Some(ip4("10.99.0.2")),
                    oif: None,
                },
            },
            Route {
                table: TABLE,
                dst: "10.99.0.2/32".parse().unwrap(),
                kind: RouteKind::Unicast {
                    gateway: None,
                    oif: Some(ifx),
                },
            },
            Route {
                table: TABLE,
                dst: "10.0.0.0/8".parse().unwrap(),
                kind: RouteKind::Throw,
            },
        ] {
            nl.route_replace(&r).unwrap();
        }
        let shown = ip_in(&ns, &["route", "show", "table", "7700"]);
        let lines: Vec<&str> = shown.lines().map(str::trim).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("default via 10.99.0.2 dev ve-cmp")),
            "{shown}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("10.99.0.2 dev ve-cmp") && l.contains("scope link")),
            "{shown}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("throw 10.0.0.0/8")),
            "{shown}"
        );
        assert_eq!(lines.len(), 3, "{shown}");
        let addrs = ip_in(&ns, &["-4", "-o", "addr", "show", "dev", "ve-cmp"]);
        assert!(addrs.contains("inet 10.99.0.1/30"), "{addrs}");
        assert!(ip_in(&peer_ns, &["-d", "-o", "link", "show", "eth0"]).contains("veth"));

        // Our rule as `ip rule` shows it, and a rule `ip rule add` made counts as ours.
        let rule = RULE;
        assert!(nl.rule_ensure(&rule).unwrap());
        let rules = ip_in(&ns, &["-4", "rule", "show"]);
        assert!(
            rules.contains("100:\tfrom all fwmark 0x10000/0x10000 lookup 7700"),
            "{rules}"
        );
        let by_ip = FwmarkRule {
            fwmark: 0x20000,
            mask: 0x30000,
            table: 7701,
            priority: 200,
        };
        ip_in(
            &ns,
            &[
                "rule",
                "add",
                "fwmark",
                "0x20000/0x30000",
                "lookup",
                "7701",
                "priority",
                "200",
            ],
        );
        assert_eq!(nl.rules_v4().unwrap(), vec![rule, by_ip]);
        assert!(
            !nl.rule_ensure(&by_ip).unwrap(),
            "the rule made by ip is found identical"
        );
        // A rule with one more selector is not the plain fwmark rule.
        ip_in(
            &ns,
            &[
                "rule", "add", "not", "fwmark", "0x1/0x1", "lookup", "7702", "priority", "300",
            ],
        );
        assert_eq!(nl.rules_v4().unwrap(), vec![rule, by_ip]);

        drop(nl);
        drop((ns, peer_ns));
        assert!(netns::delete(lab.path(), "cmp").unwrap());
        assert!(netns::delete(lab.path(), "cmp-peer").unwrap());
    });
}

/// A netns job's veth pair (both ends) takes the MTU of the node's interface towards the
/// gateway (`node.interface`), or `node.netns_mtu` when the policy sets one; with neither
/// (the interface gone) the prolog fails and says what to fix.
#[test]
fn netns_job_veth_takes_the_mtu_of_the_node_interface_or_the_policy() {
    use extnet::plan::layout::Layout;
    use support::netns::{in_private_netns, ip, node_link};
    use support::policy::TestPolicy;
    with_netns_dir(
        "netns_job_veth_takes_the_mtu_of_the_node_interface_or_the_policy",
        |lab| {
            in_private_netns(|| {
                node_link("eth0", "10.99.0.11/24", Some("10.99.0.254"));
                // a node link smaller than the kernel's default of 1500 for a new veth
                ip(&["link", "set", "eth0", "mtu", "1400"]);
                let base = TestPolicy::new("eth0", "10.99.0", "20000-20767")
                    .node(&format!("netns_dir = \"{}\"", lab.path().display()))
                    .ports("block_size = 256");
                let mut nl = Netlink::open().unwrap();
                let job = 7;
                let both_ends = |policy: &extnet_policy::Policy, nl: &mut Netlink| {
                    let layout = Layout::new(policy, "w1");
                    extnet::job::netns::setup(policy, &layout, nl, job, 1, false).unwrap();
                    let ns = netns::open(lab.path(), &layout.netns_name(job))
                        .unwrap()
                        .expect("the job's namespace");
                    let mut jnl = Netlink::open_in(ns.as_fd()).unwrap();
                    let mtus = (
                        nl.mtu(&Layout::veth_name(job)).unwrap(),
                        jnl.mtu("eth0").unwrap(),
                    );
                    drop((jnl, ns));
                    assert!(
                        extnet::job::netns::teardown(&layout, nl, job)
                            .unwrap()
                            .found
                    );
                    mtus
                };
                assert_eq!(
                    both_ends(&base.policy(), &mut nl),
                    (Some(1400), Some(1400)),
                    "the node's interface's MTU on both ends"
                );
                // a jumbo link: the job uses it whole
                ip(&["link", "set", "eth0", "mtu", "9000"]);
                assert_eq!(both_ends(&base.policy(), &mut nl), (Some(9000), Some(9000)));
                let fixed = base.clone().node("netns_mtu = 1300").policy();
                assert_eq!(
                    both_ends(&fixed, &mut nl),
                    (Some(1300), Some(1300)),
                    "the policy's MTU wins"
                );
                ip(&["link", "del", "eth0"]);
                let layout = Layout::new(&base.policy(), "w1");
                let e = extnet::job::netns::setup(&base.policy(), &layout, &mut nl, job, 1, false)
                    .unwrap_err();
                assert!(
                    e.to_string().contains("node.interface") && e.to_string().contains("netns_mtu"),
                    "{e}"
                );
                assert!(
                    !extnet::job::netns::teardown(&layout, &mut nl, job)
                        .unwrap()
                        .found
                );
            })
        },
    );
}

/// A netns job's task sees the job's resolv.conf as `/etc/resolv.conf` in a mount namespace
/// of its own (`extnet::job::task::bind_resolv_conf`, run where the plugin runs it: in the
/// forked child before exec), while the machine's file stays as it is; a mount the node makes
/// afterwards still reaches the task (`/` is a slave of the node's mounts).
#[test]
fn a_task_sees_the_jobs_resolv_conf_and_later_node_mounts() {
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    if !support::root::is_root(
        "a_task_sees_the_jobs_resolv_conf_and_later_node_mounts",
        "mount namespaces and mounts",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("job.conf");
    std::fs::write(&own, "nameserver 192.0.2.53\n").unwrap();
    let later = dir.path().join("later");
    std::fs::create_dir(&later).unwrap();
    let go = dir.path().join("go");
    let before = std::fs::read("/etc/resolv.conf").ok();
    // the test's directory a shared mount, as `/` is on a systemd node (on this machine it may
    // be private, and a private mount propagates nothing to a slave)
    let bind = |src: Option<&Path>, flags| {
        nix::mount::mount(src, dir.path(), None::<&str>, flags, None::<&str>).unwrap()
    };
    bind(Some(dir.path()), nix::mount::MsFlags::MS_BIND);
    bind(None, nix::mount::MsFlags::MS_SHARED);
    let script = format!(
        "cat /etc/resolv.conf; while [ ! -e {go} ]; do sleep 0.05; done; cat {later}/seen",
        go = go.display(),
        later = later.display()
    );
    let own_in_child = own.clone();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script])
        .stdout(std::process::Stdio::piped());
    // SAFETY: the closure only makes system calls (unshare, mount) and builds an error value
    // on failure, as the plugin does in the forked task.
    unsafe {
        cmd.pre_exec(move || {
            extnet::job::task::bind_resolv_conf(&own_in_child)
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
    }
    let child = cmd.spawn().expect("spawn the task");
    // a mount the node makes while the task runs
    nix::mount::mount(
        Some("tmpfs"),
        &later,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(later.join("seen"), "node mount\n").unwrap();
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = nix::mount::umount2(&later, nix::mount::MntFlags::MNT_DETACH);
    let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text, "nameserver 192.0.2.53\nnode mount\n");
    assert_eq!(
        std::fs::read("/etc/resolv.conf").ok(),
        before,
        "the machine's /etc/resolv.conf is untouched"
    );
    assert_eq!(mounts_under(dir.path()), Vec::<String>::new());
}

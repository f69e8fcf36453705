//! `per-job-setup`: one job's network setup in its own namespace, through
//! `extnet::kernel::{netns, netlink}` (with the time of each step) and through 8 `ip` commands
//! (one fork+exec each, as sites' shell scripts do); and the teardown, `netns::delete`.
//!
//! Everything happens in private namespaces: a "node" namespace and the jobs' namespaces in
//! temporary namespace directories, and for `ip` a private mount namespace with its own
//! `/run` (so `ip netns add` writes nothing of the machine's). All of it is removed, and
//! checked to be gone, at the end.

use crate::stats::show;
use extnet::kernel::netlink::{Netlink, Route, RouteKind};
use extnet::kernel::netns;
use ipnet::Ipv4Net;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::netns::{have, in_thread, NetnsDir};
use support::wait;

const TABLE: u32 = 7700;
const RUNS: u32 = 100;
const WARMUP: u32 = 5;

/// One job's setup through extnet: namespace, veth with the peer made inside it, two
/// addresses, both ends up, the job's default route and the node's route to the job. Pushes
/// the time of each step onto `steps`.
fn setup_api(
    dir: &Path,
    node_ns: &File,
    i: u32,
    steps: &mut Vec<(&'static str, Duration)>,
) -> File {
    let mut t = Instant::now();
    let mut step = |name: &'static str| {
        steps.push((name, t.elapsed()));
        t = Instant::now();
    };
    let name = format!("bench{i}");
    let veth = format!("ve-b{i}");
    let (host_ip, job_ip) = (
        Ipv4Addr::new(10, 98, i as u8, 1),
        Ipv4Addr::new(10, 98, i as u8, 2),
    );
    let job_ns = netns::create(dir, &name).unwrap();
    step("netns::create");
    let mut node = Netlink::open_in(node_ns.as_fd()).unwrap();
    let mut job = Netlink::open_in(job_ns.as_fd()).unwrap();
    step("2 x Netlink::open_in");
    node.veth_add(&veth, "eth0", job_ns.as_fd(), None).unwrap();
    step("veth_add");
    let host_if = node.index(&veth).unwrap().unwrap();
    let job_if = job.index("eth0").unwrap().unwrap();
    step("2 x index");
    node.addr_add(host_if, host_ip, 30).unwrap();
    job.addr_add(job_if, job_ip, 30).unwrap();
    step("2 x addr_add");
    node.set_up(host_if).unwrap();
    job.set_up(job_if).unwrap();
    step("2 x set_up");
    job.route_replace(&Route {
        table: 254,
        dst: "0.0.0.0/0".parse().unwrap(),
        kind: RouteKind::Unicast {
            gateway: Some(host_ip),
            oif: None,
        },
    })
    .unwrap();
    node.route_replace(&Route {
        table: TABLE,
        dst: Ipv4Net::new(job_ip, 32).unwrap(),
        kind: RouteKind::Unicast {
            gateway: None,
            oif: Some(host_if),
        },
    })
    .unwrap();
    step("2 x route_replace");
    job_ns
}

/// The same setup with `ip` commands, one fork+exec each, run from the node's namespace.
fn setup_ip(i: u32) {
    let name = format!("bench{i}");
    let veth = format!("ve-b{i}");
    let (host, job) = (format!("10.98.{i}.1"), format!("10.98.{i}.2"));
    let (host_net, job_net) = (format!("{host}/30"), format!("{job}/30"));
    let cmds: [&[&str]; 8] = [
        &["netns", "add", &name],
        &[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ],
        &["addr", "add", &host_net, "dev", &veth],
        &["-n", &name, "addr", "add", &job_net, "dev", "eth0"],
        &["link", "set", "dev", &veth, "up"],
        &["-n", &name, "link", "set", "dev", "eth0", "up"],
        &["-n", &name, "route", "replace", "default", "via", &host],
        &["route", "replace", &job, "dev", &veth, "table", "7700"],
    ];
    for args in cmds {
        let st = Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }
}

pub fn run() {
    in_thread(|| {
        let lab = NetnsDir::temporary();
        let jobs = NetnsDir::temporary();
        let node_ns = lab.create("node");

        // extnet
        let (mut setup, mut teardown, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..WARMUP + RUNS {
            let mut these = Vec::new();
            let t = Instant::now();
            let job_ns = setup_api(jobs.path(), &node_ns, i, &mut these);
            let t_setup = t.elapsed();
            drop(job_ns);
            let t = Instant::now();
            assert!(netns::delete(jobs.path(), &format!("bench{i}")).unwrap());
            let t_teardown = t.elapsed();
            if i >= WARMUP {
                steps.extend(these);
                setup.push(t_setup);
                teardown.push(t_teardown);
            }
        }
        jobs.finish();
        // Let the kernel reap the pairs before the next round reuses names and addresses.
        let mut node = Netlink::open_in(node_ns.as_fd()).unwrap();
        wait::until(Duration::from_secs(30), Duration::from_millis(20), || {
            let left =
                (0..WARMUP + RUNS).any(|i| node.index(&format!("ve-b{i}")).unwrap().is_some());
            if left {
                Err("pairs not reaped".to_owned())
            } else {
                Ok(())
            }
        });
        drop(node);

        // `ip`, on a thread with a private mount namespace and its own /run, so that
        // `ip netns add` writes /run/netns there and nothing of the machine's; the commands
        // inherit that thread's mount and network namespaces. The mount namespace ends with
        // the thread.
        let mut with_ip = Vec::new();
        if have("ip") {
            in_thread(|| {
                use nix::mount::{mount, MsFlags};
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
                mount(None::<&str>, "/", None::<&str>, private, None::<&str>).unwrap();
                mount(
                    Some("tmpfs"),
                    "/run",
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .unwrap();
                netns::enter(node_ns.as_fd()).unwrap();
                for i in 0..WARMUP + RUNS {
                    let t = Instant::now();
                    setup_ip(i);
                    if i >= WARMUP {
                        with_ip.push(t.elapsed());
                    }
                    let del = Command::new("ip")
                        .args(["netns", "del", &format!("bench{i}")])
                        .status();
                    assert!(del.unwrap().success());
                }
            });
        }
        drop(node_ns);
        assert!(netns::delete(lab.path(), "node").unwrap());
        lab.finish();

        show("per-job setup, extnet::kernel::netlink + netns", setup);
        let mut names: Vec<&str> = steps.iter().map(|(n, _)| *n).collect();
        names.dedup();
        for name in names.iter().take(7) {
            let times: Vec<Duration> = steps
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, d)| *d)
                .collect();
            show(&format!("  step {name}"), times);
        }
        show("per-job teardown, netns::delete (umount+unlink)", teardown);
        if with_ip.is_empty() {
            println!("per-job setup with `ip` commands: not measured, no `ip` (iproute2) here");
        } else {
            show("per-job setup, 8 `ip` commands (fork+exec)", with_ip);
        }
    });
}

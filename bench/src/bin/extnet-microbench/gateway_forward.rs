//! `gateway-forward`: the per-packet cost of a NAT gateway's ruleset, with the policy of 10
//! nodes and with the seed site's 27,648 (`gateway_render::policy_text`): iperf3 from node
//! n1's address through the gateway's SNAT to an outside host, TCP throughput and UDP
//! packets/s of 64-byte datagrams, the two sizes taking turns over several rounds; the ratio
//! big/small.
//!
//! Two labs, one per size, each of three private namespaces in a temporary namespace
//! directory: `node` (n1's address, a default route to the virtual address, its ephemeral
//! ports and iperf3's client port within n1's slice), `gw` (the cluster and public links,
//! the gateway's own addresses, the virtual address and its public addresses added as
//! keepalived adds them, forwarding on, the ruleset of `extnet gateway render` loaded with
//! `nft -f`), `out` (`iperf3 -s`, a route back to the public addresses). Every run checks
//! what the outside host saw (the server's own report): n1's public address and its port.
//! The servers are stopped by pid and the namespaces removed at the end, also when a check
//! fails.

use crate::gateway_render::policy_text;
use extnet::plan::gateway;
use extnet_policy::Policy;
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::netns::{command_in, have, in_thread, ip_in, sh_in as sh, NetnsDir};

const ROUNDS: usize = 9;
/// The sizes compared: the small one first.
pub(crate) const SIZES: [u32; 2] = [10, 27_648];
/// The node that sends: in both policies, with the same address, slice and public address.
const NODE: &str = "n1";
pub(crate) const OUTSIDE: &str = "203.0.113.10";
const PORT: &str = "5201";
/// Seconds of a TCP run, after one second left out (`-O 1`).
const TCP_SECS: &str = "2";
/// Seconds of a UDP run (iperf3 3.12 miscounts UDP datagrams with `-O`).
const UDP_SECS: &str = "2";
/// Bytes of UDP payload of a datagram.
const DATAGRAM: u32 = 64;

/// n1's translation: its address, its slice and the public address it leaves as.
#[derive(Clone, Copy)]
pub(crate) struct Slice {
    pub(crate) node: Ipv4Addr,
    pub(crate) first: u16,
    pub(crate) last: u16,
    pub(crate) public: Ipv4Addr,
}

/// An `iperf3 -s`, stopped (SIGKILL to its pid) and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One size's three namespaces and its server. The server goes first when dropped, then the
/// namespaces with the directory.
pub(crate) struct Lab {
    pub(crate) nodes: u32,
    server: Option<Server>,
    pub(crate) node: File,
    pub(crate) gw: File,
    pub(crate) out: File,
    dir: NetnsDir,
}

impl Lab {
    pub(crate) fn finish(mut self) {
        drop(self.server.take());
        let Lab {
            node, gw, out, dir, ..
        } = self;
        drop((node, gw, out));
        for n in ["node", "gw", "out"] {
            assert!(
                extnet::kernel::netns::delete(dir.path(), n).unwrap(),
                "namespace {n} gone before its deletion"
            );
        }
        dir.finish();
    }
}

/// Runs `cmd` in `ns` with `input` on its stdin; panics with its stderr when it fails.
fn piped(ns: &File, cmd: &mut Command, input: &str) {
    let mut child = command_in(cmd, ns)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The lab of the policy of `nodes` nodes, gateway gw1; and n1's slice in it.
pub(crate) fn lab(nodes: u32) -> (Lab, Slice) {
    let policy = Policy::from_toml(&policy_text(nodes), "bench").unwrap();
    let rendering = gateway::render(
        &policy,
        "gw1",
        Path::new("/etc/extnet/gateway"),
        Path::new(gateway::STATE_DIR),
    )
    .unwrap();
    let (g, h) = gateway::host(&policy, "gw1").unwrap();
    let e = policy.nat_entries(NODE).unwrap().remove(0);
    let slice = Slice {
        node: e.node_addr,
        first: e.ports.0,
        last: e.ports.1,
        public: e.public,
    };
    let vip = &g.vips[e.vip];
    assert!(vip.priority_of(&h.name).is_some(), "gw1 holds n1's address");
    let cplen = h.cluster_address.prefix_len();

    let dir = NetnsDir::temporary();
    let (node, gw, out) = (dir.create("node"), dir.create("gw"), dir.create("out"));
    let mut lab = Lab {
        nodes,
        server: None,
        node,
        gw,
        out,
        dir,
    };
    let path = |n: &str| lab.dir.path().join(n).display().to_string();
    for (name, peer) in [(&h.cluster_interface, "node"), (&h.public_interface, "out")] {
        ip_in(
            &lab.gw,
            &[
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &path(peer),
            ],
        );
    }
    for ns in [&lab.node, &lab.gw, &lab.out] {
        ip_in(ns, &["link", "set", "lo", "up"]);
    }
    // the node: its address in the cluster network, a default route to its virtual address;
    // the kernel's ephemeral ports (iperf3's control connection) in the upper half of its
    // slice, the data connection's port (--cport) in the lower half
    ip_in(
        &lab.node,
        &[
            "addr",
            "add",
            &format!("{}/{cplen}", slice.node),
            "dev",
            "eth0",
        ],
    );
    ip_in(&lab.node, &["link", "set", "eth0", "up"]);
    ip_in(
        &lab.node,
        &["route", "add", "default", "via", &vip.address.to_string()],
    );
    let mid = slice.first + (slice.last - slice.first) / 2;
    sh(
        &lab.node,
        &format!(
            "sysctl -qw net.ipv4.ip_local_port_range='{} {}'",
            mid + 1,
            slice.last
        ),
    );
    // the gateway: its own addresses, and the virtual address and its public addresses as
    // keepalived's virtual_ipaddress adds them (`extnet::plan::gateway::keepalived`)
    let mut batch = format!(
        "addr add {} dev {c}\naddr add {}/{cplen} dev {c}\naddr add {} dev {p}\n",
        h.cluster_address,
        vip.address,
        h.public_address,
        c = h.cluster_interface,
        p = h.public_interface,
    );
    for a in &vip.public {
        batch += &format!(
            "addr add {a}/{} dev {}\n",
            h.public_address.prefix_len(),
            h.public_interface
        );
    }
    for i in [&h.cluster_interface, &h.public_interface] {
        batch += &format!("link set {i} up\n");
    }
    piped(&lab.gw, Command::new("ip").args(["-batch", "-"]), &batch);
    sh(&lab.gw, "sysctl -qw net.ipv4.ip_forward=1");
    piped(
        &lab.gw,
        Command::new("nft").args(["-f", "-"]),
        &rendering.files[0].1,
    );
    let loaded = sh(&lab.gw, "nft list map inet extnet_gw node_public")
        .lines()
        .filter(|l| l.contains(" . ") && l.contains(" : "))
        .count();
    assert!(
        loaded >= nodes as usize / 2,
        "{loaded} elements loaded in node_public of {nodes} nodes"
    );
    // the outside host: its address, a route back to the public addresses, the server
    ip_in(
        &lab.out,
        &["addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"],
    );
    ip_in(&lab.out, &["link", "set", "eth0", "up"]);
    for a in &vip.public {
        ip_in(
            &lab.out,
            &[
                "route",
                "add",
                &format!("{a}/32"),
                "via",
                &h.public_address.addr().to_string(),
            ],
        );
    }
    let server = command_in(
        Command::new("iperf3").args(["-s", "-J", "-B", OUTSIDE, "-p", PORT]),
        &lab.out,
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start iperf3 -s");
    lab.server = Some(Server(server));
    support::wait::until(Duration::from_secs(5), Duration::from_millis(20), || {
        let o = command_in(Command::new("ss").arg("-Hltn"), &lab.out)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&o.stdout).contains(&format!("{OUTSIDE}:{PORT}")) {
            Ok(())
        } else {
            Err(format!("iperf3 -s of the {nodes}-node lab not listening"))
        }
    });
    (lab, slice)
}

/// One iperf3 run from n1 (data connection from `cport`): TCP throughput received in bit/s,
/// or with `udp` the 64-byte datagrams received per second. Checks that the outside host saw
/// n1's public address and `cport`.
fn run_once(lab: &Lab, slice: Slice, cport: u16, udp: bool) -> f64 {
    let (node, cport_s) = (slice.node.to_string(), cport.to_string());
    let len = DATAGRAM.to_string();
    let mut args = vec![
        "-c",
        OUTSIDE,
        "-p",
        PORT,
        "-B",
        &node,
        "--cport",
        &cport_s,
        "--connect-timeout",
        "2000",
        "-J",
        "--get-server-output",
    ];
    if udp {
        args.extend(["-u", "-b", "0", "-l", &len, "-t", UDP_SECS]);
    } else {
        args.extend(["-t", TCP_SECS, "-O", "1"]);
    }
    let o = client(lab, &args);
    let j: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 {args:?}: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert!(
        o.status.success() && j.get("error").is_none(),
        "iperf3 {args:?} in the {}-node lab: {}",
        lab.nodes,
        j["error"]
    );
    // what the outside host saw: the server's own report of the connection
    let seen = &j["server_output_json"]["start"]["connected"][0];
    assert_eq!(
        (seen["remote_host"].as_str(), seen["remote_port"].as_u64()),
        (Some(slice.public.to_string().as_str()), Some(cport.into())),
        "the outside host saw {seen}, not n1's public address and port"
    );
    let end = &j["end"];
    if udp {
        // the receiver's bytes (the server's report) over the receiver's time
        let sum = &end["sum_received"];
        let (bytes, secs) = (
            sum["bytes"].as_f64().unwrap_or(0.0),
            sum["seconds"].as_f64().unwrap_or(0.0),
        );
        assert!(secs > 0.0 && bytes > 0.0, "no UDP datagram received: {sum}");
        bytes / DATAGRAM as f64 / secs
    } else {
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(bps > 0.0, "no TCP throughput: {end}");
        bps
    }
}

/// Runs iperf3 `args` in the lab's node namespace; stops it (SIGKILL to its pid) and
/// panics when it has not ended within its time and 10 s more (a connection the gateway
/// drops is retried for minutes).
fn client(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut child = command_in(Command::new("iperf3").args(args), &lab.node)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iperf3 -c");
    let limit = Duration::from_secs(TCP_SECS.parse::<u64>().unwrap() + 1 + 10);
    let status = support::wait::poll(limit, Duration::from_millis(50), || {
        match child.try_wait().unwrap() {
            Some(st) => Ok(st),
            None => Err(format!("iperf3 {args:?} in the {}-node lab", lab.nodes)),
        }
    });
    let status = status.unwrap_or_else(|e| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{e}: not done within {limit:?}, stopped")
    });
    let mut out = Vec::new();
    let mut err = Vec::new();
    stdout.seek(std::io::SeekFrom::Start(0)).unwrap();
    stdout.read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    std::process::Output {
        status,
        stdout: out,
        stderr: err,
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One line: the sizes' medians, and the ratio big/small (median, lowest and highest of the
/// rounds' ratios, the two figures of a round measured one after the other).
pub(crate) fn report(what: &str, unit: &str, scale: f64, small: &[f64], big: &[f64]) {
    let ratios: Vec<f64> = small.iter().zip(big).map(|(s, b)| b / s).collect();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    println!(
        "{what:<10} {:>6} nodes {:>9.3} {unit}   {:>6} nodes {:>9.3} {unit}   ratio big/small {:.3} (rounds {lo:.3} .. {hi:.3}, n={})",
        SIZES[0],
        median(small.to_vec()) / scale,
        SIZES[1],
        median(big.to_vec()) / scale,
        median(ratios.clone()),
        ratios.len()
    );
}

pub fn run() {
    for cmd in ["iperf3", "nft", "ss"] {
        if !have(cmd) {
            println!("skipped: no {cmd} here (slurm-test-env/install-deps installs it)");
            return;
        }
    }
    in_thread(|| {
        let labs: Vec<(Lab, Slice)> = SIZES.iter().map(|&n| lab(n)).collect();
        let (_, s) = &labs[0];
        println!(
            "node n1 {} ports {}-{} -> {} through gw1's ruleset; {ROUNDS} rounds; a run: TCP {TCP_SECS} s after 1 s left out, UDP {UDP_SECS} s of {DATAGRAM}-byte datagrams",
            s.node, s.first, s.last, s.public
        );
        let (mut tcp, mut udp) = ([vec![], vec![]], [vec![], vec![]]);
        for round in 0..ROUNDS {
            // the sizes take turns: each goes first in every other round
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let (lab, slice) = &labs[i];
                let cport = slice.first + 2 * round as u16;
                tcp[i].push(run_once(lab, *slice, cport, false));
                udp[i].push(run_once(lab, *slice, cport + 1, true));
            }
            println!(
                "round {}: TCP {:.3} / {:.3} Gbit/s, UDP {:.4} / {:.4} Mpkt/s ({} / {} nodes)",
                round + 1,
                tcp[0][round] / 1e9,
                tcp[1][round] / 1e9,
                udp[0][round] / 1e6,
                udp[1][round] / 1e6,
                SIZES[0],
                SIZES[1]
            );
        }
        report("TCP", "Gbit/s", 1e9, &tcp[0], &tcp[1]);
        report("UDP 64 B", "Mpkt/s", 1e6, &udp[0], &udp[1]);
        for (lab, _) in labs {
            lab.finish();
        }
    });
}

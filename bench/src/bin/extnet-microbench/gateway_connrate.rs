//! `gateway-connrate`: the cost of a new connection through a NAT gateway's ruleset, with the
//! policy of 10 nodes and with the seed site's 27,648, in the labs of `gateway-forward`
//! (node n1, gw1 with the rendered ruleset, the outside host). A new connection is where the
//! ruleset's size could show: its first packet creates the conntrack entry and goes through
//! the `postrouting` chain's SNAT map lookup and nf_nat's search for a unique tuple; the
//! packets after it only through `forward` (which `gateway-forward` measures).
//!
//! A run: for `RUN_SECS`, one thread in the node's namespace opens TCP connections to the
//! outside host one after the other (connect: SYN, SYN-ACK, ACK through the gateway) and
//! closes each with a reset (`SO_LINGER` 0: no TIME_WAIT holds n1's ports, the gateway's
//! entry goes to CLOSE); connections per second. A listener thread in the outside namespace
//! accepts them and checks each peer: n1's public address and a port of n1's slice. The two
//! sizes take turns over several rounds; the ratio big/small.

use crate::gateway_forward::{lab, median, report, Lab, Slice, OUTSIDE, SIZES};
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{setsockopt, sockopt::Linger};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::netns::in_thread;

const ROUNDS: usize = 25;
/// Seconds of a run.
const RUN_SECS: f64 = 1.0;
/// The outside host's listener (iperf3 of the lab has 5201).
const PORT: u16 = 7000;
/// A connection not established by then counts as failed (a lost SYN waits 1 s for its
/// retransmission).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a lab's listener saw.
#[derive(Default)]
struct Seen {
    /// Connections from n1's public address and a port of its slice.
    right: AtomicU64,
    /// Connections from anything else.
    wrong: AtomicU64,
}

fn outside() -> SocketAddr {
    SocketAddr::from((OUTSIDE.parse::<Ipv4Addr>().unwrap(), PORT))
}

/// Moves the calling thread into the namespace `ns`.
fn enter(ns: &std::fs::File) {
    setns(ns, CloneFlags::CLONE_NEWNET).expect("setns into a lab's namespace");
}

/// The listener of a lab's outside host, until `stop` is set and a connection wakes it.
fn listen(slice: Slice, listener: TcpListener, seen: &Seen, stop: &AtomicBool) {
    for c in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // a connection reset before accept(2) took it is an error here, not a wrong peer
        let Ok(c) = c else { continue };
        match c.peer_addr() {
            Ok(SocketAddr::V4(p))
                if *p.ip() == slice.public && (slice.first..=slice.last).contains(&p.port()) =>
            {
                seen.right.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                seen.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
}

/// One run from n1 in `lab`: connections per second, and how many failed.
fn run_once(lab: &Lab) -> (f64, u64) {
    in_thread(|| {
        enter(&lab.node);
        let (to, limit) = (outside(), Duration::from_secs_f64(RUN_SECS));
        let reset = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let (mut ok, mut failed) = (0u64, 0u64);
        let start = Instant::now();
        while start.elapsed() < limit {
            match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
                Ok(s) => {
                    setsockopt(&s, Linger, &reset).expect("SO_LINGER 0");
                    drop(s);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (ok as f64 / start.elapsed().as_secs_f64(), failed)
    })
}

pub fn run() {
    for cmd in ["iperf3", "nft", "ss"] {
        if !support::netns::have(cmd) {
            println!("skipped: no {cmd} here (slurm-test-env/install-deps installs it)");
            return;
        }
    }
    in_thread(|| {
        let labs: Vec<(Lab, Slice)> = SIZES.iter().map(|&n| lab(n)).collect();
        let seen: Vec<Seen> = labs.iter().map(|_| Seen::default()).collect();
        let stop = AtomicBool::new(false);
        let (_, s) = &labs[0];
        println!(
            "node n1 {} -> {} through gw1's ruleset; {ROUNDS} rounds; a run: {RUN_SECS} s of TCP connect + reset, one at a time, to {OUTSIDE}:{PORT}",
            s.node, s.public
        );
        std::thread::scope(|scope| {
            for ((lab, slice), seen) in labs.iter().zip(&seen) {
                let listener = in_thread(|| {
                    enter(&lab.out);
                    TcpListener::bind(outside()).expect("listen on the outside host")
                });
                let stop = &stop;
                scope.spawn(move || listen(*slice, listener, seen, stop));
            }
            let mut rate = [vec![], vec![]];
            let mut failed = [0u64, 0u64];
            for round in 0..ROUNDS {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in order {
                    let (r, f) = run_once(&labs[i].0);
                    rate[i].push(r);
                    failed[i] += f;
                }
                println!(
                    "round {}: {:.0} / {:.0} connections/s ({} / {} nodes)",
                    round + 1,
                    rate[0][round],
                    rate[1][round],
                    SIZES[0],
                    SIZES[1]
                );
            }
            // wake the listeners: each takes one more connection, from its own namespace
            stop.store(true, Ordering::SeqCst);
            for (lab, _) in &labs {
                in_thread(|| {
                    enter(&lab.out);
                    let _ = TcpStream::connect_timeout(&outside(), CONNECT_TIMEOUT);
                });
            }
            report("TCP conn", "k/s", 1e3, &rate[0], &rate[1]);
            for (i, s) in seen.iter().enumerate() {
                let (right, wrong) = (
                    s.right.load(Ordering::Relaxed),
                    s.wrong.load(Ordering::Relaxed),
                );
                println!(
                    "{} nodes: {right} connections accepted from n1's public address and slice, {wrong} from elsewhere, {} failed (timeout {CONNECT_TIMEOUT:?}); median {:.0}/s",
                    SIZES[i],
                    failed[i],
                    median(rate[i].clone())
                );
                assert!(
                    right > 0 && wrong == 0,
                    "the outside host of the {}-node lab saw {right} connections from n1's public address and slice and {wrong} from elsewhere",
                    SIZES[i]
                );
            }
        });
        for (lab, _) in labs {
            lab.finish();
        }
    });
}

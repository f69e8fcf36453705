//! Kernel test of the accounting counters (`extnet::accounting`): the real counter objects,
//! maps and counting chains of the base table, in a private network namespace, with traffic
//! over its loopback. As root; without root it prints why it was skipped.
//!
//! The namespace belongs to one thread of the test (`unshare(CLONE_NEWNET)`), so nothing is
//! ever loaded into the machine's own namespace, and it disappears with the thread.

use extnet::kernel::netlink::Netlink;
use extnet::kernel::nftables as nft;
use extnet::node::counters;
use extnet::plan::ruleset::counters as counters_plan;
use extnet::store::accounting::Counters;
use extnet_policy::Policy;
use std::net::UdpSocket;
use std::time::Duration;

fn policy() -> Policy {
    // the node interface is `lo`: the traffic of the test leaves through it
    Policy::from_toml(
        r#"version = 1
[node]
interface = "lo"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
[ports]
range = "20000-20767"
block_size = 256
"#,
        "test",
    )
    .unwrap()
}

/// A table `ip extnet` with the accounting objects and chains, `internal` = 127.0.0.2, and a
/// test chain that gives UDP to port 9999 the mark of slot 1 (as the cgroup or netns marking
/// of a job would).
fn ruleset(p: &Policy) -> String {
    format!(
        "table ip extnet\ndelete table ip extnet\ntable ip extnet {{\n  set internal {{ type ipv4_addr; flags interval; elements = {{ 127.0.0.2 }}; }}\n{}  chain mark_test {{\n    type route hook output priority mangle; policy accept;\n    udp dport 9999 meta mark set 0x{:x}\n  }}\n{}}}\n",
        counters_plan::nft_objects(p),
        extnet::plan::mark(p, 1),
        counters_plan::nft_chains(p)
    )
}

/// Sends `n` datagrams of `size` bytes from one socket to `to` and waits for each echo.
fn exchange(to: &str, n: usize, size: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..n {
        s.send_to(&vec![7u8; size], to).unwrap();
        let (got, _) = s.recv_from(&mut buf).expect("echo");
        assert_eq!(got, size);
    }
}

/// An echo server on `addr` for as long as the test's namespace lives.
fn echo_server(addr: &str) {
    let s = UdpSocket::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

fn read(slot: u32) -> Counters {
    counters::read(&[slot]).unwrap()[&slot]
}

#[test]
fn counters_count_marked_external_traffic_both_ways_and_survive_a_reload() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root (creates a network namespace and loads nft rules)");
        return;
    }
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let mut nl = Netlink::open().unwrap();
        let lo = nl.index("lo").unwrap().expect("lo");
        nl.set_up(lo).unwrap();
        // servers: the echo of port 9999 answers with its own (unmarked) socket, so what the
        // job receives is counted only through the conntrack mark
        echo_server("127.0.0.1:9999");
        echo_server("127.0.0.2:9999");
        echo_server("127.0.0.1:9997");

        let p = policy();
        nft::apply(&ruleset(&p)).expect("load the accounting objects and chains");
        let zero = read(1);
        assert_eq!(zero, Counters::default());

        let (n, size) = (10usize, 1000usize);
        let wire = (n * (size + 28)) as u64; // IPv4 + UDP headers
        exchange("127.0.0.1:9999", n, size); // marked, external: counted
        exchange("127.0.0.2:9999", 4, 500); // marked, but internal: not counted
        exchange("127.0.0.1:9997", 4, 500); // not marked: not counted
        let c = read(1);
        assert_eq!(
            c,
            Counters {
                bytes_out: wire,
                packets_out: n as u64,
                bytes_in: wire,
                packets_in: n as u64,
                connections: 1,
            }
        );
        assert_eq!(read(0), Counters::default(), "another slot counts nothing");

        // a second flow is a second connection
        exchange("127.0.0.1:9999", 1, 100);
        assert_eq!(read(1).connections, 2);

        // a base reload keeps the values (carry_over), a reset zeroes them
        let before = read(1);
        nft::apply(&counters::carry_over(&ruleset(&p))).unwrap();
        assert_eq!(read(1), before, "carried over the reload");
        nft::apply(&ruleset(&p)).unwrap();
        assert_eq!(
            read(1),
            Counters::default(),
            "a reload without carry_over zeroes"
        );
        exchange("127.0.0.1:9999", 2, 100);
        assert_eq!(read(1).packets_out, 2);
        counters::reset(1).unwrap();
        assert_eq!(read(1), Counters::default(), "reset");

        // reading a slot the table does not have is an error that names it
        let e = counters::read(&[7]).unwrap_err();
        assert!(
            e.to_string().contains("counter slot7_out does not exist"),
            "{e}"
        );
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

/// Timings of what accounting adds to a job, at 1008 slots: the prolog's reset, the epilog's
/// read (each over a fresh netlink socket, as the binaries do), `extnet status` reading
/// 100 active slots, and a base reload with carry-over.
/// `cargo test --release --test kernel_accounting -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: prints timings"]
fn bench_counter_reset_and_read() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root");
        return;
    }
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let p = Policy::from_toml(
            r#"version = 1
[node]
interface = "lo"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
[ports]
range = "1024-65535"
block_size = 64
"#,
            "bench",
        )
        .unwrap();
        let slots = p.slots();
        let text = ruleset(&p);
        let t = std::time::Instant::now();
        nft::apply(&text).unwrap();
        let load = t.elapsed();
        let t = std::time::Instant::now();
        nft::apply(&counters::carry_over(&text)).unwrap();
        let carry = t.elapsed();
        let time = |f: &mut dyn FnMut(u32)| {
            let mut v: Vec<Duration> = (0..200)
                .map(|i| {
                    let t = std::time::Instant::now();
                    f(i * 5 % slots);
                    t.elapsed()
                })
                .collect();
            v.sort();
            (v[v.len() / 2], v[v.len() * 99 / 100])
        };
        let reset = time(&mut |s| {
            counters::reset(s).unwrap();
        });
        let read1 = time(&mut |s| {
            counters::read(&[s]).unwrap();
        });
        let active: Vec<u32> = (0..100).map(|i| i * 10).collect();
        let read100 = time(&mut |_| {
            counters::read(&active).unwrap();
        });
        println!("accounting at {slots} slots ({} counters):", slots * 3);
        println!("  base load (counters, maps, chains only)   {load:?}");
        println!("  base reload with carry-over              {carry:?}");
        println!(
            "  prolog reset of one slot     median {:?}  p99 {:?}",
            reset.0, reset.1
        );
        println!(
            "  epilog read of one slot      median {:?}  p99 {:?}",
            read1.0, read1.1
        );
        println!(
            "  status read of 100 slots     median {:?}  p99 {:?}",
            read100.0, read100.1
        );
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

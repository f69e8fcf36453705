//! Kernel test of the accounting counters (`extnet::accounting`): the real counter objects,
//! maps and counting chains of the base table, in a private network namespace, with traffic
//! over its loopback; and the metrics file's traffic figures summed from them. As root; without root it prints why it was skipped.
//!
//! The namespace belongs to one thread of the test (`unshare(CLONE_NEWNET)`), so nothing is
//! ever loaded into the machine's own namespace, and it disappears with the thread.

use extnet::kernel::netlink::Netlink;
use extnet::kernel::nftables as nft;
use extnet::node::{counters, metrics};
use extnet::store::accounting::Counters;
use extnet::store::lease::{Lease, LeaseTable};
use std::net::UdpSocket;
use std::time::Duration;
use support::netns::in_private_netns;
use support::root::is_root;
use support::tables::accounting_table as ruleset;

/// Sends `n` datagrams of `size` bytes from one socket to `to` and waits for each echo.
fn exchange(to: &str, n: usize, size: usize) {
    let s = UdpSocket::bind(if to.starts_with('[') {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    })
    .unwrap();
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
    if !is_root(
        "counters_count_marked_external_traffic_both_ways_and_survive_a_reload",
        "a network namespace and nft rules",
    ) {
        return;
    }
    in_private_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let lo = nl.index("lo").unwrap().expect("lo");
        nl.set_up(lo).unwrap();
        // servers: the echo of port 9999 answers with its own (unmarked) socket, so what the
        // job receives is counted only through the conntrack mark
        echo_server("127.0.0.1:9999");
        echo_server("127.0.0.2:9999");
        echo_server("127.0.0.1:9997");
        echo_server("[::1]:9999");

        let p = support::policy::accounting("20000-20767", 256);
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
                ..Counters::default()
            },
            "IPv4 moves the totals, not the IPv6 counters"
        );
        assert_eq!(read(0), Counters::default(), "another slot counts nothing");

        // the metrics file sums the leased slots' counters by profile, from one dump of the
        // table: the names it looks for are the kernel's
        let mut table = LeaseTable::empty("n1");
        table.leases.push(Lease {
            job_id: 42,
            user: "alice".into(),
            uid: 1000,
            slot: 1,
            port_first: 20256,
            port_last: 20511,
            mark: extnet::plan::mark(&p, 1),
            mode: extnet_policy::Mode::Cgroup,
            profile: "downloads".into(),
            node_addr: "10.99.0.11".parse().unwrap(),
            node_addr6: None,
            since: 1,
            last_logged: None,
        });
        let dump = counters::all_counters().unwrap();
        let text = metrics::snapshot(&p, &table, Some(&dump), 2).render();
        for line in [
            format!(
                "extnet_active_traffic_bytes{{direction=\"out\",profile=\"downloads\"}} {wire}\n"
            ),
            format!(
                "extnet_active_traffic_bytes{{direction=\"in\",profile=\"downloads\"}} {wire}\n"
            ),
            format!(
                "extnet_active_traffic_packets{{direction=\"out\",profile=\"downloads\"}} {n}\n"
            ),
            "extnet_active_connections{profile=\"downloads\"} 1\n".to_owned(),
            "extnet_nft_counters_readable 1\n".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} not in\n{text}");
        }

        // a second flow is a second connection
        exchange("127.0.0.1:9999", 1, 100);
        assert_eq!(read(1).connections, 2);

        // IPv6 moves the totals and, by as much, the IPv6 counters
        let (n6, size6) = (3usize, 700usize);
        let wire6 = (n6 * (size6 + 48)) as u64; // IPv6 + UDP headers
        exchange("[::1]:9999", n6, size6);
        let c6 = read(1);
        assert_eq!(
            c6,
            Counters {
                bytes_out: wire + 128 + wire6,
                packets_out: (n + 1 + n6) as u64,
                bytes_in: wire + 128 + wire6,
                packets_in: (n + 1 + n6) as u64,
                connections: 3,
                bytes_out6: wire6,
                packets_out6: n6 as u64,
                bytes_in6: wire6,
                packets_in6: n6 as u64,
                connections6: 1,
            }
        );
        // IPv4 again: the IPv6 counters stay
        exchange("127.0.0.1:9999", 1, 100);
        let c = read(1);
        assert_eq!(
            (c.bytes_out6, c.packets_in6, c.connections6),
            (c6.bytes_out6, c6.packets_in6, c6.connections6)
        );
        assert_eq!(c.bytes_out, c6.bytes_out + 128);

        // a base reload keeps the values (carry_over), a reset zeroes them
        let before = read(1);
        assert!(
            before.bytes_in6 > 0 && before.connections6 > 0,
            "{before:?}"
        );
        nft::apply(&counters::carry_over(&ruleset(&p))).unwrap();
        assert_eq!(
            read(1),
            before,
            "carried over the reload, the IPv6 counters too"
        );
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
    });
}

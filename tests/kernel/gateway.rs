//! Kernel test of the gateway ruleset `extnet gateway render` writes
//! (`extnet::plan::gateway::nftables`), loaded with `nft -f` into a gateway namespace between
//! a node namespace and an outside namespace (all private, in a temporary namespace
//! directory). It attacks what the ruleset promises: a node's connection from a port of its
//! slice leaves as its public address with the same port; a port outside its slice, a port
//! of another node's slice and a non-node source are dropped and counted, never leave
//! untranslated; a profile pool behind another virtual address leaves as that address's
//! public address; a dump of the gateway's conntrack table counts the translated
//! connections by public address. The dual-stack rendering does the same for IPv6 (a node's
//! unique local address and port of its slice leave as its public IPv6 address with the same
//! port, the rest is dropped) and replaces a loaded IPv4-only `ip extnet_gw` in its load.
//! As root; without root it prints why it was skipped.

use extnet::plan::gateway;
use extnet_policy::Policy;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::netns::{command_in, ip_in, sh_in as sh, with_netns_dir};

/// The test cluster's policy: gw1 holds 10.99.0.254 (public 203.0.113.101) and 10.99.0.253
/// (public 203.0.113.102); n1 = 10.99.0.11, n2 = 10.99.0.12.
fn policy() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slurm-test-env/extnet-test.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("@XN_DIR@", "/run/extnet-test");
    Policy::from_toml(&text, "extnet-test.toml").unwrap()
}

/// The golden dual-stack policy (tests/golden/gateway/dual-stack.toml): the test cluster's
/// gateways with IPv6: gw1 holds fd00:78e7::254 (public 2001:db8::101) and fd00:78e7::253
/// (public 2001:db8::102); n1 = fd00:78e7::11, n2 = fd00:78e7::12.
fn dual_policy() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/gateway/dual-stack.toml");
    Policy::from_toml(&std::fs::read_to_string(&path).unwrap(), "dual-stack.toml").unwrap()
}

/// Loads `text` with `nft -f -` in namespace `ns`; panics with nft's error.
fn nft_load(ns: &File, text: &str) {
    let mut nft = command_in(Command::new("nft").args(["-f", "-"]), ns)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = nft.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `f` on a thread of its own inside namespace `ns`.
fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    support::netns::in_thread(|| {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A TCP connection from `src` to the outside host's listener; `Some(what the outside saw)`
/// or `None` when it did not connect within a second.
fn connect_from(node: &File, src: SocketAddrV4) -> Option<String> {
    connect(
        node,
        SocketAddr::V4(src),
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 7000)),
    )
}

/// [`connect_from`] for IPv6: to the outside host's [2001:db8::10]:7000.
fn connect_from6(node: &File, src: SocketAddrV6) -> Option<String> {
    let dst = SocketAddrV6::new("2001:db8::10".parse().unwrap(), 7000, 0, 0);
    connect(node, SocketAddr::V6(src), SocketAddr::V6(dst))
}

/// A TCP connection from `src` to `dst` in namespace `ns`, both of one family.
fn connect(node: &File, src: SocketAddr, dst: SocketAddr) -> Option<String> {
    in_ns(node, || {
        let family = match src {
            SocketAddr::V4(_) => nix::sys::socket::AddressFamily::Inet,
            SocketAddr::V6(_) => nix::sys::socket::AddressFamily::Inet6,
        };
        let sock = nix::sys::socket::socket(
            family,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap();
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReuseAddr, &true).unwrap();
        nix::sys::socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &nix::sys::socket::SockaddrStorage::from(src),
        )
        .unwrap();
        let s: TcpStream = sock.into();
        // a non-blocking connect with a deadline: std's connect_timeout needs an unbound socket
        s.set_nonblocking(true).unwrap();
        let dst = nix::sys::socket::SockaddrStorage::from(dst);
        let _ = nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &dst);
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&s),
            nix::poll::PollFlags::POLLOUT,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)).unwrap();
        if ready == 0 || s.take_error().unwrap().is_some() {
            return None;
        }
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut seen = String::new();
        (&s).read_to_string(&mut seen).ok()?;
        Some(seen)
    })
}

#[test]
fn the_rendered_ruleset_translates_each_node_slice_to_its_public_address_and_drops_the_rest() {
    with_netns_dir(
        "the_rendered_ruleset_translates_each_node_slice_to_its_public_address_and_drops_the_rest",
        |dir| {
            let (node, gw, out) = (dir.create("node"), dir.create("gw"), dir.create("out"));
            let path = |n: &str| dir.path().join(n).display().to_string();
            // node: eth0 with n1's and n2's addresses and a non-node one, all routed to the VIPs
            veth_to(&gw, "eth0", &path("node"));
            veth_to(&gw, "eth1", &path("out"));
            for a in ["10.99.0.11/24", "10.99.0.12/24", "10.99.0.77/24"] {
                ip_in(&node, &["addr", "add", a, "dev", "eth0"]);
            }
            for ns in [&node, &gw, &out] {
                ip_in(ns, &["link", "set", "lo", "up"]);
                ip_in(ns, &["link", "set", "eth0", "up"]);
            }
            ip_in(&node, &["route", "add", "default", "via", "10.99.0.254"]);
            for a in ["10.99.0.251/24", "10.99.0.254/24", "10.99.0.253/24"] {
                ip_in(&gw, &["addr", "add", a, "dev", "eth0"]);
            }
            for a in ["203.0.113.1/24", "203.0.113.101/24", "203.0.113.102/24"] {
                ip_in(&gw, &["addr", "add", a, "dev", "eth1"]);
            }
            ip_in(&gw, &["link", "set", "eth1", "up"]);
            ip_in(&out, &["addr", "add", "203.0.113.10/24", "dev", "eth0"]);
            sh(&gw, "sysctl -qw net.ipv4.ip_forward=1");
            let rendering = gateway::render(
                &policy(),
                "gw1",
                Path::new("/etc/extnet/gateway"),
                Path::new(gateway::STATE_DIR),
            )
            .unwrap();
            nft_load(&gw, &rendering.files[0].1);
            // the outside host: writes back the address and port it saw
            let listener = in_ns(&out, || TcpListener::bind("203.0.113.10:7000").unwrap());
            let server = std::thread::spawn(move || {
                for c in listener.incoming() {
                    let Ok(mut c) = c else { break };
                    let peer = c.peer_addr().unwrap().to_string();
                    if peer.starts_with("203.0.113.10:") {
                        break; // the stop connection
                    }
                    let _ = c.write_all(peer.as_bytes());
                }
            });
            let at = |a: &str, p: u16| SocketAddrV4::new(a.parse().unwrap(), p);
            // n1's default pool (20000-29999 on 203.0.113.101), n2's (its slice: +12288), n1's
            // bulk pool (30000-32047, through 10.99.0.253's public address 203.0.113.102): the
            // outside sees the public address and the node's own port
            assert_eq!(
                connect_from(&node, at("10.99.0.11", 20123)).as_deref(),
                Some("203.0.113.101:20123")
            );
            assert_eq!(
                connect_from(&node, at("10.99.0.12", 32300)).as_deref(),
                Some("203.0.113.101:32300")
            );
            assert_eq!(
                connect_from(&node, at("10.99.0.11", 30500)).as_deref(),
                Some("203.0.113.102:30500")
            );
            // `extnet gateway metrics`' translated connections: one conntrack dump of the
            // gateway's namespace counts the three by the public address they left as
            let translated = in_ns(&gw, extnet::kernel::conntrack::count_source_nat).unwrap();
            assert_eq!(
                translated.into_iter().collect::<Vec<_>>(),
                [
                    (Ipv4Addr::new(203, 0, 113, 101).into(), 2),
                    (Ipv4Addr::new(203, 0, 113, 102).into(), 1)
                ]
            );
            // n1 with a port of n2's slice, n1 with an ephemeral port, a non-node source: dropped
            let drops_before = counter(&gw);
            assert_eq!(
                connect_from(&node, at("10.99.0.11", 32300)),
                None,
                "n1 in n2's slice"
            );
            assert_eq!(
                connect_from(&node, at("10.99.0.11", 50000)),
                None,
                "a port in no slice"
            );
            assert_eq!(
                connect_from(&node, at("10.99.0.77", 20123)),
                None,
                "a non-node source"
            );
            assert!(counter(&gw) > drops_before, "the drops are counted");
            // ICMP of a node leaves (as its public address: the reply comes back through the
            // translation); of a non-node address not at all
            sh(&node, "sysctl -qw net.ipv4.ping_group_range='0 0'");
            assert!(
                echo(&node, "10.99.0.11"),
                "a node's ICMP echo must be answered"
            );
            assert!(
                !echo(&node, "10.99.0.77"),
                "ICMP of a non-node source must not leave"
            );
            // the gateway's own traffic leaves from its own address untranslated: its path
            // check (keepalived's `extnet_path_out`, as rendered) must succeed, or both
            // gateways of a pair go to FAULT and hold no virtual address
            sh(&gw, "sysctl -qw net.ipv4.ping_group_range='0 0'");
            assert!(
                echo(&gw, "203.0.113.1"),
                "the gateway's own ICMP echo must be answered"
            );
            let (_, check) = rendering
                .files
                .iter()
                .find(|(p, _)| p.ends_with("check-path.sh"))
                .expect("a rendered check-path.sh");
            let st = command_in(Command::new("sh").args(["-c", check]), &gw)
                .status()
                .unwrap();
            assert!(st.success(), "the rendered path check fails on gw1: {st}");
            let _ = in_ns(&out, || TcpStream::connect("203.0.113.10:7000"));
            server.join().unwrap();
            for n in ["node", "gw", "out"] {
                extnet::kernel::netns::delete(dir.path(), n).unwrap();
            }
        },
    );
}

#[test]
fn the_dual_stack_ruleset_translates_a_node_ipv6_slice_to_its_public6_address_and_drops_the_rest() {
    with_netns_dir(
        "the_dual_stack_ruleset_translates_a_node_ipv6_slice_to_its_public6_address_and_drops_the_rest",
        |dir| {
            let (node, gw, out) = (dir.create("node"), dir.create("gw"), dir.create("out"));
            let path = |n: &str| dir.path().join(n).display().to_string();
            // no duplicate address detection on the links: a link-local address in it for
            // a second cannot send neighbour discovery, which would delay the first reply to
            // each node address by a retransmission (the test's one-second deadline)
            for ns in [&node, &gw, &out] {
                sh(
                    ns,
                    "sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0",
                );
            }
            veth_to(&gw, "eth0", &path("node"));
            veth_to(&gw, "eth1", &path("out"));
            // nodad: the addresses are usable at once, not tentative for a second
            let add6 = |ns: &File, a: &str, dev: &str| {
                ip_in(ns, &["-6", "addr", "add", a, "dev", dev, "nodad"]);
            };
            // n1, n2 and an address that is no node's
            for a in ["fd00:78e7::11/64", "fd00:78e7::12/64", "fd00:78e7::77/64"] {
                add6(&node, a, "eth0");
            }
            for ns in [&node, &gw, &out] {
                ip_in(ns, &["link", "set", "lo", "up"]);
                ip_in(ns, &["link", "set", "eth0", "up"]);
            }
            ip_in(&node, &["-6", "route", "add", "default", "via", "fd00:78e7::254"]);
            for a in ["fd00:78e7::251/64", "fd00:78e7::254/64", "fd00:78e7::253/64"] {
                add6(&gw, a, "eth0");
            }
            for a in ["2001:db8::1/64", "2001:db8::101/64", "2001:db8::102/64"] {
                add6(&gw, a, "eth1");
            }
            ip_in(&gw, &["link", "set", "eth1", "up"]);
            add6(&out, "2001:db8::10/64", "eth0");
            // the outside could answer the nodes' own addresses: a packet that left
            // untranslated would connect, so a refused connection below is a drop
            ip_in(&out, &["-6", "route", "add", "fd00:78e7::/48", "via", "2001:db8::1"]);
            sh(&gw, "sysctl -qw net.ipv6.conf.all.forwarding=1");
            // an IPv4-only table of an earlier version is loaded: the rendering replaces it
            nft_load(&gw, "table ip extnet_gw {\n chain forward {\n type filter hook forward priority filter; policy accept;\n }\n}\n");
            let rendering = gateway::render(
                &dual_policy(),
                "gw1",
                Path::new("/etc/extnet/gateway"),
                Path::new(gateway::STATE_DIR),
            )
            .unwrap();
            nft_load(&gw, &rendering.files[0].1);
            let tables = sh(&gw, "nft list tables");
            assert_eq!(tables.trim(), "table inet extnet_gw", "{tables}");
            // the outside host: writes back the address and port it saw
            let listener = in_ns(&out, || TcpListener::bind("[2001:db8::10]:7000").unwrap());
            let server = std::thread::spawn(move || {
                for c in listener.incoming() {
                    let Ok(mut c) = c else { break };
                    let peer = c.peer_addr().unwrap().to_string();
                    if peer.starts_with("[2001:db8::10]:") {
                        break; // the stop connection
                    }
                    let _ = c.write_all(peer.as_bytes());
                }
            });
            let at = |a: &str, p: u16| SocketAddrV6::new(a.parse().unwrap(), p, 0, 0);
            // n1's default pool (20000-29999 on 2001:db8::101), n2's (its slice: +12288),
            // n1's bulk pool (30000-32047, through fd00:78e7::253's 2001:db8::102): the outside
            // sees the public IPv6 address and the node's own port
            assert_eq!(
                connect_from6(&node, at("fd00:78e7::11", 20123)).as_deref(),
                Some("[2001:db8::101]:20123")
            );
            assert_eq!(
                connect_from6(&node, at("fd00:78e7::12", 32300)).as_deref(),
                Some("[2001:db8::101]:32300")
            );
            assert_eq!(
                connect_from6(&node, at("fd00:78e7::11", 30500)).as_deref(),
                Some("[2001:db8::102]:30500")
            );
            // `extnet gateway metrics`' dump counts the IPv6 translations too
            let translated = in_ns(&gw, extnet::kernel::conntrack::count_source_nat).unwrap();
            assert_eq!(
                translated.into_iter().collect::<Vec<_>>(),
                [
                    ("2001:db8::101".parse::<IpAddr>().unwrap(), 2),
                    ("2001:db8::102".parse::<IpAddr>().unwrap(), 1)
                ]
            );
            // n1 with a port of n2's slice, n1 with a port in no slice, a non-node source:
            // dropped and counted, never out untranslated
            let drops_before = counter(&gw);
            for (src, why) in [
                (at("fd00:78e7::11", 32300), "n1 in n2's slice"),
                (at("fd00:78e7::11", 50000), "a port in no slice"),
                (at("fd00:78e7::77", 20123), "a non-node source"),
            ] {
                assert_eq!(connect_from6(&node, src), None, "{why}");
            }
            assert!(counter(&gw) > drops_before, "the IPv6 drops are counted");
            // ICMPv6 echo of a node leaves (as its public address), of a non-node not at all
            sh(&node, "sysctl -qw net.ipv4.ping_group_range='0 0'");
            assert!(
                echo(&node, "fd00:78e7::11"),
                "a node's ICMPv6 echo must be answered"
            );
            assert!(
                !echo(&node, "fd00:78e7::77"),
                "ICMPv6 of a non-node source must not leave"
            );
            let _ = in_ns(&out, || TcpStream::connect("[2001:db8::10]:7000"));
            server.join().unwrap();
            for n in ["node", "gw", "out"] {
                extnet::kernel::netns::delete(dir.path(), n).unwrap();
            }
        },
    );
}

/// One ICMP echo from `src` in `ns` to the outside host (a ping socket, no `ping` needed);
/// ICMPv6 to 2001:db8::10 for an IPv6 `src`: true when answered within a second.
fn echo(ns: &File, src: &str) -> bool {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = match src {
        IpAddr::V4(_) => Ipv4Addr::new(203, 0, 113, 10).into(),
        IpAddr::V6(_) => "2001:db8::10".parse().unwrap(),
    };
    // echo request, code 0; the kernel fills the checksum and the id
    let (family, proto, request, reply) = match src {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128, 129),
    };
    in_ns(ns, || {
        let (local, remote) = (
            nix::sys::socket::SockaddrStorage::from(SocketAddr::new(src, 0)),
            nix::sys::socket::SockaddrStorage::from(SocketAddr::new(dst, 0)),
        );
        // SAFETY: plain socket calls on a descriptor this closure owns and closes; the
        // buffers and addresses outlive the calls.
        unsafe {
            let fd = libc::socket(family, libc::SOCK_DGRAM, proto);
            assert!(fd >= 0, "ping socket: {}", std::io::Error::last_os_error());
            use nix::sys::socket::SockaddrLike;
            assert_eq!(libc::bind(fd, local.as_ptr(), local.len()), 0);
            let tv = libc::timeval {
                tv_sec: 1,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let req = [request, 0, 0, 0, 0, 0, 0, 1];
            libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                remote.as_ptr(),
                remote.len(),
            );
            let mut buf = [0u8; 64];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            libc::close(fd);
            n >= 8 && buf[0] == reply
        }
    })
}

/// A veth pair: `name` in `ns`, its peer `eth0` in the namespace at `peer_ns`.
fn veth_to(ns: &File, name: &str, peer_ns: &str) {
    ip_in(
        ns,
        &[
            "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", peer_ns,
        ],
    );
}

/// Packets counted in `untranslated_drop` on the gateway.
fn counter(gw: &File) -> u64 {
    let o = sh(gw, "nft list counter inet extnet_gw untranslated_drop");
    o.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

//! Kernel test of the destination allowlist (`extnet::allowlist`): the real nft objects in a
//! private network namespace, real sockets carrying job marks (`SO_MARK`, as the cgroup-bpf
//! program sets them), and the drop counters.
//!
//! A packet the output hook drops makes `sendto` fail with `EPERM` at once, so each case is one
//! datagram and one syscall. Everything happens on a thread of its own that unshares its
//! network namespace; the namespace dies with the thread. Without root the test says why it was
//! skipped.

use extnet::allowlist;
use extnet::nft::Session;
use extnet_policy::Policy;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;

const POLICY: &str = r#"version = 1
[node]
interface = "xa0"
gateway = "10.98.0.254"
internal = ["10.98.0.0/24"]
[ports]
range = "20000-20767"
[[profile]]
name = "open"
users = ["a"]
[[profile]]
name = "web"
users = ["a"]
destinations = [
  { net = "203.0.113.10", proto = "tcp", ports = "80,443" },
  { net = "203.0.113.10", proto = "udp", ports = 7001 },
  { net = "198.51.100.0/24" },
]
"#;

const OPEN: u32 = 0x10000;
const WEB: u32 = 0x10001;
const UNBOUND: u32 = 0x10002;

/// Sends one UDP datagram to `to` from a socket with mark `mark` (0: none): `Ok` or the errno.
fn send(mark: u32, to: &str) -> Result<(), nix::errno::Errno> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    if mark != 0 {
        nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Mark, &mark).unwrap();
    }
    let to: SocketAddrV4 = to.parse().unwrap();
    match s.send_to(b"x", to) {
        Ok(_) => Ok(()),
        Err(e) => Err(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    }
}

fn drops(_session: &mut Session) -> std::collections::HashMap<String, u64> {
    allowlist::drops()
        .unwrap()
        .into_iter()
        .map(|(n, p, _)| (n, p))
        .collect()
}

#[test]
fn marked_traffic_reaches_only_its_profiles_destinations() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root (creates a network namespace and an nft table)");
        return;
    }
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        // a "cluster interface" (one end of a veth pair) with routes to the internal net and
        // the outside
        for cmd in [
            "link add xa0 type veth peer name xa1",
            "link set lo up",
            "link set xa1 up",
            "link set xa0 up",
            "addr add 10.98.0.11/24 dev xa0",
            "route add default via 10.98.0.254 dev xa0",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            // the thread's namespace: /proc/thread-self, entered by nsenter for `ip`
            let st = std::process::Command::new("nsenter")
                .arg(format!(
                    "--net=/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                ))
                .arg("ip")
                .args(&args)
                .status()
                .unwrap();
            assert!(st.success(), "ip {cmd}");
        }
        let policy = Policy::from_toml(POLICY, "t").unwrap();
        let mut s = Session::new().unwrap();
        s.run(&format!(
            "table ip extnet {{\n  set internal {{ type ipv4_addr; flags interval; elements = {{ 10.98.0.0/24 }}; }}\n{}}}\n",
            allowlist::nft_objects(&policy)
        ))
        .expect("the allowlist objects load");
        allowlist::bind(&mut s, OPEN, policy.profile("open").unwrap()).unwrap();
        allowlist::bind(&mut s, WEB, policy.profile("web").unwrap()).unwrap();
        // binding again (a prolog run twice) and over a stale verdict both work
        allowlist::bind(&mut s, WEB, policy.profile("web").unwrap()).unwrap();
        allowlist::bind(&mut s, UNBOUND, policy.profile("open").unwrap()).unwrap();
        assert!(allowlist::unbind(&mut s, UNBOUND).unwrap());
        assert!(!allowlist::unbind(&mut s, UNBOUND).unwrap(), "absent is fine");

        let eperm = Err(nix::errno::Errno::EPERM);
        // unmarked traffic (the node, other jobs) is not touched
        assert_eq!(send(0, "192.0.2.1:53"), Ok(()));
        // a profile without an allowlist reaches everything
        assert_eq!(send(OPEN, "192.0.2.1:53"), Ok(()));
        // web: only its destinations, internal always
        assert_eq!(send(WEB, "203.0.113.10:7001"), Ok(()));
        assert_eq!(send(WEB, "198.51.100.77:9"), Ok(()));
        assert_eq!(send(WEB, "10.98.0.5:9"), Ok(()), "internal destinations always pass");
        assert_eq!(send(WEB, "127.0.0.1:9"), Ok(()), "the node itself always passes");
        let before = drops(&mut s);
        assert_eq!(send(WEB, "203.0.113.10:7002"), eperm, "other port");
        assert_eq!(send(WEB, "203.0.113.11:7001"), eperm, "other host");
        // fail closed: a marked socket without a binding gets nothing out
        assert_eq!(send(UNBOUND, "192.0.2.1:53"), eperm);
        let after = drops(&mut s);
        assert_eq!(after["dest_web_drop"], before["dest_web_drop"] + 2, "{after:?}");
        assert_eq!(after["unbound_drop"], before["unbound_drop"] + 1, "{after:?}");
        assert!(!after.contains_key("dest_open_drop"), "{after:?}");
        // the epilog's unbind ends the job's access
        assert!(allowlist::unbind(&mut s, WEB).unwrap());
        assert_eq!(send(WEB, "203.0.113.10:7001"), eperm);
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

/// What binding and unbinding one job costs (`cargo test --release --test kernel_allowlist --
/// -- --ignored --nocapture`): the prolog and epilog each open one libnftables context and
/// make one change; measured with 0, 150 and 2000 other jobs bound (to a chain: the kernel
/// validates jump targets).
#[test]
#[ignore = "benchmark: prints figures"]
fn bench_bind_unbind() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root");
        return;
    }
    for others in [0u32, 150, 2000] {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let policy = Policy::from_toml(POLICY, "t").unwrap();
            let web = policy.profile("web").unwrap();
            let mut s = Session::new().unwrap();
            s.run(&format!(
                "table ip extnet {{\n  set internal {{ type ipv4_addr; flags interval; elements = {{ 10.98.0.0/24 }}; }}\n{}}}\n",
                allowlist::nft_objects(&policy)
            ))
            .unwrap();
            for m in 0..others {
                allowlist::bind(&mut s, 0x20000 | m, web).unwrap();
            }
            let n = 200u32;
            let t = std::time::Instant::now();
            for m in 0..n {
                allowlist::bind(&mut Session::new().unwrap(), 0x10000 | m, web).unwrap();
            }
            let bind_new = t.elapsed() / n;
            let t = std::time::Instant::now();
            for m in 0..n {
                allowlist::unbind(&mut Session::new().unwrap(), 0x10000 | m).unwrap();
            }
            let unbind_new = t.elapsed() / n;
            let t = std::time::Instant::now();
            for m in 0..n {
                allowlist::bind(&mut s, 0x10000 | m, web).unwrap();
            }
            let bind_kept = t.elapsed() / n;
            let t = std::time::Instant::now();
            for m in 0..n {
                allowlist::unbind(&mut s, 0x10000 | m).unwrap();
            }
            let unbind_kept = t.elapsed() / n;
            println!(
                "allowlist binding with {others} other jobs bound ({n} runs each): new context: bind {bind_new:?}, unbind {unbind_new:?}; kept context: bind {bind_kept:?}, unbind {unbind_kept:?}"
            );
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
}

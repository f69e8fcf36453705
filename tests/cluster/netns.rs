//! A netns job's own network on the real test cluster: the veth pair's MTU follows the node's
//! cluster interface, so the job's datagrams at that MTU cross it whole, over IPv4 and IPv6
//! (the test policy gives netns jobs IPv6: `node.netns_subnet6`); the job resolves
//! names through the nameservers the policy gives netns jobs.
//!
//! They need root and the running cluster (`slurm-test-env/test`); each changes n1 only inside
//! n1's network namespace and puts it back when it ends, also when it fails.

use support::cluster::*;

/// n1's cluster interface (`node.interface` of the test policy).
const IFACE: &str = "eth0";

/// Sets the MTU of n1's cluster interface and puts the one it had back when dropped.
struct MtuGuard<'a> {
    cluster: &'a Cluster,
    was: u32,
}

impl<'a> MtuGuard<'a> {
    fn lower(cluster: &'a Cluster, mtu: u32) -> MtuGuard<'a> {
        let was = Self::mtu(cluster);
        let r = cluster.on_node("n1", &["ip", "link", "set", IFACE, "mtu", &mtu.to_string()]);
        assert!(r.ok(), "set n1's {IFACE} mtu {mtu}:\n{r}");
        assert_eq!(Self::mtu(cluster), mtu);
        MtuGuard { cluster, was }
    }

    /// From netlink in n1's namespace (`/sys/class/net` shows the links of the namespace that
    /// mounted it, the machine's, not n1's).
    fn mtu(cluster: &Cluster) -> u32 {
        let r = cluster.on_node("n1", &["ip", "-o", "link", "show", IFACE]);
        assert!(r.ok(), "n1's {IFACE}:\n{r}");
        link_mtu(&r.stdout).unwrap_or_else(|| panic!("no mtu in:\n{r}"))
    }
}

/// The MTU in a line of `ip -o link show`.
fn link_mtu(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

impl Drop for MtuGuard<'_> {
    fn drop(&mut self) {
        let r = self.cluster.on_node(
            "n1",
            &["ip", "link", "set", IFACE, "mtu", &self.was.to_string()],
        );
        if !r.ok() {
            eprintln!("cannot restore n1's {IFACE} mtu {}:\n{r}", self.was);
        }
    }
}

/// With n1's cluster link at 1400, a netns job's veth takes 1400 on both ends and the job's
/// datagrams reach the outside whole, over IPv4 and IPv6: one of exactly the link's payload
/// (1400 - 28 bytes over IPv4, 1400 - 48 over IPv6: one packet, DF set or, for IPv6, never
/// fragmented on the way), and one of 1450 bytes (more than the link, less than 1500: the
/// job's kernel fragments it at its eth0). With the kernel's default 1500 on the veth, the job
/// would send the larger one as a single packet, which n1 drops on its smaller link.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn netns_job_moves_datagrams_at_and_above_the_node_link_mtu_whole() {
    let c = Cluster::get();
    let mtu = 1400;
    let _guard = MtuGuard::lower(&c, mtu);
    let bigger = 1450;
    // the larger first, on a fresh namespace: nothing has told the job's kernel the path MTU
    let sends: Vec<(u32, &str, &str, u32)> = vec![
        (4, "AF_INET", OUTSIDE, mtu - 28),
        (6, "AF_INET6", OUTSIDE6, mtu - 48),
    ];
    let mut script = "ip -o link show eth0".to_owned();
    for (v, family, host, fits) in &sends {
        script += &format!(
            r#"; python3 -c '
import socket
for n in ({bigger}, {fits}):
    s = socket.socket(socket.{family}, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"x" * n, ("{host}", 7001))
    try:
        print("GOT{v}", n, s.recv(200).decode().strip())
    except OSError as e:
        print("LOST{v}", n, e)
'"#
        );
    }
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=isolated"],
        &script,
    );
    assert!(r.ok(), "the job failed:\n{r}");
    let job = r.job_id();
    assert_eq!(
        r.stdout.lines().find_map(link_mtu),
        Some(mtu),
        "the job's eth0 has the node link's MTU:\n{r}"
    );
    for (v, _, _, fits) in &sends {
        let public = if *v == 4 {
            GATEWAY_PUBLIC
        } else {
            GATEWAY_PUBLIC6
        };
        for n in [bigger, *fits] {
            assert!(
                r.stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("GOT{v} {n} SEEN udp {public} "))),
                "an IPv{v} datagram of {n} bytes must reach the outside whole (n1's link MTU {mtu}):\n{r}"
            );
        }
    }
    c.assert_clean(job);
}

/// The name the outside host's DNS responder answers (`outside-server.py`), with its address.
const NAME: &str = "outside.extnet.test";

/// With `node.netns_nameservers = [the outside host]` in the policy, a netns job sees a
/// `/etc/resolv.conf` naming that server and resolves NAME through it, over its path out (the
/// query reaches the outside host from the gateway's address); the node's own
/// `/etc/resolv.conf` (the machine's: the test nodes share its mount namespace) is left as it
/// was, and the job's file goes with the job.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn netns_job_resolves_names_through_the_policys_nameservers() {
    let c = Cluster::get();
    let path = c.xn_dir.join("etc/extnet.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let _guard = PolicyGuard {
        path: path.clone(),
        text: original.clone(),
    };
    let from = "interface = \"eth0\"\n";
    assert!(original.contains(from), "the test policy sets {from:?}");
    std::fs::write(
        &path,
        original.replacen(
            from,
            &format!("{from}netns_nameservers = [\"{OUTSIDE}\"]\n"),
            1,
        ),
    )
    .unwrap();
    let node_file = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(
        !node_file.contains(OUTSIDE),
        "the node's own file must name another server for this test:\n{node_file}"
    );
    let mark = c.seen_log_mark();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=isolated"],
        &format!("cat /etc/resolv.conf; getent ahostsv4 {NAME}; echo getent=$?"),
    );
    assert!(r.ok(), "the job failed:\n{r}");
    let job = r.job_id();
    assert!(
        r.stdout.contains(&format!("nameserver {OUTSIDE}\n")),
        "the job's /etc/resolv.conf names the policy's nameserver:\n{r}"
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(OUTSIDE) && l.contains(NAME)),
        "{NAME} resolves to {OUTSIDE} in the job:\n{r}"
    );
    assert!(r.stdout.contains("getent=0"), "{r}");
    let block = c.block(job, "n1");
    let queries: Vec<Seen> = c
        .seen_since(mark)
        .into_iter()
        .filter(|s| s.proto == "dns")
        .collect();
    assert!(
        !queries.is_empty()
            && queries
                .iter()
                .all(|s| s.ip == GATEWAY_PUBLIC && block.0 <= s.port && s.port <= block.1),
        "the job's queries reach the nameserver over its path out (block {block:?}): {queries:?}"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        node_file,
        "the node's /etc/resolv.conf is untouched"
    );
    // the job's own resolv.conf is gone too (`Cluster::residue`)
    c.assert_clean(job);
}

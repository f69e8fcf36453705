//! IPv6 on the real test cluster (`slurm-test-env/`), dual stack: unique local addresses
//! inside (`fd00:78e7::/64`: the nodes, the gateways' cluster legs, the virtual addresses),
//! the documentation prefix outside (`2001:db8::/64`: the gateways' public legs and public
//! addresses, the outside host, which answers on both families). docs/ipv6.md, "Test cluster
//! and tests".
//!
//! What the IPv4 tests prove, for IPv6: a granted cgroup-mode job gets out, from the public
//! IPv6 address of its node's virtual address with a port of its block, and `extnet trace`
//! of that address and port names the job; a job without the flag gets nothing out; an
//! allowlist's IPv6 entry lets through what it lists and nothing else, and its IPv4 entry
//! nothing over IPv6; a profile with `ipv6 = false` gets IPv4 only; a flushed ruleset and a
//! deleted IPv6 rule let nothing out until the base is back; a gateway failover keeps IPv6
//! connections. And the cluster's own IPv6: the outside host answers the gateways; a node
//! reaches the gateways over IPv6 but has no IPv6 route out of its own.
//!
//! The same of netns-mode jobs, whose IPv6 leaves their namespace from their slot's /126
//! (`node.netns_subnet6`): a granted one gets out and is traced, one of a profile without IPv6
//! gets nothing out over IPv6, one that forges another IPv6 source gets nothing out
//! (tests/cluster/netns.rs: its datagrams cross at the veth's MTU over IPv6 too).
//!
//! Profiles of `slurm-test-env/extnet-test.toml`: `default` (cgroup mode), `isolated` (netns
//! mode), `web6` (TCP 7000 of the outside host over IPv4, UDP 7001 over IPv6), `v4only` and
//! `v4onlyns` (`ipv6 = false`, cgroup and netns mode).

use std::time::Duration;
use support::cluster::*;
use support::fail_closed::*;
use support::gateway::*;
use support::wait;

const NODE: &str = "n1";

fn in_block(port: u16, block: (u16, u16)) -> bool {
    block.0 <= port && port <= block.1
}

/// What reached the outside host since `mark` over IPv6 (its log has both families).
fn seen6_since(c: &Cluster, mark: u64) -> Vec<Seen> {
    c.seen_since(mark)
        .into_iter()
        .filter(|s| s.ip.contains(':'))
        .collect()
}

/// The cluster itself: the outside host answers TCP, UDP, UDP-Lite, HTTP and ICMP echo over
/// IPv6, and tells each gateway its own IPv6 address (no NAT for the gateways' own traffic);
/// IPv4 as before.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn the_outside_host_answers_the_gateways_on_both_families() {
    let c = Cluster::get();
    let p = c.probe();
    for (gw, own6, own4) in [
        ("gw1", GW1_OUT6, "203.0.113.1"),
        ("gw2", GW2_OUT6, "203.0.113.2"),
    ] {
        for proto in ["tcp", "udp", "udplite", "http"] {
            let r = c.on_host(gw, &[&p, proto, OUTSIDE6]);
            let seen = r.seen(proto);
            assert!(
                r.ok() && seen.len() == 1 && seen[0].0 == own6,
                "{gw}: {proto} to [{OUTSIDE6}] must be seen from {own6}:\n{r}"
            );
        }
        let r = c.on_host(gw, &[&p, "tcp", OUTSIDE]);
        let seen = r.seen("tcp");
        assert!(
            r.ok() && seen.len() == 1 && seen[0].0 == own4,
            "{gw}: tcp to {OUTSIDE} must be seen from {own4}:\n{r}"
        );
        // ICMPv6 echo: answered by the outside host's kernel; its log has the request
        let mark = c.seen_log_mark();
        let r = c.on_host(gw, &[&p, "icmp", OUTSIDE6, "--port", "4242"]);
        assert!(r.ok(), "{gw}: ICMPv6 echo to {OUTSIDE6}:\n{r}");
        let echoes: Vec<Seen> = seen6_since(&c, mark)
            .into_iter()
            .filter(|s| s.proto == "icmp")
            .collect();
        // the gateways' own echoes are not logged (--icmp-ignore-from: their path checks)
        assert!(
            echoes.is_empty(),
            "the outside host logs no echo of the gateways' own addresses: {echoes:?}"
        );
    }
}

/// A node reaches the gateways' own IPv6 addresses and, once the policy gives the virtual
/// addresses IPv6 ones, those (nothing listens on port 9: "refused" proves the address
/// answered); but its own IPv6 has no route out: compute nodes reach the outside only through
/// extnet's routing table, which only a granted job's packets use.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_node_reaches_the_gateways_over_ipv6_but_has_no_route_out() {
    let c = Cluster::get();
    let p = c.probe();
    let mut targets = vec![GW1_CLUSTER6, GW2_CLUSTER6];
    if c.policy_has_ipv6() {
        targets.extend([VIP6, VIP2_6]);
    }
    for node in NODES {
        for addr in &targets {
            let r = c.on_node(node, &[&p, "tcp", addr, "--port", "9", "--timeout", "2"]);
            assert!(
                !r.ok() && r.stderr.contains("refused"),
                "{node} must reach [{addr}] (connection refused on port 9):\n{r}"
            );
        }
        let route = c.on_node(node, &["ip", "-6", "route", "get", OUTSIDE6]);
        assert!(
            !route.ok(),
            "{node} must have no IPv6 route to {OUTSIDE6} of its own:\n{route}"
        );
        let r = c.on_node(node, &[&p, "tcp", OUTSIDE6, "--timeout", "2"]);
        assert!(
            !r.ok() && r.seen("tcp").is_empty(),
            "{node} reached {OUTSIDE6} without extnet:\n{r}"
        );
    }
}

/// A granted cgroup-mode job (`srun --external-net`) reaches the outside host over IPv6 with
/// TCP, UDP, HTTP and ICMPv6 echo, and over IPv4 as before: the outside sees the IPv6 public
/// address of the nodes' virtual address with ports (and an echo identifier) of the job's
/// block, and `extnet trace [ADDR]:PORT` names the job, its user and its node, while the job's
/// leases are fresh and again after the gateways forgot the connections.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_granted_cgroup_job_gets_out_over_ipv6_from_its_block_and_is_traced() {
    gets_out_over_ipv6_from_its_block_and_is_traced("default", true);
}

/// The same of a granted netns-mode job (profile `isolated`): its IPv6 leaves its namespace
/// from its slot's /126 (`node.netns_subnet6`), is forwarded, translated into its block and
/// traced to it. No ICMPv6 echo: a job's own namespace does not let users open ping sockets
/// (`net.ipv4.ping_group_range` is per namespace, and empty in a new one).
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_granted_netns_job_gets_out_over_ipv6_from_its_block_and_is_traced() {
    gets_out_over_ipv6_from_its_block_and_is_traced("isolated", false);
}

/// A granted job of `profile` probes TCP, UDP, HTTP (and with `icmp` ICMPv6 echo) over IPv6
/// and TCP over IPv4; see the two tests above.
fn gets_out_over_ipv6_from_its_block_and_is_traced(profile: &str, icmp: bool) {
    let c = Cluster::get();
    let p = c.probe();
    let mark = c.seen_log_mark();
    let echo = if icmp {
        format!("{p} icmp {OUTSIDE6} --port 29000 && ")
    } else {
        String::new()
    };
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, &format!("--external-net={profile}")],
        // the probes start a second after the allocate, so that the moment traced below is
        // not the second in which the previous test's job may have released the same block
        // (the test policy's quarantine is 0; trace rightly answers "one of two" then)
        &format!(
            "sleep 1.1 && {p} tcp {OUTSIDE6} && {p} udp {OUTSIDE6} && {p} http {OUTSIDE6} && \
             {echo}{p} tcp"
        ),
    );
    assert!(
        r.ok(),
        "a granted job ({profile}) must get out over IPv6:\n{r}"
    );
    let job = r.job_id();
    let block = c.block(job, NODE);
    let mut seen = Vec::new();
    for proto in ["tcp", "udp", "http"] {
        let all = r.seen(proto);
        let (v6, v4): (Vec<_>, Vec<_>) = all.into_iter().partition(|(ip, _)| ip.contains(':'));
        assert_eq!(v6.len(), 1, "one {proto} answer over IPv6:\n{r}");
        let (ip, port) = v6[0].clone();
        assert!(
            ip == GATEWAY_PUBLIC6 && in_block(port, block),
            "{proto}: the outside saw [{ip}]:{port}, not {GATEWAY_PUBLIC6} with a port of the block {block:?}:\n{r}"
        );
        if proto == "tcp" {
            assert!(
                v4.len() == 1 && v4[0].0 == GATEWAY_PUBLIC && in_block(v4[0].1, block),
                "IPv4 as before: {GATEWAY_PUBLIC} with a port of the block {block:?}:\n{r}"
            );
        }
        seen.push((ip, port));
    }
    let seen6 = seen6_since(&c, mark);
    let echoes: Vec<&Seen> = seen6.iter().filter(|s| s.proto == "icmp").collect();
    assert!(
        !icmp
            || echoes.len() == 1
                && echoes[0].ip == GATEWAY_PUBLIC6
                && in_block(echoes[0].port, block),
        "the job asked for echo identifier 29000 (beyond every block): the outside must see one \
         echo from {GATEWAY_PUBLIC6} with an identifier of the block {block:?}: {echoes:?}"
    );
    // a moment the job held its lease: when the outside host saw its first IPv6 packet
    let at = seen6
        .first()
        .expect("the job's IPv6 reached the outside host")
        .at as u64;
    let check = |when: &str| {
        for (ip, port) in &seen {
            let t = c.trace(ip, *port, at);
            let leases = t["leases"].as_array().cloned().unwrap_or_default();
            assert!(
                t["node"] == NODE
                    && leases.len() == 1
                    && leases[0]["job_id"] == job
                    && leases[0]["user"] == ALLOWED
                    && leases[0]["node"] == NODE,
                "{when}: [{ip}]:{port} (job {job} of {ALLOWED} on {NODE}) traced to {t}"
            );
        }
    };
    check("the job just ended");
    c.gw_ctl(&["forget"]);
    check("after the gateways forgot the connections");
    c.assert_clean(job);
    assert_eq!(c.lease_events(job), ["allocate", "release"]);
}

/// A job of the same user without `--external-net`, beside a granted job that runs on the
/// same node: nothing of it reaches the outside over IPv6 (TCP, UDP, ICMPv6), nor over IPv4,
/// and it gets no lease.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_job_without_the_flag_gets_nothing_out_over_ipv6() {
    let c = Cluster::get();
    let p = c.probe();
    let granted = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", NODE, "--external-net"],
        &format!("echo JOB=$SLURM_JOB_ID; {p} tcp {OUTSIDE6}; sleep 20"),
    );
    c.wait_running(granted, NODE);
    // from here on, nothing of the granted job reaches the outside host
    c.wait_job_output(ALLOWED, granted, "SEEN tcp");
    let mark = c.seen_log_mark();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE],
        &format!(
            "for a in '{p} tcp {OUTSIDE6}' '{p} udp {OUTSIDE6}' '{p} icmp {OUTSIDE6} --port 29000' \
             '{p} tcp' '{p} udp'; do $a --timeout 2; echo rc=$?; done"
        ),
    );
    c.login(ALLOWED, 20, &["scancel", &granted.to_string()]);
    let job = r.job_id();
    assert!(
        r.stdout.matches("rc=1").count() == 5 && !r.stdout.contains("rc=0"),
        "a job without --external-net got out:\n{r}"
    );
    let leaked = c.seen_since(mark);
    assert!(
        leaked.is_empty(),
        "job {job} (no flag) reached the outside host: {leaked:?}"
    );
    assert!(
        c.lease_records(job).is_empty(),
        "a job that did not ask got a lease"
    );
    c.assert_clean(job);
    c.assert_clean(granted);
}

/// Profile `web6`: TCP 7000 of the outside host over IPv4, UDP 7001 over IPv6. Each entry
/// applies to its family only: the job's IPv6 UDP 7001 and IPv4 TCP 7000 get out, its IPv6 TCP
/// 7000, IPv6 HTTP 8080 and IPv4 UDP 7001 do not, and the outside host sees nothing of them.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn an_allowlist_entry_lets_through_its_own_family_only() {
    let c = Cluster::get();
    let p = c.probe();
    let mark = c.seen_log_mark();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, "--external-net=web6"],
        &format!(
            "for a in '{p} udp {OUTSIDE6}' '{p} tcp' '{p} tcp {OUTSIDE6}' '{p} http {OUTSIDE6}' \
             '{p} udp'; do $a --timeout 2; echo rc=$?; done"
        ),
    );
    let job = r.job_id();
    let block = c.block(job, NODE);
    let rcs: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("rc="))
        .collect();
    assert_eq!(
        rcs,
        ["0", "0", "1", "1", "1"],
        "web6 lists IPv6 UDP 7001 and IPv4 TCP 7000 only:\n{r}"
    );
    let seen = c.seen_since(mark);
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.proto.as_str(), s.ip.as_str()))
        .collect();
    assert_eq!(
        got,
        [("udp", GATEWAY_PUBLIC6), ("tcp", GATEWAY_PUBLIC)],
        "the outside host saw: {seen:?}\n{r}"
    );
    for s in &seen {
        assert!(in_block(s.port, block), "{s}: not of the block {block:?}");
    }
    c.assert_clean(job);
}

/// Profile `v4only` (`ipv6 = false`): its jobs get IPv4 out, and their IPv6 is dropped as on a
/// node without `gateway6`.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_profile_without_ipv6_gets_ipv4_only() {
    gets_ipv4_only("v4only", true);
}

/// Profile `v4onlyns` (netns mode, `ipv6 = false`): its jobs get IPv4 out and no IPv6
/// address on their veth pair at all, so nothing of their IPv6 leaves.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_netns_profile_without_ipv6_gets_ipv4_only() {
    gets_ipv4_only("v4onlyns", false);
}

/// A job of `profile` probes TCP over IPv4, then TCP, UDP (and with `icmp` ICMPv6 echo) over
/// IPv6: only the first gets an answer, and the outside host sees no IPv6 of it.
fn gets_ipv4_only(profile: &str, icmp: bool) {
    let c = Cluster::get();
    let p = c.probe();
    let mark = c.seen_log_mark();
    let mut probes = vec![
        format!("{p} tcp"),
        format!("{p} tcp {OUTSIDE6}"),
        format!("{p} udp {OUTSIDE6}"),
    ];
    if icmp {
        probes.push(format!("{p} icmp {OUTSIDE6}"));
    }
    let list: Vec<String> = probes.iter().map(|a| format!("'{a}'")).collect();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, &format!("--external-net={profile}")],
        &format!(
            "for a in {}; do $a --timeout 2; echo rc=$?; done",
            list.join(" ")
        ),
    );
    let job = r.job_id();
    let rcs: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("rc="))
        .collect();
    let mut want = vec!["0"];
    want.resize(probes.len(), "1");
    assert_eq!(rcs, want, "IPv4 only ({profile}):\n{r}");
    let v6 = seen6_since(&c, mark);
    assert!(v6.is_empty(), "IPv6 of a {profile} job got out: {v6:?}");
    c.assert_clean(job);
}

/// A netns job sends UDP over IPv6 from addresses that are not its own (`IPV6_FREEBIND`, which
/// needs no privilege): the job address of the neighbouring slot, an address of the cluster's
/// own network, one of the outside's; and once from its own address. Only the last reaches the
/// outside host, from the job's block: the node marks a netns job's IPv6 only by a source
/// address that routes back through the veth it came in by.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_netns_job_forging_another_ipv6_source_gets_nothing_out() {
    let c = Cluster::get();
    let mark = c.seen_log_mark();
    let script = format!(
        r#"python3 -c '
import ipaddress, socket, subprocess
out = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"], capture_output=True, text=True).stdout
own = ipaddress.IPv6Address(out.split()[3].split("/")[0])
# the neighbouring slot: the /126 number s ^ 1
other = ipaddress.IPv6Address(int(own) ^ 4)
for src in (other, "fd00:78e7::99", "2001:db8::77", own):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
    s.bind((str(src), 0))
    s.settimeout(1)
    for _ in range(3):
        s.sendto(b"forged" if src != own else b"own", ("{OUTSIDE6}", 7001))
    try:
        print("GOT", src, s.recv(200).decode().strip())
    except OSError as e:
        print("LOST", src, e)
'"#
    );
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, "--external-net=isolated"],
        &script,
    );
    assert!(r.ok(), "the job failed:\n{r}");
    let job = r.job_id();
    let block = c.block(job, NODE);
    let got: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("GOT ")).collect();
    let lost = r.stdout.lines().filter(|l| l.starts_with("LOST ")).count();
    assert!(
        got.len() == 1 && lost == 3 && got[0].contains(&format!("SEEN udp {GATEWAY_PUBLIC6} ")),
        "only the job's own address gets an answer:\n{r}"
    );
    let seen = c.seen_since(mark);
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|s| s.proto == "udp" && s.ip == GATEWAY_PUBLIC6 && in_block(s.port, block)),
        "the outside host must see the job's own datagrams only, from its block {block:?}: {seen:?}\n{r}"
    );
    c.assert_clean(job);
}

/// A granted job probes TCP and UDP over IPv6 every 0.3 s while `break_base` breaks n1's base
/// and, a few seconds later, `extnet node setup` puts it back: it gets out from its block
/// before and after, and nothing at all while the base is broken.
fn ipv6_fails_closed_while(what: &str, break_base: impl FnOnce(&Cluster) -> Run) {
    let c = Cluster::get();
    let _base = c.restore_base_on_drop(NODE);
    let mark = c.seen_log_mark();
    let job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", NODE, "--external-net=default"],
        &probe_loop(&c, OUTSIDE6, &[("tcp", 1.0), ("udp", 0.5)], 14),
    );
    c.wait_job_output(ALLOWED, job, " tcp SEEN ");
    std::thread::sleep(Duration::from_secs(2));
    let (broke, broken) = timed(|| break_base(&c));
    assert!(broke.ok(), "{what} on {NODE}:\n{broke}");
    std::thread::sleep(Duration::from_secs(4));
    let (setup, repaired) = timed(|| c.node_setup(NODE));
    assert!(setup.ok(), "extnet node setup on {NODE}:\n{setup}");
    c.wait_gone(job);

    let seen = seen6_since(&c, mark);
    let out = c.job_output(ALLOWED, job);
    let block = c.block(job, NODE);
    let mut f = Findings::default();
    judge(
        &mut f,
        &seen,
        GATEWAY_PUBLIC6,
        block,
        &["tcp", "udp"],
        what,
        broken,
        repaired,
    );
    f.assert_none(format!(
        "job {job} (block {block:?})\n{}",
        timeline(&seen, broken, repaired, &out)
    ));
    c.assert_clean(job);
}

/// `nft flush ruleset` on n1 (both families' tables gone): a granted job's IPv6 gets nowhere
/// until the base is back.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_flushed_ruleset_lets_no_ipv6_out() {
    ipv6_fails_closed_while("the ruleset was flushed", |c| {
        c.on_node(NODE, &["nft", "flush", "ruleset"])
    });
}

/// extnet's IPv6 `ip -6 rule`s deleted by hand on n1: a granted job's IPv6 gets nowhere,
/// translated or not, until `extnet node setup` puts them back.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_deleted_ipv6_rule_lets_nothing_out_until_the_base_is_back() {
    let c = Cluster::get();
    let rules = extnet_rules(&c, NODE, "-6");
    assert!(
        !rules.is_empty(),
        "no IPv6 fwmark rule of extnet's table on {NODE}"
    );
    ipv6_fails_closed_while("extnet's IPv6 ip rule was deleted", |c| {
        delete_rules(c, NODE, "-6", &rules)
    });
    assert_eq!(
        extnet_rules(&c, NODE, "-6"),
        rules,
        "extnet node setup must put the IPv6 rules back"
    );
}

/// gw1, master of the nodes' virtual addresses, dies while a job on n1 opens an IPv6 TCP
/// connection every 0.2 s and receives a long iperf3 transfer over IPv6: gw2 takes the IPv6
/// virtual and public addresses together with the IPv4 ones, new connections succeed again
/// within 3 s, the transfer goes on (gw2 has its state from conntrackd), through gw1's return
/// too; the outside sees the IPv6 public address and ports of the job's block throughout.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_failover_keeps_ipv6_connections() {
    const SECS: u32 = 24;
    let c = Cluster::get();
    assert!(
        c.holds("gw1", VIP6) && c.holds("gw1", GATEWAY_PUBLIC6) && !c.holds("gw2", VIP6),
        "gw1 must hold {VIP6} and {GATEWAY_PUBLIC6} before the test"
    );
    let p = c.probe();
    let log = c.work(ALLOWED).join("failover6-iperf3.json");
    let _ = std::fs::remove_file(&log);
    let script = format!(
        "#!/bin/sh\n#SBATCH -N1\n#SBATCH -w {NODE}\n#SBATCH --external-net\necho JOB=$SLURM_JOB_ID\n\
         timeout {t} iperf3 -6 -R -c {OUTSIDE6} -t {SECS} -b 20M -J --logfile {log} & i=$!\n\
         {p} tcp {OUTSIDE6} --for {SECS} --every 0.2 --timeout 0.5\n\
         wait $i; echo IPERF_RC=$?\n",
        t = SECS + 20,
        log = log.display(),
    );
    let job = c.sbatch_script_nowait(ALLOWED, "failover6.sh", &script);
    c.wait_job_output(ALLOWED, job, " SEEN tcp ");
    let block = c.block(job, NODE);
    std::thread::sleep(Duration::from_secs(4));
    let mut gw1 = c.fail_gateway("gw1");
    let died = now();
    wait::until(Duration::from_secs(10), Duration::from_millis(50), || {
        if [VIP1, PUBLIC1, VIP6, GATEWAY_PUBLIC6]
            .iter()
            .all(|a| c.holds("gw2", a))
        {
            return Ok(());
        }
        Err(format!(
            "gw2 did not take {VIP1}, {PUBLIC1}, {VIP6} and {GATEWAY_PUBLIC6} within 10 s of gw1's death"
        ))
    });
    std::thread::sleep(Duration::from_secs(6));
    gw1.restore();
    assert!(
        c.holds("gw1", VIP6) && !c.holds("gw2", VIP6),
        "gw1 did not take {VIP6} back"
    );
    c.wait_gone(job);
    let out = c.job_output(ALLOWED, job);
    let attempts = Attempt::all(&out);
    let back = attempts
        .iter()
        .find(|a| a.at > died && a.outcome.is_ok())
        .map(|a| a.at - died)
        .unwrap_or_else(|| panic!("no new IPv6 connection succeeded after gw1 died:\n{out}"));
    assert!(
        back <= 3.0,
        "new IPv6 connections succeeded again only {back:.2} s after gw1 died (bound: 3 s):\n{out}"
    );
    for a in &attempts {
        if let Ok((ip, port)) = &a.outcome {
            assert!(
                ip == GATEWAY_PUBLIC6 && in_block(*port, block),
                "left as [{ip}]:{port}, not {GATEWAY_PUBLIC6} with a port of the block {block:?}: {a}"
            );
        }
    }
    assert!(
        out.contains("IPERF_RC=0"),
        "the IPv6 transfer broke (see {}):\n{out}",
        log.display()
    );
    c.assert_clean(job);
}

/// Profile `bulk` leaves through the gateways' second virtual address (`bulk`: 10.99.0.253
/// and fd00:78e7::253, master gw2): its jobs' IPv6 takes the same way as their IPv4, to
/// fd00:78e7::253 by the pool's own IPv6 rule and table, and leaves from that address's
/// `public6` (2001:db8::102) with a port of the job's block, which `extnet trace` leads back
/// to the job. Through the main address instead, gw1 would translate it to 2001:db8::102,
/// which gw2 holds: the replies would go to gw2, which has no such connection.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_pool_behind_the_second_virtual_address_gets_out_over_ipv6_through_it() {
    let c = Cluster::get();
    let p = c.probe();
    let policy = c.policy().for_node(NODE).unwrap();
    let bulk = policy.pool_of_profile("bulk").expect("profile bulk");
    assert_eq!(
        bulk.gateway6.map(|a| a.to_string()).as_deref(),
        Some("fd00:78e7::253")
    );
    // the node's IPv6 routing of the pool: its rules, and its table's default
    let rules = c.on_node(NODE, &["ip", "-6", "rule", "show"]);
    for r in extnet::plan::pool_rules(&policy) {
        let rule = format!(
            "{}:\tfrom all fwmark {:#x}/{:#x} lookup {}",
            r.priority, r.fwmark, r.mask, r.table
        );
        assert!(rules.stdout.contains(&rule), "{rule:?} in:\n{rules}");
    }
    let table = c.on_node(
        NODE,
        &[
            "ip",
            "-6",
            "route",
            "show",
            "table",
            &bulk.route_table.to_string(),
        ],
    );
    assert!(
        table.stdout.contains("default via fd00:78e7::253 dev eth0"),
        "the pool's table:\n{table}"
    );
    let mark = c.seen_log_mark();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, "--external-net=bulk"],
        &format!("sleep 1.1 && {p} tcp {OUTSIDE6} && {p} udp {OUTSIDE6} && {p} tcp"),
    );
    assert!(r.ok(), "a bulk job must get out over IPv6:\n{r}");
    let job = r.job_id();
    let block = c.block(job, NODE);
    assert!(
        (bulk.ports.first..=bulk.ports.last).contains(&block.0),
        "job {job}'s block {block:?} is the bulk pool's ({}-{})",
        bulk.ports.first,
        bulk.ports.last
    );
    let mut seen = Vec::new();
    for proto in ["tcp", "udp"] {
        let v6: Vec<_> = r
            .seen(proto)
            .into_iter()
            .filter(|(ip, _)| ip.contains(':'))
            .collect();
        assert!(
            v6.len() == 1 && v6[0].0 == GATEWAY2_PUBLIC6 && in_block(v6[0].1, block),
            "{proto}: the outside must see one IPv6 packet from {GATEWAY2_PUBLIC6} with a port of \
             the block {block:?}: {v6:?}\n{r}"
        );
        seen.push(v6[0].clone());
    }
    let v4 = r.seen("tcp");
    assert!(
        v4.iter()
            .any(|(ip, port)| ip == GATEWAY2_PUBLIC && in_block(*port, block)),
        "IPv4 as before, from {GATEWAY2_PUBLIC}: {v4:?}\n{r}"
    );
    // a moment the job held its lease: when the outside host saw its first IPv6 packet
    let at = seen6_since(&c, mark)
        .first()
        .expect("the job's IPv6 reached the outside host")
        .at as u64;
    for (ip, port) in &seen {
        let t = c.trace(ip, *port, at);
        let leases = t["leases"].as_array().cloned().unwrap_or_default();
        assert!(
            t["node"] == NODE && leases.iter().any(|l| l["job_id"] == job),
            "[{ip}]:{port} (job {job} on {NODE}) traced to {t}"
        );
    }
    c.assert_clean(job);
}

//! The node heals itself, on the real test cluster: `slurm-test-env/up` runs extnet's node
//! agent (`extnet node watch`) in each compute node's namespace. A granted job of profile
//! `web` (an allowlist: the outside host's TCP 7000 only) probes the outside host over and
//! over, TCP 7000 and UDP 7001, while the test flushes n1's whole ruleset and then sets n1's
//! eth0 down and up. After each, the job gets out again within 2 s, from its port block; the
//! outside host never sees anything of it outside its allowlist, nor from outside its block;
//! the agent logged one repair per drift.
//!
//! Needs root and the running cluster: ignored by a plain `cargo test`, run by
//! `slurm-test-env/test`.

use std::path::Path;
use std::time::{Duration, Instant};
use support::cluster::*;

/// How soon the job must be out again.
const BOUND: Duration = Duration::from_secs(2);

/// The outside host's log (`SEEN <proto> <ip> <port>` lines with a timestamp in front).
fn seen_log(c: &Cluster) -> std::path::PathBuf {
    c.xn_dir.join("out/seen.log")
}

/// The `(proto, ip, port)` of each SEEN line of `path` after byte `from`.
fn seen_since(path: &Path, from: usize) -> Vec<(String, String, u16)> {
    let text = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(text.get(from..).unwrap_or_default())
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 5 || f[1] != "SEEN" {
                return None;
            }
            Some((f[2].to_owned(), f[3].to_owned(), f[4].parse().ok()?))
        })
        .collect()
}

fn len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |m| m.len() as usize)
}

/// Waits (polling the outside host's log every 10 ms) until the job's TCP probe is seen after
/// byte `from`, through the gateway and from its block; how long that took from `since`.
fn out_again(c: &Cluster, from: usize, since: Instant, block: (u16, u16), what: &str) -> Duration {
    loop {
        let ok = seen_since(&seen_log(c), from)
            .iter()
            .any(|(proto, ip, port)| {
                proto == "tcp" && ip == GATEWAY_PUBLIC && (block.0..=block.1).contains(port)
            });
        if ok {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "{what}: the job did not get out again within 20 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The repairs the node agent of `node` has logged so far.
fn repairs_logged(c: &Cluster, node: &str) -> usize {
    std::fs::read_to_string(c.xn_dir.join(format!("log/watch-{node}.out")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("repaired the node's base"))
        .count()
}

/// Runs `args` on n1 as root and asserts that it worked.
fn on_n1(c: &Cluster, args: &[&str]) {
    let r = c.on_node("n1", args);
    assert!(r.ok(), "{args:?} on n1:\n{r}");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_granted_job_gets_out_again_within_2_s_of_a_flushed_ruleset_and_a_link_flap() {
    let c = Cluster::get();
    let pid_file = c.xn_dir.join("pids/watch-n1.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; slurm-test-env/up starts the node agents",
            pid_file.display()
        )
    });
    let pid = pid.split_whitespace().next().unwrap_or_default().to_owned();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "n1's node agent (pid {pid}) does not run; see {}/log/watch-n1.out",
        c.xn_dir.display()
    );

    let p = c.probe();
    let stop = c.work(ALLOWED).join("heal-stop");
    let _ = std::fs::remove_file(&stop);
    let job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1", "--external-net=web"],
        &format!(
            "i=0; while [ ! -e {stop} ] && [ $i -lt 600 ]; do {p} tcp --timeout 0.4 >/dev/null 2>&1; {p} udp --timeout 0.1 >/dev/null 2>&1; i=$((i+1)); done",
            stop = stop.display()
        ),
    );
    c.wait_running(job, "n1");
    let block = c.block(job, "n1");
    let start = len(&seen_log(&c));
    out_again(&c, start, Instant::now(), block, "the job's first probe");

    // a firewall reload: every table of n1's namespace gone
    let before = repairs_logged(&c, "n1");
    let from = len(&seen_log(&c));
    let t = Instant::now();
    on_n1(&c, &["nft", "flush", "ruleset"]);
    let took = out_again(&c, from, t, block, "nft flush ruleset");
    println!("nft flush ruleset on n1: the job got out again after {took:?}");
    assert!(took <= BOUND, "nft flush ruleset: {took:?}");

    // a link flap: the routes through eth0 go with it
    std::thread::sleep(Duration::from_secs(1));
    let flushed = repairs_logged(&c, "n1");
    on_n1(&c, &["ip", "link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_millis(500));
    let from = len(&seen_log(&c));
    let t = Instant::now();
    on_n1(&c, &["ip", "link", "set", "eth0", "up"]);
    let took = out_again(&c, from, t, block, "eth0 down and up");
    println!("eth0 down and up on n1: the job got out again {took:?} after up");
    assert!(took <= BOUND, "eth0 up: {took:?}");
    std::thread::sleep(Duration::from_secs(1));
    let flapped = repairs_logged(&c, "n1");

    std::fs::write(&stop, "").unwrap();
    c.wait_gone(job);
    let _ = std::fs::remove_file(&stop);
    assert_eq!(
        (flushed - before, flapped - flushed),
        (1, 1),
        "one repair per drift (see {}/log/watch-n1.out)",
        c.xn_dir.display()
    );
    // everything the outside host saw meanwhile: the job's TCP 7000 through the gateway from
    // its block, nothing else (no UDP: not in its allowlist; no port outside its block)
    let seen = seen_since(&seen_log(&c), start);
    let stray: Vec<_> = seen
        .iter()
        .filter(|(proto, ip, port)| {
            !(proto == "tcp" && ip == GATEWAY_PUBLIC && (block.0..=block.1).contains(port))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "the outside host saw what job {job} (block {block:?}, allowlist TCP 7000) must not send: {stray:?}"
    );
    assert!(seen.len() >= 3, "{seen:?}");
    c.assert_clean(job);
}

//! Stress tests on the real test cluster (`slurm-test-env/`): many external jobs at once, and
//! the node's lock and lease table under many concurrent prologs.
//!
//! Like `tests/cluster.rs` they need root and the running cluster, so they are ignored by a
//! plain `cargo test`; `slurm-test-env/test` runs them. Each checks, from the lease log, that no
//! port block was ever held by two jobs at once on a node, nor leased again before its
//! quarantine ended, and that nothing of any job is left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::cluster::*;
use support::wait;

/// Jobs per array: one array in cgroup mode, one in netns mode.
const PER_ARRAY: u32 = 100;

/// One lease-log record.
#[derive(Debug, Clone)]
struct Rec {
    event: String,
    job: u32,
    first: u16,
    last: u16,
    unix: u64,
    user: String,
}

/// The records of `node`'s lease log, in order.
fn records(c: &Cluster, node: &str) -> Vec<Rec> {
    c.log("lease", node)
        .into_iter()
        .map(|r| Rec {
            event: r["event"].as_str().unwrap_or_default().to_owned(),
            job: r["job_id"].as_u64().unwrap() as u32,
            first: r["port_first"].as_u64().unwrap() as u16,
            last: r["port_last"].as_u64().unwrap() as u16,
            unix: r["unix"].as_u64().unwrap(),
            user: r["user"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// What the lease log of one node says, checked record by record in the order they were
/// written (under the node lock, so in the order things happened).
struct LogWalk {
    /// job → its (allocate, release) counts
    counts: BTreeMap<u32, (u32, u32)>,
    /// the most leases of the jobs in focus active at once
    max_active: usize,
}

/// Walks the node's lease log: an allocate must not overlap the ports of a lease still
/// active, nor of another user's lease released less than `quarantine` seconds before (a
/// user takes back their own quarantined blocks first); a release must end an active lease. Panics with the offending records otherwise.
fn walk(c: &Cluster, node: &str, quarantine: u64, focus: &[u32]) -> LogWalk {
    let mut active: BTreeMap<u32, Rec> = BTreeMap::new();
    let mut released: Vec<Rec> = Vec::new();
    let mut counts: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let mut max_active = 0;
    for r in records(c, node) {
        let overlaps = |o: &Rec| r.first <= o.last && o.first <= r.last;
        match r.event.as_str() {
            "allocate" => {
                counts.entry(r.job).or_default().0 += 1;
                if let Some(same) = active.get(&r.job) {
                    // logged again by a prolog run again after a crash: the same block
                    assert_eq!(
                        (same.first, same.last),
                        (r.first, r.last),
                        "{node}: job {} allocated twice with different blocks",
                        r.job
                    );
                    continue;
                }
                if let Some(o) = active.values().find(|o| overlaps(o)) {
                    panic!(
                        "{node}: block {}-{} issued to job {} while job {} held {}-{}",
                        r.first, r.last, r.job, o.job, o.first, o.last
                    );
                }
                if let Some(o) = released
                    .iter()
                    .find(|o| overlaps(o) && r.unix < o.unix + quarantine && o.user != r.user)
                {
                    panic!(
                        "{node}: block {}-{} issued to job {} at {}, within the {quarantine} s quarantine of job {}'s release at {}",
                        r.first, r.last, r.job, r.unix, o.job, o.unix
                    );
                }
                active.insert(r.job, r);
                let n = active.keys().filter(|j| focus.contains(j)).count();
                max_active = max_active.max(n);
            }
            "release" => {
                counts.entry(r.job).or_default().1 += 1;
                match active.remove(&r.job) {
                    Some(a) => assert_eq!(
                        (a.first, a.last),
                        (r.first, r.last),
                        "{node}: job {} released another block than it was given",
                        r.job
                    ),
                    // an epilog run again after a crash logs its release again
                    None => assert!(
                        released.iter().any(|o| o.job == r.job),
                        "{node}: job {} released a block it was never given",
                        r.job
                    ),
                }
                released.push(r);
            }
            _ => {} // interim and later record kinds
        }
    }
    LogWalk { counts, max_active }
}

fn quarantine(c: &Cluster) -> u64 {
    extnet_policy::Policy::load(&c.xn_dir.join("etc/extnet.toml"))
        .expect("the test cluster's policy")
        .ports
        .quarantine_secs
}

/// A TCP connection the gateway translated, from its conntrack table: the original source
/// (the node's address and the port the node's SNAT chose) and the port the outside host saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Translated {
    src: String,
    sport: u16,
    seen_port: u16,
}

/// The gateway's conntrack entries of TCP connections to the outside host's port 7000.
///
/// Why: the test gateway masquerades every node to one address, and each node leases the same
/// port ranges, so two nodes' jobs can pick the same port for the same destination; the
/// gateway then gives one of them another port. What the outside sees is therefore not always
/// the job's port, but the gateway's table says which port the node sent from.
fn gateway_conntrack(c: &Cluster, into: &mut std::collections::BTreeSet<Translated>) {
    let r = c.on_node("gw1", &["cat", "/proc/net/nf_conntrack"]);
    assert!(r.ok(), "read gw1's conntrack table: {r}");
    parse_conntrack(&r.stdout, into);
}

fn parse_conntrack(text: &str, into: &mut std::collections::BTreeSet<Translated>) {
    for line in text.lines().filter(|l| l.contains(" tcp ")) {
        let kv: Vec<(&str, &str)> = line
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .collect();
        let nth = |k: &str, n: usize| kv.iter().filter(|(x, _)| *x == k).nth(n).map(|(_, v)| *v);
        if nth("dst", 0) != Some(OUTSIDE) || nth("dport", 0) != Some("7000") {
            continue;
        }
        if let (Some(src), Some(sport), Some(seen)) =
            (nth("src", 0), nth("sport", 0), nth("dport", 1))
        {
            into.insert(Translated {
                src: src.to_owned(),
                sport: sport.parse().unwrap(),
                seen_port: seen.parse().unwrap(),
            });
        }
    }
}

/// Reads gw1's conntrack table every 20 ms until stopped, from a thread of this test that
/// joined gw1's network namespace (no process per read). The gateway forgets a closed
/// connection after 1 s (slurm-test-env/up shortens its timeouts), so a poll between squeue
/// calls alone can miss a translation.
struct ConntrackWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeSet<Translated>>,
}

impl ConntrackWatch {
    fn start() -> ConntrackWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let ns = std::fs::File::open("/run/netns/xn-gw1").expect("open gw1's namespace");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("join gw1's namespace (this thread only)");
            let _ = ready_tx.send(());
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                let text = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack")
                    .expect("read gw1's conntrack table");
                parse_conntrack(&text, &mut seen);
                if done {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the conntrack watcher joined gw1's namespace");
        ConntrackWatch { stop, thread }
    }

    /// Stops the thread and adds what it saw; returns how many translations that was.
    fn finish(self, into: &mut std::collections::BTreeSet<Translated>) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.thread.join().expect("conntrack watcher");
        let n = seen.len();
        into.extend(seen);
        n
    }
}

/// Waits until none of `user`'s jobs is queued or running; at most `secs`. Meanwhile collects
/// the gateway's translations (its entries expire 120 s after a connection closed).
fn wait_all_done(
    c: &Cluster,
    user: &str,
    secs: u64,
    ct: &mut std::collections::BTreeSet<Translated>,
) {
    wait::until(Duration::from_secs(secs), Duration::from_secs(1), || {
        gateway_conntrack(c, ct);
        let q = c.login("root", 30, &["squeue", "-h", "-r", "-u", user, "-o", "%i"]);
        assert!(q.ok(), "squeue: {q}");
        match q.stdout.lines().count() {
            0 => Ok(()),
            left => Err(format!(
                "{left} jobs of {user} still queued or running after {secs} s"
            )),
        }
    });
}

/// Asserts that nothing of any of `jobs` is left on any node (the epilog ends shortly after
/// slurmctld forgets a job, and the kernel reaps veths asynchronously: up to 60 s).
fn assert_no_residue(c: &Cluster, jobs: &[u32]) {
    let mut pending: Vec<u32> = jobs.to_vec();
    let clean = wait::poll(Duration::from_secs(60), Duration::from_millis(500), || {
        pending.retain(|&j| !c.residue(j).is_empty());
        if pending.is_empty() {
            Ok(())
        } else {
            Err(String::new())
        }
    });
    if clean.is_err() {
        let shown: Vec<String> = pending
            .iter()
            .take(5)
            .map(|&j| format!("job {j}:\n  {}", c.residue(j).join("\n  ")))
            .collect();
        panic!(
            "{} of {} jobs left something behind, e.g.\n{}",
            pending.len(),
            jobs.len(),
            shown.join("\n")
        );
    }
}

/// Asserts that `prog` (`prolog`, `epilog`) of `job` exited 0; shows its stderr otherwise.
fn assert_success(prog: &str, job: u32, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{prog} of job {job}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 200 external jobs (100 in cgroup mode, 100 in netns mode) across both nodes, several at
/// once on each: every job reaches the outside from inside its own block, nothing is left,
/// every job has its allocate and release records, and no block was issued twice.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn two_hundred_external_jobs_leave_no_residue_and_no_block_is_issued_twice() {
    let c = Cluster::get();
    let p = c.probe();
    let t0 = Instant::now();
    let watch = ConntrackWatch::start();
    let mut arrays = Vec::new();
    for profile in ["default", "isolated"] {
        let id = c.sbatch(
            ALLOWED,
            60,
            &[
                &format!("--array=1-{PER_ARRAY}"),
                "-n1",
                "-c1",
                &format!("--external-net={profile}"),
                "-o",
                "stress-%A-%a.out",
            ],
            &format!("echo JOB=$SLURM_JOB_ID; {p} tcp; sleep 1"),
        );
        arrays.push((profile, id));
    }
    let mut ct = std::collections::BTreeSet::new();
    wait_all_done(&c, ALLOWED, 900, &mut ct);
    gateway_conntrack(&c, &mut ct);
    let watched = watch.finish(&mut ct);
    // 200 connections to the outside went through gw1 while the watcher read its table
    assert!(
        watched >= 100,
        "the conntrack watcher saw only {watched} translations in gw1's namespace"
    );
    let ran = t0.elapsed();
    let mut remapped = 0;

    // every job: its output, its one SEEN line from the gateway, a port inside its block
    let work = c.work(ALLOWED);
    let mut jobs: Vec<(u32, &str)> = Vec::new();
    for &(profile, array) in &arrays {
        for task in 1..=PER_ARRAY {
            let path: PathBuf = work.join(format!("stress-{array}-{task}.out"));
            let out = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{profile} task {task}: {}: {e}", path.display()));
            let run = Run::from_job_output(out);
            let job = run.job_id();
            let seen = run.seen("tcp");
            assert_eq!(
                seen.len(),
                1,
                "job {job} ({profile}) did not get out:\n{run}"
            );
            let (ip, port) = &seen[0];
            assert_eq!(ip, GATEWAY_PUBLIC, "job {job}");
            let recs = c.lease_records(job);
            let alloc: Vec<_> = recs.iter().filter(|r| r["event"] == "allocate").collect();
            assert_eq!(alloc.len(), 1, "job {job}: allocate records {recs:?}");
            let rel = recs.iter().filter(|r| r["event"] == "release").count();
            assert_eq!(rel, 1, "job {job}: release records {recs:?}");
            let node = alloc[0]["node"].as_str().unwrap();
            let node_addr = alloc[0]["node_addr"].as_str().unwrap();
            let block = c.block(job, node);
            // the node sent it from inside the job's block; the gateway kept that port unless
            // another node's job held it for the same destination
            if block.0 <= *port && *port <= block.1 {
                // the gateway kept the node's port: the outside saw the job's block directly
                jobs.push((job, profile));
                continue;
            }
            let from: Vec<&Translated> = ct.iter().filter(|t| t.seen_port == *port).collect();
            let ok = from
                .iter()
                .find(|t| t.src == node_addr && block.0 <= t.sport && t.sport <= block.1);
            let Some(t) = ok else {
                panic!(
                    "job {job} ({profile}) on {node}: the outside saw port {port}, and the gateway translated no connection from {node_addr} inside the job's block {block:?} to it: {from:?}"
                );
            };
            if t.sport != *port {
                remapped += 1;
            }
            jobs.push((job, profile));
        }
    }
    assert_eq!(jobs.len(), 2 * PER_ARRAY as usize);
    let ids: Vec<u32> = jobs.iter().map(|j| j.0).collect();
    assert_no_residue(&c, &ids);

    let q = quarantine(&c);
    let mut per_node = Vec::new();
    for node in NODES {
        let w = walk(&c, node, q, &ids);
        let here = ids.iter().filter(|j| w.counts.contains_key(j)).count();
        per_node.push(format!(
            "{node}: {here} jobs, at most {} at once",
            w.max_active
        ));
        assert!(
            here == 0 || w.max_active >= 2,
            "{node} never ran two external jobs at once: the test did not stress it"
        );
        for (&j, &(a, r)) in &w.counts {
            assert_eq!(
                a, r,
                "{node}: job {j} has {a} allocate and {r} release records"
            );
        }
    }
    println!(
        "{} jobs ran in {:.0} s, checked in {:.0} s; {}; the gateway gave {remapped} of them another port (a port two nodes used at once)",
        ids.len(),
        ran.as_secs_f64(),
        (t0.elapsed() - ran).as_secs_f64(),
        per_node.join("; ")
    );
}

/// The real prolog and epilog binaries started all at once on one node, more of them than
/// the pool has blocks: exactly as many are granted as there were free blocks, each its own
/// block, the rest are denied with the reason; then all the epilogs at once leave nothing.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn many_concurrent_prologs_on_one_node_share_the_pool_exactly() {
    let c = Cluster::get();
    let node = "n1";
    let policy_path = c.xn_dir.join("etc/extnet.toml");
    let policy = extnet_policy::Policy::load(&policy_path).unwrap();
    let layout = extnet::plan::layout::Layout::new(&policy, node);
    // a quiet node: no external job running, quarantine over
    std::thread::sleep(Duration::from_secs(policy.ports.quarantine_secs + 1));
    let table = extnet::store::lease::LeaseTable::load(&layout.lease_table(), node).unwrap();
    let now = extnet::store::lease::now();
    assert!(
        table.quarantine.iter().all(|q| q.until <= now),
        "{:?}",
        table.quarantine
    );
    // the prologs ask for profile "default", whose jobs take blocks of its pool only
    let pool = policy.pool_of_profile("default").expect("profile default");
    let free = pool.ports.blocks() as usize
        - table
            .leases
            .iter()
            .filter(|l| pool.slots().contains(&l.slot))
            .count();
    let n = free + 9;
    // job ids above any the cluster hands out, and above any earlier run's
    let base = NODES
        .iter()
        .flat_map(|n| records(&c, n))
        .map(|r| r.job + 1)
        .max()
        .unwrap_or(0)
        .max(900_000);
    let ids: Vec<u32> = (0..n as u32).map(|i| base + i).collect();
    let uid = uid_of(ALLOWED);
    let barrier = tempfile::NamedTempFile::new().unwrap();
    let run_all = |prog: &str, request: Option<&str>| -> Vec<(u32, std::process::Output)> {
        // every process waits for the barrier (a shared flock), then all start at once
        let hold = extnet::store::fs::Lock::acquire(barrier.path()).unwrap();
        let children: Vec<_> = ids
            .iter()
            .map(|&job| {
                let mut cmd = Command::new("/usr/bin/flock");
                cmd.arg("-s")
                    .arg(barrier.path())
                    .arg("/usr/bin/nsenter")
                    .arg(format!("--net=/run/netns/xn-{node}"))
                    .arg("--")
                    .arg(c.xn_dir.join(format!("bin/extnet-{prog}")))
                    .arg("--policy")
                    .arg(&policy_path)
                    .env_clear()
                    .env("SLURMD_NODENAME", node)
                    .env("SLURM_JOB_ID", job.to_string())
                    .env("SLURM_JOB_UID", uid.to_string())
                    .env("SLURM_JOB_USER", ALLOWED)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                if let Some(r) = request {
                    cmd.env(extnet::job::env::REQUEST_VAR, r);
                }
                (job, cmd.spawn().expect("spawn"))
            })
            .collect();
        drop(hold);
        children
            .into_iter()
            .map(|(j, ch)| (j, ch.wait_with_output().unwrap()))
            .collect()
    };
    let t = Instant::now();
    let prologs = run_all("prolog", Some("default"));
    let prolog_time = t.elapsed();
    let mut granted = BTreeMap::new();
    let mut denied = 0;
    for (job, out) in &prologs {
        assert_success("prolog", *job, out);
        let s = extnet::store::state::JobState::load(&layout.job_state(*job), *job)
            .unwrap()
            .unwrap_or_else(|| panic!("job {job} has no state file"));
        match s.outcome {
            extnet::store::state::Outcome::Granted(g) => {
                if let Some(other) = granted.insert(g.slot, *job) {
                    panic!("jobs {other} and {job} were both given slot {}", g.slot);
                }
            }
            extnet::store::state::Outcome::Denied { reason } => {
                assert!(
                    reason.contains("no free port block"),
                    "job {job} denied for another reason: {reason}"
                );
                denied += 1;
            }
        }
    }
    assert_eq!(
        (granted.len(), denied),
        (free, n - free),
        "{n} prologs at once with {free} free blocks"
    );
    let t = Instant::now();
    let epilogs = run_all("epilog", None);
    let epilog_time = t.elapsed();
    for (job, out) in &epilogs {
        assert_success("epilog", *job, out);
    }
    assert_no_residue(&c, &ids);
    let w = walk(&c, node, quarantine(&c), &ids);
    for job in granted.values() {
        assert_eq!(
            w.counts.get(job),
            Some(&(1, 1)),
            "job {job}'s lease log records"
        );
    }
    println!(
        "{n} prologs at once on {node}: {free} granted, {denied} denied in {:.2} s; {n} epilogs in {:.2} s",
        prolog_time.as_secs_f64(),
        epilog_time.as_secs_f64()
    );
}

//! slurmd dies under a granted job, on the real test cluster (issue 16, item 6): n1's slurmd
//! is SIGKILLed (its recorded PID, `slurm-test-env/slurmd-ctl kill`) while a granted batch job
//! on n1 probes the outside host over and over, and started again the way `up` starts it
//! (`slurmd-ctl start`).
//!
//! - The job keeps getting out while slurmd is dead (its lease, mark and state file are
//!   untouched: nothing of extnet's depends on slurmd running), and after the restart; it
//!   ends normally, its epilog releases the lease (a `release` record of the epilog, no
//!   `reason`), and nothing of it is left.
//! - A job cancelled while slurmd is dead: Slurm cannot stop it (nobody signals its tasks)
//!   and it stays `COMPLETING` with its lease, still getting out; once slurmd is back,
//!   slurmctld has it terminated and the epilog runs and releases the lease; nothing is left,
//!   and `extnet reconcile` then finds nothing to do. While slurmd is dead, reconcile leaves
//!   both jobs alone (slurmctld still counts them on n1).
//!
//! Needs root and the running cluster: ignored by a plain `cargo test`, run by
//! `slurm-test-env/test`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::cluster::*;
use support::wait;

const NODE: &str = "n1";

/// `slurm-test-env/slurmd-ctl ARGS` (as root, on the cluster in `c.xn_dir`).
fn slurmd_ctl(c: &Cluster, args: &[&str]) -> Run {
    let o = Command::new(c.repo.join("slurm-test-env/slurmd-ctl"))
        .args(args)
        .env("XN_DIR", &c.xn_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run slurm-test-env/slurmd-ctl");
    Run::from_output(o)
}

fn slurmd_runs(c: &Cluster) -> bool {
    slurmd_ctl(c, &["pid", NODE]).ok()
}

/// Starts n1's slurmd again when dropped if it does not run (a test that panicked while it
/// was dead must not leave the cluster without it).
struct SlurmdGuard<'a>(&'a Cluster);

impl Drop for SlurmdGuard<'_> {
    fn drop(&mut self) {
        if !slurmd_runs(self.0) {
            let r = slurmd_ctl(self.0, &["start", NODE]);
            if !r.ok() {
                eprintln!("cannot start n1's slurmd again:\n{r}");
            }
        }
    }
}

/// The job's TCP probes the outside host saw after `mark`: through the gateway, from the
/// job's block.
fn probes_seen(c: &Cluster, mark: u64, block: (u16, u16)) -> usize {
    c.seen_since(mark)
        .iter()
        .filter(|s| {
            s.proto == "tcp" && s.ip == GATEWAY_PUBLIC && (block.0..=block.1).contains(&s.port)
        })
        .count()
}

/// Waits (20 s at most) until the outside host has seen the job's probe after `mark`.
fn wait_out(c: &Cluster, mark: u64, block: (u16, u16), what: &str) {
    wait::until(Duration::from_secs(20), Duration::from_millis(100), || {
        if probes_seen(c, mark, block) > 0 {
            return Ok(());
        }
        Err(format!(
            "{what}: the job (block {block:?}) did not get out within 20 s"
        ))
    });
}

/// The job's lease in n1's table, if it holds one.
fn lease(c: &Cluster, job: u32) -> Option<extnet::store::lease::Lease> {
    c.leases(NODE).into_iter().find(|l| l.job_id == job)
}

/// squeue's state of `job` (`RUNNING`, `COMPLETING`, ...; empty once slurmctld forgot it).
fn state(c: &Cluster, job: u32) -> String {
    let r = c.login(
        "root",
        20,
        &["squeue", "-h", "-j", &job.to_string(), "-o", "%T"],
    );
    r.stdout.trim().to_owned()
}

/// A granted batch job of [`ALLOWED`] on n1 that probes the outside host's TCP 7000 every
/// 0.2 s or so until `stop` exists (3 minutes at most), then prints `done`.
fn probing_job(c: &Cluster, stop: &std::path::Path) -> u32 {
    let _ = std::fs::remove_file(stop);
    let p = c.probe();
    c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", NODE, "--external-net"],
        &format!(
            "i=0; while [ ! -e {stop} ] && [ $i -lt 900 ]; do {p} tcp --timeout 0.5 >/dev/null 2>&1; sleep 0.1; i=$((i+1)); done; echo done",
            stop = stop.display()
        ),
    )
}

/// The job runs and gets out; returns its block and its lease.
fn granted_and_out(c: &Cluster, job: u32) -> ((u16, u16), extnet::store::lease::Lease) {
    let mark = c.seen_log_mark();
    c.wait_running(job, NODE);
    let block = c.block(job, NODE);
    wait_out(c, mark, block, "before slurmd is killed");
    let l = lease(c, job).unwrap_or_else(|| panic!("job {job} runs without a lease on n1"));
    (block, l)
}

/// Kills n1's slurmd, then, for 4 s, checks that the job still gets out and that its lease
/// and state file stay as they were (nothing released).
fn kill_slurmd_and_watch(
    c: &Cluster,
    job: u32,
    block: (u16, u16),
    held: &extnet::store::lease::Lease,
) {
    let r = slurmd_ctl(c, &["kill", NODE]);
    assert!(r.ok(), "slurmd-ctl kill n1:\n{r}");
    assert!(!slurmd_runs(c), "n1's slurmd still runs after SIGKILL");
    let mark = c.seen_log_mark();
    std::thread::sleep(Duration::from_secs(4));
    assert!(!slurmd_runs(c), "n1's slurmd came back by itself");
    let n = probes_seen(c, mark, block);
    println!("job {job}: the outside host saw {n} of its probes in 4 s while slurmd was dead");
    assert!(
        n >= 4,
        "the job must keep getting out while slurmd is dead: {n} probes in 4 s"
    );
    assert_eq!(
        lease(c, job).as_ref(),
        Some(held),
        "the job's lease changed while slurmd was dead"
    );
    assert!(
        c.state_dir(NODE).join(format!("jobs/{job}.json")).exists(),
        "the job's state file went while slurmd was dead"
    );
    assert_eq!(c.lease_events(job), ["allocate"], "nothing released yet");
    reconcile_leaves_it_alone(c, job);
}

/// `extnet reconcile` on n1 (Slurm's answer from slurmctld, which runs).
fn reconcile(c: &Cluster) -> Run {
    let conf = c.xn_dir.join("etc/slurm.conf").display().to_string();
    let r = c.extnet(NODE, &["reconcile", "--node", NODE, "--slurm-conf", &conf]);
    assert!(r.ok(), "extnet reconcile:\n{r}");
    r
}

/// Slurm still counts the job on n1 (running or completing): reconcile leaves it and its
/// lease alone.
fn reconcile_leaves_it_alone(c: &Cluster, job: u32) {
    let held = lease(c, job);
    let r = reconcile(c);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains(&format!("job {job} (")) && l.ends_with("runs here, left alone")),
        "reconcile while slurmd is dead:\n{r}"
    );
    assert_eq!(lease(c, job), held, "reconcile changed the job's lease");
    assert_eq!(c.lease_events(job), ["allocate"]);
}

/// The job's only `release` record is the epilog's (no `reason`), for the block and mark of
/// its `allocate`.
fn released_by_epilog(c: &Cluster, job: u32) {
    assert_eq!(c.lease_events(job), ["allocate", "release"]);
    let a = c.lease_record(job, NODE, "allocate");
    let r = c.lease_record(job, NODE, "release");
    for k in ["port_first", "port_last", "mark", "uid", "profile"] {
        assert_eq!(a[k], r[k], "{k} of the release record");
    }
    assert!(
        r.get("reason").is_none(),
        "the epilog released the lease, not reconcile: {r}"
    );
    assert!(r["unix"].as_u64() >= a["unix"].as_u64(), "{a} {r}");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_granted_job_outlives_a_killed_slurmd_and_its_epilog_runs_after_the_restart() {
    let c = Cluster::get();
    let _guard = SlurmdGuard(&c);
    assert!(slurmd_runs(&c), "n1's slurmd must run at the start");
    let stop = c.work(ALLOWED).join("slurmd-crash-stop");
    let job = probing_job(&c, &stop);
    let (block, held) = granted_and_out(&c, job);
    kill_slurmd_and_watch(&c, job, block, &held);

    let r = slurmd_ctl(&c, &["start", NODE]);
    assert!(r.ok(), "slurmd-ctl start n1:\n{r}");
    let mark = c.seen_log_mark();
    wait_out(&c, mark, block, "after slurmd's restart");
    assert_eq!(state(&c, job), "RUNNING");
    assert_eq!(lease(&c, job).as_ref(), Some(&held));

    // the job ends by itself: its epilog runs under the new slurmd
    std::fs::write(&stop, "").unwrap();
    c.wait_gone(job);
    let _ = std::fs::remove_file(&stop);
    let out = c.job_output(ALLOWED, job);
    assert_eq!(out.trim(), "done", "the job ran to its end");
    c.wait_released(job, 30);
    released_by_epilog(&c, job);
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_job_cancelled_while_slurmd_is_dead_is_released_by_its_epilog_once_slurmd_is_back() {
    let c = Cluster::get();
    let _guard = SlurmdGuard(&c);
    assert!(slurmd_runs(&c), "n1's slurmd must run at the start");
    let stop = c.work(ALLOWED).join("slurmd-crash-cancel-stop");
    let job = probing_job(&c, &stop);
    let (block, held) = granted_and_out(&c, job);
    kill_slurmd_and_watch(&c, job, block, &held);

    let r = c.login("root", 20, &["scancel", &job.to_string()]);
    assert!(r.ok(), "scancel {job}:\n{r}");
    // nobody can signal the job's tasks or run its epilog: it stays, with its lease
    let mark = c.seen_log_mark();
    std::thread::sleep(Duration::from_secs(3));
    let st = state(&c, job);
    let n = probes_seen(&c, mark, block);
    println!(
        "job {job} cancelled while slurmd is dead: squeue says {st:?}, {n} probes got out in 3 s"
    );
    assert_eq!(st, "COMPLETING", "slurmctld waits for n1 to end the job");
    assert!(n > 0, "the job's tasks still run and keep their grant");
    assert_eq!(lease(&c, job).as_ref(), Some(&held));
    reconcile_leaves_it_alone(&c, job);

    let t = Instant::now();
    let r = slurmd_ctl(&c, &["start", NODE]);
    assert!(r.ok(), "slurmd-ctl start n1:\n{r}");
    // slurmd back: slurmctld has the job terminated, the epilog runs
    c.wait_released(job, 60);
    println!(
        "job {job}: released {:?} after slurmd's restart",
        t.elapsed()
    );
    released_by_epilog(&c, job);
    c.assert_clean(job);
    // nothing left for reconcile
    let r = reconcile(&c);
    assert!(
        !r.stdout.contains(&format!("job {job} ")),
        "reconcile found something of job {job}:\n{r}"
    );
    assert_eq!(c.lease_events(job), ["allocate", "release"]);
}

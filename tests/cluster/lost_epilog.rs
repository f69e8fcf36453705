//! An epilog that never ran (issue 16, item 6), on the real test cluster: an admin breaks
//! slurm.conf's `Epilog=` line (here: removes it) and reconfigures; a granted job on n1 runs
//! to its end without its epilog, so its lease, state file and job cgroup stay. slurm.conf is
//! restored (always, by a guard, also when the test fails) and `extnet reconcile` on n1
//! releases the lease with a lease-log `release` record that says `reason: orphan`, and
//! removes what the job left; a later granted job on n1 works and leaves nothing.
//!
//! Needs root and the running cluster: ignored by a plain `cargo test`, run by
//! `slurm-test-env/test`.

use std::path::PathBuf;
use support::cluster::*;

const NODE: &str = "n1";

/// `scontrol reconfigure`, as root on the login host.
fn reconfigure(c: &Cluster) -> Run {
    c.login("root", 30, &["scontrol", "reconfigure"])
}

/// Puts slurm.conf back as it was, and reconfigures, when dropped.
struct ConfGuard<'a> {
    c: &'a Cluster,
    path: PathBuf,
    original: String,
}

impl Drop for ConfGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.original) {
            eprintln!("cannot restore {}: {e}", self.path.display());
        }
        let r = reconfigure(self.c);
        if !r.ok() {
            eprintln!("scontrol reconfigure after restoring slurm.conf:\n{r}");
        }
    }
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn an_epilog_that_never_ran_is_released_by_reconcile_with_a_record() {
    let c = Cluster::get();
    let path = c.xn_dir.join("etc/slurm.conf");
    let original = std::fs::read_to_string(&path).expect("read the cluster's slurm.conf");
    assert!(
        original.lines().any(|l| l.starts_with("Epilog=")),
        "slurm.conf has an Epilog line"
    );
    let job = {
        let _guard = ConfGuard {
            c: &c,
            path: path.clone(),
            original: original.clone(),
        };
        let broken: String = original
            .lines()
            .filter(|l| !l.starts_with("Epilog="))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, broken).unwrap();
        let r = reconfigure(&c);
        assert!(r.ok(), "scontrol reconfigure without Epilog:\n{r}");
        let job = c.sbatch(
            ALLOWED,
            60,
            &["--wait", "-N1", "-w", NODE, "--external-net"],
            "echo ran",
        );
        c.wait_gone(job);
        job
    };
    // the job is over, its epilog never ran: its lease and state are still there
    let held = c.leases(NODE);
    assert!(
        held.iter().any(|l| l.job_id == job),
        "job {job}'s lease is still held after its end without an epilog: {held:?}"
    );
    assert!(!c.lease_events(job).iter().any(|e| e == "release"));
    let state = c.state_dir(NODE).join(format!("jobs/{job}.json"));
    assert!(state.exists(), "{} is still there", state.display());

    let conf = c.xn_dir.join("etc/slurm.conf").display().to_string();
    let r = c.extnet(NODE, &["reconcile", "--node", NODE, "--slurm-conf", &conf]);
    assert!(r.ok(), "extnet reconcile:\n{r}");
    assert!(
        r.stdout.contains(&format!("job {job} (")),
        "reconcile names the job:\n{r}"
    );
    assert!(
        r.stdout.contains("torn down, lease released (orphan)"),
        "{r}"
    );
    let rel = c.lease_record(job, NODE, "release");
    assert_eq!(rel["reason"], "orphan", "{rel}");
    assert!(!c.leases(NODE).iter().any(|l| l.job_id == job));
    assert!(!state.exists(), "the state file is removed");
    assert!(
        !c.state_dir(NODE).join(format!("jobs/{job}.lease")).exists(),
        "the lease marker is removed"
    );
    c.assert_clean(job);

    // a later granted job on the node works, and its own epilog runs
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, "--external-net"],
        &format!("{} tcp", c.probe()),
    );
    assert!(r.ok(), "the next granted job:\n{r}");
    let next = r.job_id();
    let block = c.block(next, NODE);
    let seen = r.seen_one("tcp");
    assert!(
        (block.0..=block.1).contains(&seen.1),
        "source port {} in the next job's block {block:?}:\n{r}",
        seen.1
    );
    c.wait_released(next, 30);
    c.assert_clean(next);
}

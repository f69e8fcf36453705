//! One user cannot exhaust a node's port pool for the others through the quarantine, on the
//! real test cluster (issue 16, items 5 and 6).
//!
//! With a quarantine of 300 s (the policy is changed for the test and put back after),
//! xnalice runs more short `--external-net` jobs on n1, one after the other, than n1's pool
//! has blocks. Each job gets out; she takes back her own quarantined blocks
//! (`LeaseTable::allocate`, `reuse_own_quarantine`), so a handful of blocks serve all her jobs
//! (counted from the lease log, and `extnet status` shows just those in quarantine). Then
//! another user's granted job on n1 still gets out, from a block none of hers, and jobs that
//! did not ask (`srun hostname`, of the user with the transparent grant and of a user with no
//! grant) run normally (the policy is back to its short quarantine once her jobs are done;
//! her blocks stay in the long one). At the end her blocks are taken out of the long
//! quarantine (her concurrent jobs take them back), so that later tests find the pool as
//! before, and nothing of any job is left.
//!
//! Needs root and the running cluster: ignored by a plain `cargo test`, run by
//! `slurm-test-env/test`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::cluster::*;
use support::wait;

const NODE: &str = "n1";
/// The quarantine of the test: longer than the whole test, as in the report.
const QUARANTINE: u64 = 300;
/// xnbob gets the profile `acct` with this account (extnet-test.toml).
const ACCOUNT: &str = "xnacct";
/// Gets the profile `transparent` without asking.
const AUTO: &str = "xnauto";

/// n1's lease table, quarantine included.
fn table(c: &Cluster) -> extnet::store::lease::LeaseTable {
    let path = c.state_dir(NODE).join("leases.table");
    extnet::store::lease::LeaseTable::load(&path, NODE)
        .unwrap_or_else(|e| panic!("n1's lease table must load: {e}"))
}

/// The usage of `pool` in `extnet status --json` on n1.
fn pool_status(c: &Cluster, pool: &str) -> Value {
    let r = c.extnet(NODE, &["status", "--node", NODE, "--json"]);
    assert!(r.ok(), "extnet status:\n{r}");
    let v: Value = serde_json::from_str(&r.stdout).expect("status --json is JSON");
    v["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .find(|p| p["name"] == pool)
        .unwrap_or_else(|| panic!("no pool {pool} in extnet status:\n{r}"))
        .clone()
}

/// The first port of the block `job` was given on n1 (lease log).
fn block_of(c: &Cluster, job: u32) -> u16 {
    c.block(job, NODE).0
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn one_users_many_short_jobs_cycle_through_their_own_blocks_and_starve_nobody() {
    let c = Cluster::get();
    let p = c.probe();
    let path = c.xn_dir.join("etc/extnet.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let guard = PolicyGuard {
        path: path.clone(),
        text: original.clone(),
    };
    let short = c.policy().ports.quarantine_secs;
    let from = format!("quarantine_secs = {short}\n");
    assert!(original.contains(&from), "the test policy sets {from:?}");
    std::fs::write(
        &path,
        original.replace(&from, &format!("quarantine_secs = {QUARANTINE}\n")),
    )
    .unwrap();
    let policy = c.policy();
    assert_eq!(policy.ports.quarantine_secs, QUARANTINE);
    let pool = policy.pool_of_profile("default").expect("profile default");
    let pool_name = pool.name().to_owned();
    let blocks = pool.slots().len();
    assert!(
        policy.pool_of_profile("acct").unwrap().name() == pool_name
            && policy.pool_of_profile("transparent").unwrap().name() == pool_name,
        "xnbob's and xnauto's profiles share xnalice's pool"
    );
    // a quiet pool to start with: what earlier tests released has waited out its quarantine
    wait::until(Duration::from_secs(10), Duration::from_millis(200), || {
        let s = pool_status(&c, &pool_name);
        if s["used"] == 0 && s["quarantined"] == 0 {
            return Ok(());
        }
        Err(format!("n1's pool {pool_name} is not idle: {s}"))
    });

    // xnalice: more jobs in a row than the pool has blocks
    let n = blocks + 3;
    let t = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..n {
        let r = c.srun(
            ALLOWED,
            &["-N1", "-w", NODE, "--external-net"],
            &format!("{p} tcp"),
        );
        assert!(
            r.ok() && r.seen_one("tcp").0 == GATEWAY_PUBLIC,
            "xnalice's job {} of {n} (pool of {blocks} blocks, quarantine {QUARANTINE} s) must get out:\n{r}",
            i + 1
        );
        jobs.push(r.job_id());
    }
    let last = *jobs.last().unwrap();
    c.wait_released(last, 30);
    let mine: BTreeSet<u16> = jobs.iter().map(|&j| block_of(&c, j)).collect();
    println!(
        "{n} jobs of {ALLOWED} in {:?} used {} distinct blocks of n1's {blocks}: {mine:?}",
        t.elapsed(),
        mine.len()
    );
    assert!(
        mine.len() <= 4,
        "{ALLOWED}'s jobs, one after the other, must take back her own quarantined blocks, not put {} of {blocks} blocks into quarantine",
        mine.len()
    );
    // what the node says: just her blocks wait out the quarantine, all of them hers
    let s = pool_status(&c, &pool_name);
    assert_eq!(
        (s["used"].as_u64(), s["quarantined"].as_u64()),
        (Some(0), Some(mine.len() as u64)),
        "n1's pool after her jobs: {s}"
    );
    let uid = uid_of(ALLOWED);
    let q = table(&c).quarantine;
    assert!(
        q.iter()
            .all(|e| e.uid == Some(uid) && mine.contains(&e.port_first)),
        "n1's quarantine holds only her blocks: {q:?}"
    );

    // back to the short quarantine for every job from now on (a quarantine is fixed at the
    // release): her blocks stay in the long one, the other users' jobs do not add to it
    drop(guard);
    assert_eq!(c.policy().ports.quarantine_secs, short);

    // another user's grant on the same pool gets out, from a block that is none of hers
    let r = c.srun(
        DENIED,
        &["-N1", "-w", NODE, "-A", ACCOUNT, "--external-net"],
        &format!("{p} tcp"),
    );
    assert!(
        r.ok() && r.seen_one("tcp").0 == GATEWAY_PUBLIC,
        "{DENIED}'s granted job after {ALLOWED}'s {n} jobs:\n{r}"
    );
    let bob = r.job_id();
    let bob_block = block_of(&c, bob);
    assert!(
        !mine.contains(&bob_block),
        "{DENIED} got block {bob_block}, one of {ALLOWED}'s in quarantine"
    );
    // jobs that did not ask run normally: the transparent grant's user, and a user with none
    let mut others = vec![bob];
    for user in [AUTO, DENIED] {
        let r = c.srun(user, &["-N1", "-w", NODE], "hostname");
        assert!(
            r.ok() && r.stdout.lines().any(|l| l.trim() == NODE),
            "{user}'s `srun hostname` on n1:\n{r}"
        );
        others.push(r.job_id());
    }

    // her concurrent jobs take back each of her blocks (her own first) and release them into
    // the short quarantine, so later tests find the pool as before
    let go = c.work(ALLOWED).join("quarantine-go");
    let _ = std::fs::remove_file(&go);
    let drain: Vec<u32> = (0..mine.len())
        .map(|_| {
            c.sbatch(
                ALLOWED,
                30,
                &["-N1", "-w", NODE, "--external-net"],
                &format!(
                    "i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
                    go = go.display()
                ),
            )
        })
        .collect();
    for &j in &drain {
        c.wait_running(j, NODE);
    }
    std::fs::write(&go, "").unwrap();
    let taken: BTreeSet<u16> = drain.iter().map(|&j| block_of(&c, j)).collect();
    assert_eq!(
        taken, mine,
        "her concurrent jobs take back exactly her quarantined blocks"
    );
    for &j in drain.iter().chain(&others).chain(&jobs) {
        c.assert_clean(j);
    }
    let _ = std::fs::remove_file(&go);
    let now = extnet::store::lease::now();
    let q = table(&c).quarantine;
    assert!(
        q.iter().all(|e| e.until <= now + short),
        "a block still waits out the long quarantine: {q:?}"
    );
}

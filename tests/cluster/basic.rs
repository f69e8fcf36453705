//! End-to-end tests on the real test cluster (`slurm-test-env/`): real slurmctld, slurmd,
//! srun and sbatch; real nftables, netlink, cgroups and a keepalived NAT gateway.
//!
//! They need root and the running cluster, so they are ignored by a plain `cargo test`;
//! `slurm-test-env/test` brings the cluster up and runs them with `--include-ignored`.
//! Profile `default` is cgroup mode, profile `isolated` netns mode (see
//! `slurm-test-env/extnet-test.toml`).

use support::cluster::*;

fn in_block(port: u16, block: (u16, u16)) -> bool {
    block.0 <= port && port <= block.1
}

/// A job with `--external-net` reaches the outside over TCP, UDP and HTTP; the outside sees
/// the gateway's address and source ports inside the job's leased block.
fn reaches_outside(profile: &str) {
    let c = Cluster::get();
    let p = c.probe();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", &format!("--external-net={profile}")],
        &format!("{p} tcp && {p} udp && {p} http"),
    );
    assert!(r.ok(), "external job failed:\n{r}");
    let job = r.job_id();
    let block = c.block(job, "n1");
    for proto in ["tcp", "udp", "http"] {
        let seen = r.seen_one(proto);
        assert_eq!(
            seen.0, GATEWAY_PUBLIC,
            "{proto}: the outside must see the gateway's address:\n{r}"
        );
        assert!(
            in_block(seen.1, block),
            "{proto}: source port {} not in the job's block {block:?}:\n{r}",
            seen.1
        );
    }
    c.assert_clean(job);
    assert_eq!(
        c.lease_events(job),
        ["allocate", "release"],
        "lease log of job {job}"
    );
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn cgroup_job_with_flag_reaches_outside_over_tcp_udp_http() {
    reaches_outside("default");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn netns_job_with_flag_reaches_outside_over_tcp_udp_http() {
    reaches_outside("isolated");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn job_without_flag_cannot_reach_outside_even_beside_an_external_job_of_the_same_user() {
    let c = Cluster::get();
    let (bg_job, job) = c.unflagged_job_beside_a_granted_one();
    c.login(ALLOWED, 20, &["scancel", &bg_job.to_string()]);
    c.assert_clean(job);
    c.assert_clean(bg_job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn user_not_in_policy_is_denied_with_a_clear_message() {
    let c = Cluster::get();
    let p = c.probe();
    // n1's lasting denial counter for the reason "policy", from `extnet node metrics`
    let denied_by_policy = || -> u64 {
        let m = c.extnet("n1", &["node", "metrics", "--node", "n1"]);
        assert!(m.ok(), "extnet node metrics on n1:\n{m}");
        m.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("extnet_denials_total{reason=\"policy\"} ")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no extnet_denials_total for policy:\n{m}"))
    };
    let before = denied_by_policy();
    let r = c.srun(
        DENIED,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    assert!(!r.ok(), "a denied job's task ran:\n{r}");
    assert!(r.seen("tcp").is_empty(), "{r}");
    assert!(
        r.stderr
            .contains("extnet: external network access denied for job ")
            && r.stderr.contains(": no profile grants user xnbob"),
        "the user must see why:\n{r}"
    );
    assert_eq!(
        denied_by_policy(),
        before + 1,
        "the prolog counts the denial on n1 once"
    );
    // the denied job's id: from the controller's record of xnbob's last job
    let q = c.login(
        "root",
        20,
        &[
            "sacct",
            "-n",
            "-X",
            "-u",
            DENIED,
            "-o",
            "JobID",
            "--noconvert",
        ],
    );
    let _ = q; // accounting is off in the test cluster; residue is checked by the state dir below
    for node in NODES {
        let jobs = std::fs::read_dir(c.state_dir(node).join("jobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        let start = std::time::Instant::now();
        let mut n = jobs;
        while n > 0 && start.elapsed().as_secs() < 30 {
            std::thread::sleep(std::time::Duration::from_millis(250));
            n = std::fs::read_dir(c.state_dir(node).join("jobs"))
                .map(|d| d.count())
                .unwrap_or(0);
        }
        assert_eq!(n, 0, "{node}: state files left after a denied job");
    }
    // a named profile that does not exist is refused at submit time, before queueing
    let r = c.login(
        ALLOWED,
        30,
        &["srun", "-N1", "--external-net=nosuch", "true"],
    );
    assert!(!r.ok(), "{r}");
    assert!(
        r.stderr.contains("nosuch"),
        "the user must see which profile is unknown:\n{r}"
    );
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn two_external_jobs_on_one_node_get_different_blocks() {
    let c = Cluster::get();
    let p = c.probe();
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(c.sbatch(
            ALLOWED,
            30,
            &["-N1", "-w", "n1", "--external-net"],
            &format!("echo JOB=$SLURM_JOB_ID; sleep 3; {p} tcp; {p} udp"),
        ));
    }
    for &j in &jobs {
        c.wait_gone(j);
    }
    let mut blocks = Vec::new();
    for &j in &jobs {
        let r = Run::from_job_output(c.job_output(ALLOWED, j));
        let block = c.block(j, "n1");
        for proto in ["tcp", "udp"] {
            let (ip, port) = r.seen_one(proto);
            assert_eq!(ip, GATEWAY_PUBLIC);
            assert!(
                in_block(port, block),
                "job {j} {proto} port {port} outside {block:?}"
            );
        }
        blocks.push(block);
    }
    assert_ne!(
        blocks[0], blocks[1],
        "two jobs at once must not share a block"
    );
    // they overlapped in time: both allocations precede both releases in the log
    let t = |j: u32, ev: &str| c.lease_record(j, "n1", ev)["unix"].as_u64().unwrap();
    assert!(
        t(jobs[0], "allocate") <= t(jobs[1], "release")
            && t(jobs[1], "allocate") <= t(jobs[0], "release")
    );
    for j in jobs {
        c.assert_clean(j);
    }
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn sbatch_external_net_with_srun_step_across_two_nodes() {
    let c = Cluster::get();
    let p = c.probe();
    // n2's task talks to another service (HTTP, TCP 8080) than n1's (TCP 7000): both nodes
    // lease the same port ranges and the test gateway masquerades them to one address, so two
    // simultaneous connections to the same service could make it remap one of the ports.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N2\n#SBATCH --external-net\necho JOB=$SLURM_JOB_ID\n{p} tcp\nsrun -N2 -l sh -c 'if [ \"$SLURMD_NODENAME\" = n2 ]; then {p} http; else {p} tcp; fi'\n"
    );
    let job = c.sbatch_script(ALLOWED, 30, "two-nodes.sh", &script);
    let out = c.job_output(ALLOWED, job);
    let seen: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("SEEN tcp") || l.contains("SEEN http"))
        .collect();
    assert_eq!(seen.len(), 3, "batch step + one srun task per node:\n{out}");
    let b1 = c.block(job, "n1");
    let b2 = c.block(job, "n2");
    for l in &seen {
        let port: u16 = l.split_whitespace().last().unwrap().parse().unwrap();
        assert!(l.contains(GATEWAY_PUBLIC), "{l}");
        assert!(
            in_block(port, b1) || in_block(port, b2),
            "port {port} in neither block {b1:?} {b2:?}"
        );
    }
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn sbatch_netns_job_reaches_outside() {
    let c = Cluster::get();
    let p = c.probe();
    let job = c.sbatch(
        ALLOWED,
        60,
        &["--wait", "-N1", "-w", "n2", "--external-net=isolated"],
        &format!("echo JOB=$SLURM_JOB_ID; {p} tcp; ip -o -4 addr show dev eth0"),
    );
    let out = c.job_output(ALLOWED, job);
    let run = Run::from_job_output(out.clone());
    let (ip, port) = run.seen_one("tcp");
    assert_eq!(ip, GATEWAY_PUBLIC);
    assert!(in_block(port, c.block(job, "n2")));
    assert!(
        out.contains("inet 100.64."),
        "the batch step runs in the job's own namespace:\n{out}"
    );
    c.assert_clean(job);
}

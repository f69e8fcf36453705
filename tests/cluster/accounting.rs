//! Accounting, status and the lease log's interim records on the real test cluster
//! (`slurm-test-env/`): a job moves a known amount of data to and from the outside host and
//! its accounting record must show it (and not its cluster-internal traffic), in both modes;
//! `extnet status` shows a running job's counters; `extnet accounting` reads the records back
//! and sums a job's nodes; `extnet lease-log interim` records a long lease once per interval.
//!
//! Ignored by a plain `cargo test`; `slurm-test-env/test` runs them with `--include-ignored`.

use serde_json::Value;
use std::time::Duration;
use support::cluster::*;
use support::wait;

/// What the jobs download from and upload to the outside host (distinct sizes, so that
/// counting one direction as the other shows).
const DOWN: u64 = 3_000_000;
const UP: u64 = 1_000_000;
/// Headers, ACKs and the probe's datagrams: what may come on top of the payload.
const SLACK: u64 = 512 * 1024;

/// Waits until `job` has `n` accounting records (the epilogs write them as the job ends).
fn wait_records(c: &Cluster, job: u32, n: usize) -> Vec<Value> {
    c.wait_gone(job);
    let r = wait::until(Duration::from_secs(30), Duration::from_millis(200), || {
        let r = c.job_log("accounting", job);
        if r.len() >= n {
            return Ok(r);
        }
        Err(format!(
            "job {job}: {} accounting records after 30 s, {n} expected",
            r.len()
        ))
    });
    assert_eq!(r.len(), n, "job {job}: one record per node:\n{r:#?}");
    r
}

fn u(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {key} in {r:#}"))
}

/// The unix time of the job's lease-log record `event` on `node`.
fn logged_at(c: &Cluster, job: u32, node: &str, event: &str) -> u64 {
    u(&c.lease_record(job, node, event), "unix")
}

/// A job downloads DOWN bytes and uploads UP bytes over HTTP, sends one UDP probe, and sends
/// 2.1 MB of UDP to a cluster-internal address; its record must show the external traffic
/// both ways, its connections, and none of the internal traffic.
fn transfer_is_accounted(profile: &str, mode: &str) {
    let c = Cluster::get();
    let p = c.probe();
    let script = format!(
        "set -e; \
         /usr/bin/curl -sS -o /dev/null -w 'GOT %{{size_download}}\\n' http://{OUTSIDE}:8080/bytes/{DOWN}; \
         head -c {UP} /dev/zero | /usr/bin/curl -sS --data-binary @- http://{OUTSIDE}:8080/sink; \
         {p} udp; \
         /usr/bin/python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); [s.sendto(b\"x\" * 1400, (\"10.99.0.2\", 9)) for _ in range(1500)]'; \
         echo INTERNAL-SENT"
    );
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", &format!("--external-net={profile}")],
        &script,
    );
    assert!(r.ok(), "the job failed:\n{r}");
    assert!(r.stdout.contains(&format!("GOT {DOWN}")), "{r}");
    assert!(r.stdout.contains(&format!("RECEIVED {UP}")), "{r}");
    assert!(r.stdout.contains("INTERNAL-SENT"), "{r}");
    let job = r.job_id();
    let recs = wait_records(&c, job, 1);
    let rec = &recs[0];
    assert_eq!(rec["node"], "n1");
    assert_eq!(rec["user"], ALLOWED);
    assert_eq!(u(rec, "uid"), u64::from(uid_of(ALLOWED)));
    assert_eq!(rec["profile"], profile);
    assert_eq!(rec["mode"], mode);
    let block = c.block(job, "n1");
    assert_eq!(
        (u(rec, "port_first") as u16, u(rec, "port_last") as u16),
        block,
        "the record's port block is the lease's"
    );
    assert_eq!(u(rec, "start"), logged_at(&c, job, "n1", "allocate"));
    assert_eq!(u(rec, "end"), logged_at(&c, job, "n1", "release"));
    assert!(rec.get("error").is_none(), "counters unreadable: {rec:#}");

    let (bin, bout) = (u(rec, "bytes_in"), u(rec, "bytes_out"));
    assert!(
        (DOWN..DOWN + SLACK).contains(&bin),
        "bytes_in {bin}: the download of {DOWN} bytes plus headers and ACKs expected (more means double counting or the upload counted as inbound): {rec:#}"
    );
    assert!(
        (UP..UP + SLACK).contains(&bout),
        "bytes_out {bout}: the upload of {UP} bytes plus headers and ACKs expected (more means internal traffic or the download was counted): {rec:#}"
    );
    // segmentation offload may merge packets, so packets are bounded by what 64 KiB each gives
    assert!(
        u(rec, "packets_in") >= DOWN.div_ceil(65536),
        "packets_in: {rec:#}"
    );
    assert!(
        u(rec, "packets_out") >= UP.div_ceil(65536),
        "packets_out: {rec:#}"
    );
    let conns = u(rec, "connections");
    assert!(
        (3..=5).contains(&conns),
        "connections {conns}: two HTTP connections and one UDP flow to the outside were made (internal flows do not count): {rec:#}"
    );

    // read back by the admin's command
    let a = c.extnet("n1", &["accounting", "--job", &job.to_string(), "--json"]);
    assert!(a.ok(), "{a}");
    let back: Vec<Value> = serde_json::from_str(&a.stdout).unwrap_or_else(|e| panic!("{e}: {a}"));
    assert_eq!(back.len(), 1, "{a}");
    assert_eq!(
        back[0], *rec,
        "extnet accounting --json shows the record as written"
    );
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn cgroup_job_transfer_is_accounted_both_ways_without_internal_traffic() {
    transfer_is_accounted("default", "cgroup");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn netns_job_transfer_is_accounted_both_ways_without_internal_traffic() {
    transfer_is_accounted("isolated", "netns");
}

/// A cgroup-mode job downloads DOWN bytes over IPv4, and DOWN6 bytes and uploads UP6 bytes
/// over IPv6: its record's totals hold both, its IPv6 fields only the IPv6 part, and it names
/// the node's IPv6 address the job's IPv6 was translated to, as the lease log does.
#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn ipv6_traffic_is_accounted_apart_in_the_record() {
    const DOWN6: u64 = 2_000_000;
    const UP6: u64 = 500_000;
    let c = Cluster::get();
    assert!(
        c.policy_has_ipv6(),
        "the test cluster is dual stack (node.gateway6): run slurm-test-env/up"
    );
    let script = format!(
        "set -e; \
         /usr/bin/curl -sS -o /dev/null -w 'GOT %{{size_download}}\\n' http://{OUTSIDE}:8080/bytes/{DOWN}; \
         /usr/bin/curl -sS -o /dev/null -w 'GOT6 %{{size_download}}\\n' 'http://[{OUTSIDE6}]:8080/bytes/{DOWN6}'; \
         head -c {UP6} /dev/zero | /usr/bin/curl -sS --data-binary @- 'http://[{OUTSIDE6}]:8080/sink'"
    );
    let r = c.srun(ALLOWED, &["-N1", "-w", "n1", "--external-net"], &script);
    assert!(r.ok(), "the job failed:\n{r}");
    assert!(r.stdout.contains(&format!("GOT {DOWN}")), "{r}");
    assert!(r.stdout.contains(&format!("GOT6 {DOWN6}")), "{r}");
    assert!(r.stdout.contains(&format!("RECEIVED {UP6}")), "{r}");
    let job = r.job_id();
    let recs = wait_records(&c, job, 1);
    let rec = &recs[0];
    assert!(rec.get("error").is_none(), "counters unreadable: {rec:#}");
    let (bin6, bout6) = (u(rec, "bytes_in6"), u(rec, "bytes_out6"));
    assert!(
        (DOWN6..DOWN6 + SLACK).contains(&bin6),
        "bytes_in6 {bin6}: the IPv6 download of {DOWN6} bytes plus headers expected (more: the IPv4 download counted as IPv6): {rec:#}"
    );
    assert!(
        (UP6..UP6 + SLACK).contains(&bout6),
        "bytes_out6 {bout6}: the IPv6 upload of {UP6} bytes plus headers expected: {rec:#}"
    );
    let bin = u(rec, "bytes_in");
    assert!(
        (DOWN + DOWN6..DOWN + DOWN6 + 2 * SLACK).contains(&bin),
        "bytes_in {bin}: both downloads expected in the total: {rec:#}"
    );
    assert!(
        u(rec, "packets_in6") >= DOWN6.div_ceil(65536)
            && u(rec, "packets_in") > u(rec, "packets_in6"),
        "{rec:#}"
    );
    assert_eq!(
        u(rec, "connections6"),
        2,
        "two HTTP connections over IPv6: {rec:#}"
    );
    assert_eq!(u(rec, "connections"), 3, "and one over IPv4: {rec:#}");
    let addr6 = rec["node_addr6"]
        .as_str()
        .unwrap_or_else(|| panic!("the record names the node's IPv6 address: {rec:#}"));
    assert!(addr6.parse::<std::net::Ipv6Addr>().is_ok(), "{rec:#}");
    let allocate = c.lease_record(job, "n1", "allocate");
    assert_eq!(
        allocate["node_addr6"], addr6,
        "the lease log says the same: {allocate:#}"
    );

    // the admin's table shows the IPv6 part beside the totals
    let a = c.extnet("n1", &["accounting", "--job", &job.to_string()]);
    assert!(a.ok() && a.stdout.contains("OUT6"), "{a}");
    c.assert_clean(job);
}

/// The job's entry in `extnet status --json` on `node`.
fn status_entry(c: &Cluster, node: &str, job: u32) -> (Value, Value) {
    let s = c.extnet(node, &["status", "--node", node, "--json"]);
    assert!(s.ok(), "{s}");
    let v: Value = serde_json::from_str(&s.stdout).unwrap_or_else(|e| panic!("{e}: {s}"));
    assert!(v.get("counters_error").is_none(), "{v:#}");
    let entry = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == job)
        .unwrap_or_else(|| panic!("job {job} not in extnet status on {node}: {v:#}"))
        .clone();
    (v, entry)
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn status_shows_a_running_jobs_counters_and_interim_records_come_once_per_interval() {
    let c = Cluster::get();
    let job = c.sbatch(ALLOWED, 30, &["-N1", "-w", "n1", "--external-net"], &format!("/usr/bin/curl -sS -o /dev/null http://{OUTSIDE}:8080/bytes/{DOWN} && echo DOWNLOADED; sleep 120"));
    // the job downloaded within 60 s
    c.wait_job_output(ALLOWED, job, "DOWNLOADED");

    // counters so far, while the job runs
    let (v, entry) = status_entry(&c, "n1", job);
    assert!(u(&v["pool"], "used") >= 1, "{v:#}");
    assert_eq!(
        u(&v["pool"], "used") + u(&v["pool"], "free") + u(&v["pool"], "quarantined"),
        u(&v["pool"], "blocks"),
        "{v:#}"
    );
    assert_eq!(entry["mode"], "cgroup");
    assert_eq!(entry["user"], ALLOWED);
    let cnt = &entry["counters"];
    assert!(u(cnt, "bytes_in") >= DOWN, "{entry:#}");
    assert!(u(cnt, "connections") >= 1, "{entry:#}");
    // the IPv6 part (this job used none) and the node's IPv6 translation address
    assert_eq!(u(cnt, "bytes_in6"), 0, "{entry:#}");
    if c.policy_has_ipv6() {
        assert!(
            v["node_addr6"].as_str().is_some_and(|a| a.contains(':')),
            "the dual-stack node's IPv6 address: {v:#}"
        );
        assert_eq!(entry["node_addr6"], v["node_addr6"], "{entry:#}");
    }
    let table = c.extnet("n1", &["status", "--node", "n1"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&job.to_string()))
        .unwrap_or_else(|| panic!("job {job} not in the status table:\n{table}"));
    assert!(
        line.contains("MiB"),
        "the table shows the bytes so far: {line}"
    );

    // interim records: a copy of the policy with a 5 s interval
    let policy = std::fs::read_to_string(c.xn_dir.join("etc/extnet.toml")).unwrap();
    assert!(policy.contains("interim_secs = 3600"), "{policy}");
    let interim_policy = c.xn_dir.join("etc/extnet-interim.toml");
    std::fs::write(
        &interim_policy,
        policy.replace("interim_secs = 3600", "interim_secs = 5"),
    )
    .unwrap();
    let since = logged_at(&c, job, "n1", "allocate");
    while extnet::store::lease::now() < since + 5 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let interim = || {
        c.extnet_with(
            "n1",
            &interim_policy,
            &["lease-log", "interim", "--node", "n1"],
        )
    };
    let count = || {
        c.lease_events(job)
            .iter()
            .filter(|e| *e == "interim")
            .count()
    };
    let r = interim();
    assert!(r.ok(), "{r}");
    assert_eq!(
        count(),
        1,
        "one interim record for a lease older than 5 s: {r}"
    );
    let rec = c.lease_record(job, "n1", "interim");
    assert_eq!(
        (u(&rec, "port_first") as u16, u(&rec, "port_last") as u16),
        c.block(job, "n1")
    );
    assert_eq!(rec["node_addr"], "10.99.0.11");
    let r = interim();
    assert!(r.ok(), "{r}");
    assert_eq!(count(), 1, "not again within the interval: {r}");
    std::fs::remove_file(&interim_policy).unwrap();

    let cancel = c.login(ALLOWED, 20, &["scancel", &job.to_string()]);
    assert!(cancel.ok(), "{cancel}");
    let rec = &wait_records(&c, job, 1)[0];
    assert!(u(rec, "bytes_in") >= DOWN, "{rec:#}");
    assert!(
        u(rec, "bytes_in") >= u(cnt, "bytes_in"),
        "counters only grow: {rec:#}"
    );
    assert_eq!(
        c.lease_events(job),
        ["allocate", "interim", "release"],
        "lease log of job {job}"
    );
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn accounting_sums_a_two_node_job_in_the_table() {
    let c = Cluster::get();
    let script = format!(
        "#!/bin/sh\n#SBATCH -N2\n#SBATCH --external-net\necho JOB=$SLURM_JOB_ID\nsrun -N2 /usr/bin/curl -sS -o /dev/null http://{OUTSIDE}:8080/bytes/{UP}\n"
    );
    let job = c.sbatch_script(ALLOWED, 60, "acct-two-nodes.sh", &script);
    let recs = wait_records(&c, job, 2);
    let mut total = 0;
    for rec in &recs {
        assert!(
            (UP..UP + SLACK).contains(&u(rec, "bytes_in")),
            "each node downloaded {UP} bytes: {rec:#}"
        );
        total += u(rec, "bytes_in");
    }
    let t = c.extnet("n1", &["accounting", "--job", &job.to_string()]);
    assert!(t.ok(), "{t}");
    let line = t
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&job.to_string()))
        .unwrap_or_else(|| panic!("job {job} not in the table:\n{t}"));
    assert!(line.contains("n1,n2"), "one line for both nodes: {line}");
    assert!(
        line.contains(&extnet_cli::human_bytes(total)),
        "IN is the sum of both nodes ({total} bytes): {line}"
    );
    let one = c.extnet(
        "n1",
        &[
            "accounting",
            "--job",
            &job.to_string(),
            "--node",
            "n2",
            "--json",
        ],
    );
    let v: Vec<Value> = serde_json::from_str(&one.stdout).unwrap_or_else(|e| panic!("{e}: {one}"));
    assert_eq!(v.len(), 1, "--node filters: {one}");
    assert_eq!(v[0]["node"], "n2");
    c.assert_clean(job);
}

//! The policy language on the real test cluster (`slurm-test-env/`): who gets which profile
//! (group, account, the transparent grant, the deny list), where a granted job may go (the
//! destination allowlist, with drops counted on the node), limits, the early denial at submit,
//! and a policy file with unsafe permissions granting nothing.
//!
//! The profiles are in `slurm-test-env/extnet-test.toml`; the users in `slurm-test-env/lib.sh`.
//! Ignored by a plain `cargo test`; `slurm-test-env/test` runs them with `--include-ignored`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use support::cluster::*;

const GROUP_MEMBER: &str = "xncarol";
const DENIED_MEMBER: &str = "xnmallory";
const AUTO: &str = "xnauto";
const ACCOUNT: &str = "xnacct";

/// The profile of the job's lease on `node`, from the lease log.
fn leased_profile(c: &Cluster, job: u32, node: &str) -> String {
    c.lease_record(job, node, "allocate")["profile"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One SEEN tcp line from the gateway's address, and the job's lease of `profile` on n1.
fn assert_out_with(c: &Cluster, r: &Run, profile: &str) -> u32 {
    assert!(r.ok(), "the job failed:\n{r}");
    assert_eq!(r.seen_one("tcp").0, GATEWAY_PUBLIC, "{r}");
    let job = r.job_id();
    assert_eq!(leased_profile(c, job, "n1"), profile, "job {job}");
    job
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn group_member_is_granted_the_group_profile() {
    let c = Cluster::get();
    let p = c.probe();
    // xncarol is listed by no profile by name, only through group xnexp: the first profile that
    // grants her is "exp"
    let r = c.srun(
        GROUP_MEMBER,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    let job = assert_out_with(&c, &r, "exp");
    // her groups were looked up (NSS), as a step of their own before the decision
    let steps = c.prolog_steps(job, "n1");
    assert_eq!(steps[..2], ["groups", "decide"], "{steps:?}");
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn account_grants_a_user_no_profile_names() {
    let c = Cluster::get();
    let p = c.probe();
    let r = c.srun(
        DENIED,
        &["-N1", "-w", "n1", "-A", ACCOUNT, "--external-net"],
        &format!("{p} tcp"),
    );
    let job = assert_out_with(&c, &r, "acct");
    c.assert_clean(job);
    // the same user under another account gets nothing, and is told why
    let r = c.srun(
        DENIED,
        &["-N1", "-w", "n1", "-A", "other", "--external-net"],
        &format!("{p} tcp"),
    );
    assert!(!r.ok() && r.seen("tcp").is_empty(), "{r}");
    assert!(
        r.stderr
            .contains(&format!("no profile grants user {DENIED}"))
            && r.stderr.contains("profile \"acct\" does not list"),
        "{r}"
    );
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn auto_principal_gets_out_without_asking_and_others_do_not() {
    let c = Cluster::get();
    let p = c.probe();
    let r = c.srun(AUTO, &["-N1", "-w", "n1"], &format!("{p} tcp"));
    let job = assert_out_with(&c, &r, "transparent");
    let alloc = c.lease_record(job, "n1", "allocate");
    assert_eq!(alloc["user"], AUTO);
    // granted by name: the decision needed no group lookup (NSS is costly in a new process)
    let steps = c.prolog_steps(job, "n1");
    assert_eq!(
        steps.first().map(String::as_str),
        Some("decide"),
        "{steps:?}"
    );
    assert!(!steps.iter().any(|s| s == "groups"), "{steps:?}");
    c.assert_clean(job);
    // an sbatch job of the same user, also without asking
    let job = c.sbatch(
        AUTO,
        60,
        &["--wait", "-N1", "-w", "n2"],
        &format!("{p} tcp"),
    );
    let out = c.job_output(AUTO, job);
    assert!(
        out.contains(&format!("SEEN tcp {GATEWAY_PUBLIC} ")),
        "batch job {job} of the auto user did not get out:\n{out}"
    );
    c.assert_clean(job);
    // a user who may ask, but did not, stays inside (xncarol: allowed through her group)
    let r = c.srun(
        GROUP_MEMBER,
        &["-N1", "-w", "n1"],
        &format!("{p} tcp; echo rc=$?"),
    );
    assert!(r.stdout.contains("rc=1") && r.seen("tcp").is_empty(), "{r}");
    assert!(c.lease_records(r.job_id()).is_empty(), "{r}");
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn deny_list_wins_over_the_group_grant() {
    let c = Cluster::get();
    let p = c.probe();
    // xnmallory is in xnexp like xncarol, but profile "exp" denies her by name
    let r = c.srun(
        DENIED_MEMBER,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    assert!(
        !r.ok() && r.seen("tcp").is_empty(),
        "a denied user got out:\n{r}"
    );
    assert!(
        r.stderr.contains("external network access denied for job ")
            && r.stderr
                .contains(&format!("profile \"exp\" denies user {DENIED_MEMBER}")),
        "the user must see the rule:\n{r}"
    );
    // naming the profile is refused at submit: no job of hers can ever get it
    let r = c.login(
        DENIED_MEMBER,
        30,
        &["srun", "-N1", "--external-net=exp", "true"],
    );
    assert!(!r.ok(), "{r}");
    assert!(
        r.stderr
            .contains(&format!("profile \"exp\" denies user {DENIED_MEMBER}"))
            && r.stderr.contains("not submitted"),
        "{r}"
    );
}

/// Packets a profile's allowlist dropped on `node` (`dest_<profile>_drop`).
fn drops(c: &Cluster, node: &str, profile: &str) -> u64 {
    let r = c.on_node(
        node,
        &[
            "nft",
            "-j",
            "list",
            "counter",
            "inet",
            "extnet",
            &format!("dest_{profile}_drop"),
        ],
    );
    assert!(r.ok(), "drop counter of profile {profile} on {node}:\n{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["nftables"][1]["counter"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no packets in {}", r.stdout))
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn destination_allowlist_lets_through_only_what_it_lists_and_counts_the_rest() {
    let c = Cluster::get();
    let p = c.probe();
    // load the base with profile "web" on n1 first, so that the counter exists to compare with
    let warm = c.srun(ALLOWED, &["-N1", "-w", "n1", "--external-net=web"], "true");
    assert!(warm.ok(), "{warm}");
    c.assert_clean(warm.job_id());
    let before = drops(&c, "n1", "web");
    // allowed: tcp 7000 of the outside host; not allowed: its http (tcp 8080) and udp 7001
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=web"],
        &format!(
            "{p} tcp; echo tcp=$?; {p} http --timeout 2; echo http=$?; {p} udp --timeout 2; echo udp=$?"
        ),
    );
    assert!(
        r.stdout.contains("tcp=0") && r.stdout.contains("http=1") && r.stdout.contains("udp=1"),
        "allowed reached, others not:\n{r}"
    );
    assert_eq!(r.seen("tcp").len(), 1, "{r}");
    assert!(r.seen("http").is_empty() && r.seen("udp").is_empty(), "{r}");
    let job = r.job_id();
    let after = drops(&c, "n1", "web");
    assert!(
        after >= before + 2,
        "the dropped http and udp packets must be counted: {before} -> {after}"
    );
    // the admin sees the drops per profile
    let st = c.extnet("n1", &["status", "--node", "n1"]);
    assert!(st.ok(), "{st}");
    assert!(
        st.stdout
            .contains(&format!("profile web: {after} packets dropped")),
        "extnet status shows the drops:\n{st}"
    );
    c.assert_clean(job);
    // a profile without an allowlist still reaches every service of the outside host
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=default"],
        &format!("{p} http && {p} udp"),
    );
    assert!(
        r.ok() && r.seen("http").len() == 1 && r.seen("udp").len() == 1,
        "{r}"
    );
    c.assert_clean(r.job_id());
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn per_node_limit_denies_the_job_beyond_it() {
    let c = Cluster::get();
    let p = c.probe();
    let bg_job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1", "--external-net=limited"],
        "sleep 30",
    );
    c.wait_running(bg_job, "n1");
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=limited"],
        &format!("{p} tcp"),
    );
    assert!(!r.ok() && r.seen("tcp").is_empty(), "{r}");
    assert!(
        r.stderr
            .contains("profile \"limited\" allows at most 1 external job(s) at once on node n1")
            && r.stderr.contains(&bg_job.to_string()),
        "the user must see the limit:\n{r}"
    );
    // another profile of the same user is not limited by it
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=default"],
        &format!("{p} tcp"),
    );
    assert!(r.ok() && r.seen("tcp").len() == 1, "{r}");
    c.login(ALLOWED, 20, &["scancel", &bg_job.to_string()]);
    c.assert_clean(bg_job);
    c.assert_clean(r.job_id());
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn early_denial_at_submit_queues_nothing() {
    let c = Cluster::get();
    // xnbob is in no profile by name or group; "exp" has no account rule, so no job of his
    // could ever get it: srun, sbatch and salloc refuse before the job is queued
    for (cmd, extra) in [
        ("srun", vec!["-N1", "true"]),
        ("sbatch", vec!["-N1", "--wrap", "true"]),
        ("salloc", vec!["-N1", "true"]),
    ] {
        let mut args = vec![cmd, "--external-net=exp"];
        args.extend(extra);
        let r = c.login(DENIED, 30, &args);
        assert!(!r.ok(), "{cmd} must fail:\n{r}");
        assert!(
            r.stderr
                .contains("--external-net=exp: the job would get no external network access, so it is not submitted")
                && r.stderr.contains(&format!("profile \"exp\" does not list user {DENIED}")),
            "{cmd}: the user must see why:\n{r}"
        );
        assert!(
            !r.stdout.contains("Submitted batch job")
                && !r.stderr.contains("queued")
                && !r.stderr.contains("Granted job allocation"),
            "{cmd}: nothing may be queued:\n{r}"
        );
    }
    let q = c.login("root", 20, &["squeue", "-h", "-u", DENIED]);
    assert!(
        q.ok() && q.stdout.trim().is_empty(),
        "xnbob has no job queued:\n{q}"
    );
}

/// Restores the policy file's mode when dropped (also when the test panics).
struct ModeGuard {
    path: PathBuf,
    mode: u32,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(self.mode))
            .unwrap_or_else(|e| {
                eprintln!("cannot restore the mode of {}: {e}", self.path.display())
            });
    }
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn policy_writable_by_group_grants_nothing() {
    let c = Cluster::get();
    let p = c.probe();
    let path = c.xn_dir.join("etc/extnet.toml");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    let _guard = ModeGuard {
        path: path.clone(),
        mode,
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o020)).unwrap();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    assert!(
        !r.ok() && r.seen("tcp").is_empty(),
        "an unsafe policy granted:\n{r}"
    );
    assert!(
        r.stderr.contains("is unsafe") && r.stderr.contains("lets group or others write it"),
        "the user must see why:\n{r}"
    );
    // the task never ran (no JOB= line): the job id is in the refusal
    let job: u32 = r
        .stderr
        .split("for job ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no job id in the refusal:\n{r}"));
    assert!(
        c.lease_records(job).is_empty(),
        "no lease under an unsafe policy"
    );
    // the transparent grant is gone too: the auto user's job runs, without the outside
    let r = c.srun(AUTO, &["-N1", "-w", "n1"], &format!("{p} tcp; echo rc=$?"));
    assert!(r.stdout.contains("rc=1") && r.seen("tcp").is_empty(), "{r}");
    assert!(c.lease_records(r.job_id()).is_empty(), "{r}");
    // the reason is in the node's extnet log
    let log = std::fs::read_to_string(c.xn_dir.join("log/extnet-n1.log")).unwrap_or_default()
        + &std::fs::read_to_string(c.xn_dir.join("log/slurmd-n1.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("policy file {} is unsafe", path.display())),
        "the prolog logs why nothing is granted"
    );
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn changed_policy_applies_to_new_jobs_and_running_jobs_keep_their_grant() {
    let c = Cluster::get();
    let p = c.probe();
    let path = c.xn_dir.join("etc/extnet.toml");
    let original = std::fs::read_to_string(&path).unwrap();
    let _guard = PolicyGuard {
        path: path.clone(),
        text: original.clone(),
    };
    let go = c.work(ALLOWED).join("reload-go");
    let _ = std::fs::remove_file(&go);
    // a running job of profile "web" (an allowlist binding) that probes before and after
    let bg_job = c.sbatch(ALLOWED, 30, &["-N1", "-w", "n1", "--external-net=web"], &format!(
                "{p} tcp; echo first=$?; i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; {p} tcp; echo second=$?; {p} http --timeout 2; echo http=$?",
                go = go.display()
            ));
    c.wait_job_output(ALLOWED, bg_job, "first=");
    // change the policy: a new profile with an allowlist changes the node's ruleset
    let base = c.state_dir("n1").join("base.json");
    let before = std::fs::read_to_string(&base).unwrap();
    std::fs::write(
        &path,
        format!(
            "{original}\n[[profile]]\nname = \"added\"\nusers = [\"{ALLOWED}\"]\ndestinations = [{{ net = \"{OUTSIDE}\", proto = \"udp\" }}]\n"
        ),
    )
    .unwrap();
    // the new profile is there for the next job, without restarting anything
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net=added"],
        &format!("{p} udp; echo udp=$?; {p} tcp --timeout 2; echo tcp=$?"),
    );
    assert!(
        r.stdout.contains("udp=0") && r.stdout.contains("tcp=1"),
        "the new profile and its allowlist apply to a new job:\n{r}"
    );
    let after = std::fs::read_to_string(&base).unwrap();
    assert_ne!(
        before, after,
        "the node's table was reloaded for the new policy"
    );
    // (checked for leftovers at the end: the check counts the running job's processes too)
    let new_job = r.job_id();
    // the running job kept its grant and its allowlist across the reload
    std::fs::write(&go, "").unwrap();
    c.wait_gone(bg_job);
    let text = c.wait_job_output(ALLOWED, bg_job, "http=");
    let _ = std::fs::remove_file(&go);
    assert!(
        text.contains("first=0") && text.contains("second=0") && text.contains("http=1"),
        "job {bg_job} must keep its access (and only it) across the reload:\n{text}"
    );
    assert_eq!(
        text.matches(&format!("SEEN tcp {GATEWAY_PUBLIC} ")).count(),
        2,
        "{text}"
    );
    c.assert_clean(bg_job);
    c.assert_clean(new_job);
}

/// The test policy's pool of `profile`, which leaves through the gateways' second virtual
/// address (10.99.0.253; VRRP master gw2).
fn gw2_pool<'a>(policy: &'a extnet_policy::Policy, profile: &str) -> &'a extnet_policy::Pool {
    let pool = policy
        .pool_of_profile(profile)
        .unwrap_or_else(|| panic!("profile {profile} in the test policy"));
    assert_eq!(pool.gateway.to_string(), "10.99.0.253", "{profile}");
    pool
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_profile_pool_with_its_own_gateway_leaves_through_it_in_its_own_blocks() {
    let c = Cluster::get();
    let p = c.probe();
    // n1's own view: with [gateways] its pools are its own slice's
    let policy = c.policy().for_node("n1").unwrap();
    let bulk = gw2_pool(&policy, "bulk");
    let (first, last) = (bulk.ports.first, bulk.ports.last);
    let go = c.work(ALLOWED).join("bulk-go");
    let _ = std::fs::remove_file(&go);
    // a job of profile "bulk" on n1 that gets out, then holds its lease until told
    let bg_job = c.sbatch(ALLOWED, 30, &["-N1", "-w", "n1", "--external-net=bulk"], &format!(
                "{p} tcp; echo first=$?; i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; {p} tcp; echo second=$?",
                go = go.display()
            ));
    c.wait_job_output(ALLOWED, bg_job, "first=");
    // its lease: the pool's slot and block, from the lease log
    let alloc = c.lease_record(bg_job, "n1", "allocate");
    assert_eq!(alloc["profile"], "bulk");
    let mark = alloc["mark"].as_u64().unwrap() as u32;
    let slot = mark & extnet::plan::SLOT_MASK;
    assert!(
        bulk.slots().contains(&slot) && mark == extnet::plan::mark(&policy, slot),
        "mark {mark:#x} (slot {slot}) of a bulk job is one of its pool's slots ({:?})",
        bulk.slots()
    );
    assert_eq!(c.block(bg_job, "n1"), (first, last), "{alloc}");
    // at the same time, on the same node, a job of the default profile leaves through gw1
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    let job = assert_out_with(&c, &r, "default");
    let (lo, hi) = c.block(job, "n1");
    let port = r.seen("tcp")[0].1;
    assert!(
        (lo..=hi).contains(&port) && !(first..=last).contains(&port),
        "default job {job}: port {port}, its block {lo}-{hi}"
    );
    // the node's routing: the pool's rule (just before the main one) and its table
    let rules = c.on_node("n1", &["ip", "rule", "show"]);
    let planned = extnet::plan::pool_rules(&policy);
    assert!(!planned.is_empty());
    for r in planned {
        let rule = format!(
            "{}:\tfrom all fwmark {:#x}/{:#x} lookup {}",
            r.priority, r.fwmark, r.mask, r.table
        );
        assert!(rules.stdout.contains(&rule), "{rule:?} in:\n{rules}");
    }
    let table = c.on_node(
        "n1",
        &[
            "ip",
            "route",
            "show",
            "table",
            &bulk.route_table.to_string(),
        ],
    );
    assert!(
        table.stdout.contains("default via 10.99.0.253 dev eth0")
            && table.stdout.contains("throw 10.99.0.0/24"),
        "{table}"
    );
    // the admin sees each pool's use
    let st = c.extnet("n1", &["status", "--node", "n1"]);
    assert!(
        st.ok()
            && st.stdout.contains(&format!(
                "pool bulk: ports {first}-{last} in blocks of 1024, gateway 10.99.0.253: 1 used, 0 in quarantine, 0 free of 1"
            )),
        "{st}"
    );
    // the bulk job, still running, gets out again through gw2; then it ends
    std::fs::write(&go, "").unwrap();
    c.wait_gone(bg_job);
    let text = c.wait_job_output(ALLOWED, bg_job, "second=");
    let _ = std::fs::remove_file(&go);
    assert!(
        text.contains("first=0") && text.contains("second=0"),
        "{text}"
    );
    let seen = Run::from_job_output(text.clone()).seen("tcp");
    assert_eq!(seen.len(), 2, "{text}");
    for (addr, port) in &seen {
        assert_eq!(
            addr, GATEWAY2_PUBLIC,
            "job {bg_job} must leave through gw2:\n{text}"
        );
        assert!(
            (first..=last).contains(port),
            "job {bg_job}: port {port} outside its block {first}-{last}:\n{text}"
        );
    }
    c.assert_clean(bg_job);
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_netns_job_of_a_pool_with_its_own_gateway_leaves_through_it_in_its_own_block() {
    let c = Cluster::get();
    let p = c.probe();
    // n2's own view: with [gateways] its pools are its own slice's
    let policy = c.policy().for_node("n2").unwrap();
    let pool = gw2_pool(&policy, "bulkns");
    let (first, last) = (pool.ports.first, pool.ports.last);
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n2", "--external-net=bulkns"],
        &format!("{p} tcp"),
    );
    assert!(r.ok(), "the job failed:\n{r}");
    let job = r.job_id();
    let alloc = c.lease_record(job, "n2", "allocate");
    assert_eq!(alloc["profile"], "bulkns", "{alloc}");
    assert_eq!(alloc["mode"], "netns", "{alloc}");
    assert_eq!(c.block(job, "n2"), (first, last), "{alloc}");
    // out of its own namespace, through gw2, from a port of the pool's block
    let (addr, port) = r.seen_one("tcp");
    assert_eq!(
        addr, GATEWAY2_PUBLIC,
        "job {job} must leave through gw2:\n{r}"
    );
    assert!(
        (first..=last).contains(&port),
        "job {job}: port {port} outside its block {first}-{last}:\n{r}"
    );
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_job_naming_no_profile_gets_the_next_one_when_the_first_is_at_its_limit() {
    let c = Cluster::get();
    let p = c.probe();
    // xnauto's first profile, "transparent", allows one job per node: a batch job holds it
    let bg_job = c.sbatch(AUTO, 30, &["-N1", "-w", "n1"], "sleep 30");
    c.wait_running(bg_job, "n1");
    assert_eq!(leased_profile(&c, bg_job, "n1"), "transparent");
    // without asking, and asking without a name: the next profile that grants the job
    let r = c.srun(AUTO, &["-N1", "-w", "n1"], &format!("{p} tcp"));
    let job = assert_out_with(&c, &r, "transparent2");
    c.assert_clean(job);
    let r = c.srun(
        AUTO,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp"),
    );
    let job = assert_out_with(&c, &r, "transparent2");
    c.assert_clean(job);
    // naming the full profile: denied, with the limit as the reason
    let r = c.srun(
        AUTO,
        &["-N1", "-w", "n1", "--external-net=transparent"],
        &format!("{p} tcp"),
    );
    assert!(!r.ok() && r.seen("tcp").is_empty(), "{r}");
    assert!(
        r.stderr.contains(
            "profile \"transparent\" allows at most 1 external job(s) at once on node n1"
        ),
        "{r}"
    );
    c.assert_clean(r.job_id());
    c.login(AUTO, 20, &["scancel", &bg_job.to_string()]);
    c.assert_clean(bg_job);
}

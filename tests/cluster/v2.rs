//! Cluster tests of the cgroup/v2 configuration (`XN_SLURM_MODE=v2`: `CgroupPlugin=cgroup/v2`,
//! proctrack/cgroup, task/cgroup, `ConstrainRAMSpace=yes`), which runs only on a pure cgroup-v2
//! kernel: `slurm-test-env/vm/run` runs them in its VM (selected by their `v2_` prefix; the
//! host's run skips them). Slurm keeps every task in
//! `/sys/fs/cgroup/system.slice/<node>_slurmstepd.scope/job_<id>/step_<s>/user/task_<n>`;
//! extnet must leave them there and give their sockets the job's identity there.

use std::path::PathBuf;
use std::time::Duration;
use support::cluster::*;
use support::wait;

fn in_block(port: u16, block: (u16, u16)) -> bool {
    block.0 <= port && port <= block.1
}

/// Slurm's v2 cgroup of `job` on `node`.
fn slurm_job_cgroup(node: &str, job: u32) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/system.slice/{node}_slurmstepd.scope/job_{job}"
    ))
}

/// The `0::` lines of the tasks' `/proc/self/cgroup` in `out` (srun -l prefixes kept).
fn cgroup_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains("0::/")).collect()
}

/// Processes in the cgroup tree `dir`.
fn procs_below(dir: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let text = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        if let Ok(rd) = std::fs::read_dir(&d) {
            todo.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids
}

/// Whether process `pid` is one of the test's `sleep 300`.
fn is_sleep_300(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == "sleep\x00300\x00")
}

/// No task of `job` went into extnet's own cgroup on `node`, and that cgroup is gone.
fn assert_no_own_cgroup(c: &Cluster, node: &str, job: u32) {
    let layout = extnet::plan::layout::Layout::new(&c.policy(), node);
    let own = layout.job_cgroup(job);
    let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
    assert!(
        procs.trim().is_empty(),
        "tasks were moved into extnet's own cgroup {}: {procs}",
        own.display()
    );
    // the prolog's own cgroup is retired once Slurm's job cgroup is bound
    assert!(
        !own.exists(),
        "extnet's own cgroup {} is left beside Slurm's job cgroup",
        own.display()
    );
}

/// A granted srun of `profile` on n1 gets out over TCP and UDP in its block, its task stays
/// in Slurm's job cgroup, extnet's own cgroup is gone, and nothing is left after it.
fn granted_srun_stays_in_slurms_job_cgroup(profile: &str) {
    let c = Cluster::get();
    let p = c.probe();
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", &format!("--external-net={profile}")],
        &format!("grep ^0:: /proc/self/cgroup; {p} tcp && {p} udp"),
    );
    assert!(r.ok(), "granted job ({profile}) failed:\n{r}");
    let job = r.job_id();
    let want = format!("0::/system.slice/n1_slurmstepd.scope/job_{job}/step_0/user/task_0");
    assert_eq!(cgroup_lines(&r.stdout), [want.as_str()], "{r}");
    let block = c.block(job, "n1");
    for proto in ["tcp", "udp"] {
        let seen = r.seen_one(proto);
        assert_eq!(seen.0, GATEWAY_PUBLIC, "{proto}:\n{r}");
        assert!(
            in_block(seen.1, block),
            "{proto}: port {} not in {block:?}:\n{r}",
            seen.1
        );
    }
    assert_no_own_cgroup(&c, "n1", job);
    c.assert_clean(job);
    assert_eq!(c.lease_events(job), ["allocate", "release"]);
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_granted_srun_gets_out_and_its_task_stays_in_slurms_job_cgroup() {
    granted_srun_stays_in_slurms_job_cgroup("default");
}

/// netns mode: the task's network namespace is the job's, its cgroup stays Slurm's.
#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_granted_netns_srun_gets_out_and_its_task_stays_in_slurms_job_cgroup() {
    granted_srun_stays_in_slurms_job_cgroup("isolated");
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_sbatch_with_a_two_node_srun_gets_out_and_every_task_stays_in_slurms_cgroup() {
    let c = Cluster::get();
    let p = c.probe();
    let script = format!(
        "#!/bin/sh\n#SBATCH -N2\n#SBATCH --external-net\necho JOB=$SLURM_JOB_ID\n\
         grep ^0:: /proc/self/cgroup\n{p} tcp\n\
         srun -N2 -l sh -c 'grep ^0:: /proc/self/cgroup; if [ \"$SLURMD_NODENAME\" = n2 ]; then {p} http; else {p} tcp; fi'\n"
    );
    let job = c.sbatch_script(ALLOWED, 60, "v2-two-nodes.sh", &script);
    let out = c.job_output(ALLOWED, job);
    let mut lines = cgroup_lines(&out);
    lines.sort();
    let batch = format!("0::/system.slice/n1_slurmstepd.scope/job_{job}/step_batch/user/task_0");
    let t0 = format!("0: 0::/system.slice/n1_slurmstepd.scope/job_{job}/step_0/user/task_0");
    let t1 = format!("1: 0::/system.slice/n2_slurmstepd.scope/job_{job}/step_0/user/task_0");
    let mut want = [batch.as_str(), t0.as_str(), t1.as_str()];
    want.sort();
    assert_eq!(lines, want, "{out}");
    let seen: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("SEEN tcp") || l.contains("SEEN http"))
        .collect();
    assert_eq!(seen.len(), 3, "batch step + one srun task per node:\n{out}");
    let (b1, b2) = (c.block(job, "n1"), c.block(job, "n2"));
    for l in &seen {
        let port: u16 = l.split_whitespace().last().unwrap().parse().unwrap();
        assert!(l.contains(GATEWAY_PUBLIC), "{l}");
        assert!(
            in_block(port, b1) || in_block(port, b2),
            "port {port}: {b1:?} {b2:?}"
        );
    }
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_job_without_flag_beside_a_granted_job_of_the_same_user_does_not_get_out() {
    let c = Cluster::get();
    let (granted, job) = c.unflagged_job_beside_a_granted_one();
    // the granted job's tasks are in Slurm's cgroup, not in extnet's
    assert_no_own_cgroup(&c, "n1", granted);
    assert!(!procs_below(&slurm_job_cgroup("n1", granted)).is_empty());
    c.login(ALLOWED, 20, &["scancel", &granted.to_string()]);
    c.assert_clean(job);
    c.assert_clean(granted);
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_granted_job_stays_under_the_memory_limit_slurm_set() {
    let c = Cluster::get();
    let p = c.probe();
    // memory.max of the job's cgroup, a way out, then 400 MiB written into a 100 MiB job
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--mem=100", "--external-net"],
        &format!(
            "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); echo MAX=$(cat /sys/fs/cgroup${{cg%/step_*}}/memory.max); \
             {p} tcp; python3 -c \"b = b'x' * (400 << 20); print('ALLOCATED', len(b))\""
        ),
    );
    let job = r.job_id();
    assert!(
        r.stdout.contains("MAX=104857600"),
        "the job's memory.max is not --mem=100:\n{r}"
    );
    assert_eq!(r.seen_one("tcp").0, GATEWAY_PUBLIC, "{r}");
    assert!(
        !r.ok() && !r.stdout.contains("ALLOCATED"),
        "a granted job went over its --mem:\n{r}"
    );
    let all = format!("{}{}", r.stdout, r.stderr).to_lowercase();
    assert!(
        all.contains("oom") || all.contains("out of memory") || all.contains("killed"),
        "{r}"
    );
    c.assert_clean(job);
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_scancel_of_a_granted_job_leaves_no_process() {
    let c = Cluster::get();
    // a child that leaves its parent (reparented): proctrack/cgroup still finds it
    let job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1", "--external-net"],
        "(sleep 300 &); sleep 300 & wait",
    );
    c.wait_running(job, "n1");
    let dir = slurm_job_cgroup("n1", job);
    let mut pids = Vec::new();
    wait::until(Duration::from_secs(60), Duration::from_millis(250), || {
        pids = procs_below(&dir)
            .into_iter()
            .filter(|p| is_sleep_300(*p))
            .collect();
        if pids.len() >= 2 {
            return Ok(());
        }
        Err(format!(
            "sleeps of job {job} in {}: {pids:?}",
            dir.display()
        ))
    });
    assert_no_own_cgroup(&c, "n1", job);
    c.login(ALLOWED, 20, &["scancel", &job.to_string()]);
    c.assert_clean(job);
    let alive: Vec<_> = pids.iter().filter(|p| is_sleep_300(**p)).collect();
    assert!(
        alive.is_empty(),
        "processes of job {job} survived scancel: {alive:?}"
    );
    assert!(!dir.exists(), "Slurm's cgroup {} is left", dir.display());
}

const RECEIVER: &str = r#"
import array, os, socket, sys, time
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(1)
print("LISTENING", flush=True)
conn, _ = srv.accept()
fds = array.array("i")
_, anc, _, _ = conn.recvmsg(16, socket.CMSG_LEN(3 * fds.itemsize))
for _, _, data in anc:
    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
print("GOT", len(fds), flush=True)
while not os.path.exists(path + ".go"):
    time.sleep(0.2)
for fd in fds:
    s = socket.socket(fileno=fd)
    s.settimeout(3)
    try:
        s.connect((sys.argv[2], 7000))
        print("CONNECTED", s.recv(200), flush=True)
    except OSError as e:
        print("FAILED", e, flush=True)
print("DONE", flush=True)
"#;

const SENDER: &str = r#"
import array, socket, sys
socks = [socket.socket() for _ in range(3)]
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
c.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno() for s in socks]))])
print("SENT", flush=True)
"#;

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_sockets_passed_out_of_a_granted_job_reach_nothing_after_it_ended() {
    let c = Cluster::get();
    let work = c.work(ALLOWED);
    for (name, text) in [("v2-receiver.py", RECEIVER), ("v2-sender.py", SENDER)] {
        std::fs::write(work.join(name), text).unwrap();
    }
    let sock = work.join("v2-pass.sock");
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(work.join("v2-pass.sock.go"));
    // a job of the same user without the flag receives the sockets
    let receiver = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1"],
        &format!(
            "python3 {}/v2-receiver.py {} {OUTSIDE}",
            work.display(),
            sock.display()
        ),
    );
    c.wait_job_output(ALLOWED, receiver, "LISTENING");
    let sender = c.srun(
        ALLOWED,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("python3 {}/v2-sender.py {}", work.display(), sock.display()),
    );
    assert!(sender.ok() && sender.stdout.contains("SENT"), "{sender}");
    c.wait_job_output(ALLOWED, receiver, "GOT 3");
    // the granted job has ended and its epilog has run
    c.assert_clean(sender.job_id());
    let mark = c.seen_log_mark();
    std::fs::write(work.join("v2-pass.sock.go"), "").unwrap();
    let out = c.wait_job_output(ALLOWED, receiver, "DONE");
    assert_eq!(
        out.matches("FAILED").count(),
        3,
        "passed sockets got out:\n{out}"
    );
    assert!(!out.contains("CONNECTED"), "{out}");
    let seen = c.seen_since(mark);
    assert!(
        seen.is_empty(),
        "the outside host saw the passed sockets: {seen:?}"
    );
    c.assert_clean(receiver);
}

#[test]
#[ignore = "needs root and the test cluster in mode v2: run slurm-test-env/vm/run"]
fn v2_conntrack_entries_of_a_granted_job_are_gone_after_its_epilog() {
    let c = Cluster::get();
    let p = c.probe();
    let job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1", "--external-net"],
        &format!("{p} tcp; {p} udp; echo PROBED; sleep 10"),
    );
    c.wait_job_output(ALLOWED, job, "PROBED");
    let mark = c.lease_record(job, "n1", "allocate")["mark"]
        .as_u64()
        .unwrap()
        .to_string();
    let entries = |c: &Cluster| {
        let r = c.on_node("n1", &["conntrack", "-L", "-m", &mark]);
        r.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    };
    assert!(
        entries(&c) > 0,
        "no conntrack entry of the job's mark {mark} while it runs"
    );
    c.assert_clean(job);
    assert_eq!(
        entries(&c),
        0,
        "conntrack entries of job {job} (mark {mark}) outlive its epilog"
    );
}

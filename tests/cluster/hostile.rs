//! A hostile user's tricks on the test cluster, judged by the outside host's log: a job of a
//! user no profile grants, running beside a granted job of another user on the same node,
//! tries to pose as that job — by forging the environment that carries a request, by
//! setting the granted job's packet marks on its own sockets (plainly and as "root" of a
//! user namespace of its own) and by moving itself into the granted job's cgroup. Nothing of
//! it reaches the outside; the granted job beside it gets out all along (so the path was open
//! to anyone who could pose as it).

use extnet::store::state::{JobState, Outcome};
use std::time::Duration;
use support::cluster::*;

/// The attacker's program: for each mark, a TCP socket with `SO_MARK` set to it and a
/// connection to the outside host; then a write of its own pid into the cgroup's
/// `cgroup.procs` and one more connection. Prints `ATTACK` and one word per step.
const ATTACK: &str = r#"
import errno, os, socket, sys
host, marks, cg = sys.argv[1], [int(m, 0) for m in sys.argv[2].split(",")], sys.argv[3]
out = []
def connect(s):
    s.settimeout(2)
    try:
        s.connect((host, 7000))
        out.append("connected")
    except OSError:
        out.append("connect-failed")
    s.close()
for m in marks:
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, m)
        out.append("mark-set")
    except OSError as e:
        out.append("mark-" + errno.errorcode[e.errno])
    connect(s)
try:
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    out.append("cgroup-joined")
except OSError as e:
    out.append("cgroup-" + errno.errorcode[e.errno])
connect(socket.socket())
print("ATTACK", " ".join(out), flush=True)
"#;

/// The grant of running job `job` on n1, from its state file.
fn grant(c: &Cluster, job: u32) -> extnet::store::state::Grant {
    let path = c.state_dir("n1").join(format!("jobs/{job}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let state: JobState = serde_json::from_str(&text).expect("a job state");
    match state.outcome {
        Outcome::Granted(g) => g,
        other => panic!("job {job} is not granted: {other:?}"),
    }
}

/// The `ATTACK` lines of `out`: what each attempt got.
fn attacks(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ATTACK "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_user_posing_as_a_granted_job_gets_nothing_out() {
    let c = Cluster::get();
    let p = c.probe();
    let policy = c.policy();
    // xnalice's granted job on n1, probing now and then: the path it has is the prize
    let granted = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", "n1", "--external-net", "-t", "3"],
        &format!("{p} tcp --for 40 --every 2; sleep 5"),
    );
    // cancelled however the test ends, so that no later test finds its block busy
    let _cancel = Cancel(&c, granted);
    c.wait_running(granted, "n1");
    let g = grant(&c, granted);
    let checked = extnet::plan::mark(&policy, g.slot);
    let socket_mark = extnet::plan::socket_mark(&policy, g.slot);
    let cgroup = g
        .slurm_cgroup
        .as_ref()
        .map(|b| b.path.clone())
        .or(g.cgroup.clone())
        .expect("a cgroup-mode job has a cgroup");
    let marks = format!("{socket_mark:#x},{checked:#x}");

    // xnbob, whom no profile grants, on the same node
    let script = c.work(DENIED).join("attack.py");
    std::fs::write(&script, ATTACK).unwrap();
    let script = script.display().to_string();
    let attack = format!("python3 {script} {OUTSIDE} {marks} {}", cgroup.display());
    let mark = c.seen_log_mark();
    // the request and the identity as the plugin's and the prolog's variables carry them,
    // forged in srun's environment: srun passes `_SLURM_SPANK_OPTION_*` on to the step as if
    // the option had been given, but the request the prolog decides on never came, so the
    // step finds no decision and stops (fail closed), and nothing was leased
    let forged = c.login(
        DENIED,
        60,
        &[
            "env",
            "SPANK_EXTNET_REQUEST=default",
            "_SLURM_SPANK_OPTION_extnet_external_net=default",
            "SLURM_JOB_USER=xnalice",
            &format!("SLURM_JOB_UID={}", uid_of(ALLOWED)),
            "srun",
            "-N1",
            "-w",
            "n1",
            "sh",
            "-c",
            &format!("echo JOB=$SLURM_JOB_ID; {p} tcp; echo rc=$?"),
        ],
    );
    assert!(
        !forged.stdout.contains("rc=0") && forged.seen("tcp").is_empty(),
        "the forged environment got the probe out:\n{forged}"
    );
    let forged_job: u32 = forged
        .stdout
        .lines()
        .chain(forged.stderr.lines())
        .find_map(|l| {
            l.strip_prefix("JOB=").map(str::parse).or_else(|| {
                l.split("for job ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .map(str::parse)
            })
        })
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no job id in the forged job's output:\n{forged}"));
    assert!(
        c.lease_records(forged_job).is_empty(),
        "the forged request got job {forged_job} a lease"
    );

    // the granted job's marks on the attacker's sockets and its cgroup, plainly, as "root"
    // of a user namespace, and in a user and a cgroup namespace
    let r = c.srun(
        DENIED,
        &["-N1", "-w", "n1"],
        &format!("{p} tcp; echo rc=$?; {attack}; unshare -Ur {attack}; unshare -UrC {attack}"),
    );
    let attack_end = now();
    let got = attacks(&r.stdout);
    assert_eq!(
        got.len(),
        3,
        "the attack ran plainly, in a user namespace and in a user and cgroup namespace (unprivileged user namespaces must be allowed on the node):\n{r}"
    );
    for (how, words) in ["plain", "user namespace", "user and cgroup namespace"]
        .iter()
        .zip(&got)
    {
        println!("{how}: {}", words.join(" "));
        assert!(
            words
                .iter()
                .all(|w| w != "mark-set" && w != "cgroup-joined"),
            "{how}: the attacker set a job's mark or joined its cgroup: {words:?}\n{r}"
        );
        assert!(
            !words.iter().any(|w| w == "connected"),
            "{how}: the attacker connected out: {words:?}\n{r}"
        );
        assert_eq!(words.len(), 6, "{how}: {words:?}");
    }
    assert!(
        r.stdout.contains("rc=1") && !r.stdout.contains("rc=0"),
        "a job that did not ask got out:\n{r}"
    );
    let job = r.job_id();
    assert!(
        c.lease_records(job).is_empty(),
        "a job that did not ask got a lease: job {job}"
    );
    // the granted job's next probe (every 2 s) reaches the outside host: the path was open
    // while the attack ran, and the attacker's attempts had time to arrive
    let seen = support::wait::until(Duration::from_secs(10), Duration::from_millis(200), || {
        let seen = c.seen_since(mark);
        if seen.iter().any(|s| s.at >= attack_end) {
            return Ok(seen);
        }
        Err(format!(
            "the granted job {granted} did not get out within 10 s after the attack (the attack proves nothing then): {seen:?}"
        ))
    });
    // the outside host saw only the granted job, from its own block
    let (lo, hi) = (g.port_first, g.port_last);
    let strays: Vec<&Seen> = seen
        .iter()
        .filter(|s| !(lo <= s.port && s.port <= hi))
        .collect();
    assert!(
        strays.is_empty(),
        "the outside host saw traffic outside the granted job's block {lo}-{hi}: {strays:?}"
    );
    c.assert_clean(job);
    c.assert_clean(forged_job);
    drop(_cancel);
    c.assert_clean(granted);
}

/// Cancels a job when dropped (also when the test panics).
struct Cancel<'a>(&'a Cluster, u32);

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        self.0.login(ALLOWED, 20, &["scancel", &self.1.to_string()]);
    }
}

//! Shared helpers of the cluster tests: run commands as test users on the login host of the
//! test cluster (`slurm-test-env/`), read the nodes' extnet state, and check that a job left
//! nothing behind.
#![allow(dead_code)]

use crate::{jsonl, wait};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const OUTSIDE: &str = "203.0.113.10";
/// What the outside sees of jobs routed through the nodes' virtual address (`main`, master
/// gw1): the public address that moves with it.
pub const GATEWAY_PUBLIC: &str = "203.0.113.101";
/// What the outside sees of jobs routed through the second virtual address (`bulk`, master
/// gw2: profiles `bulk` and `bulkns`).
pub const GATEWAY2_PUBLIC: &str = "203.0.113.102";
/// The outside host's IPv6 address (`slurm-test-env/lib.sh`: the documentation prefix
/// outside, unique local addresses inside).
pub const OUTSIDE6: &str = "2001:db8::10";
/// The IPv6 public address that moves with the nodes' virtual address (`main`): what the
/// outside sees of a job's IPv6 through it ([`GATEWAY_PUBLIC`]'s twin).
pub const GATEWAY_PUBLIC6: &str = "2001:db8::101";
/// The IPv6 public address of the second virtual address (`bulk`).
pub const GATEWAY2_PUBLIC6: &str = "2001:db8::102";
/// The IPv6 virtual addresses the nodes route to (`main`, `bulk`), in the cluster's ULA
/// network `fd00:78e7::/64`.
pub const VIP6: &str = "fd00:78e7::254";
pub const VIP2_6: &str = "fd00:78e7::253";
/// The gateways' own addresses on the cluster network and on the outside, IPv6.
pub const GW1_CLUSTER6: &str = "fd00:78e7::251";
pub const GW2_CLUSTER6: &str = "fd00:78e7::252";
pub const GW1_OUT6: &str = "2001:db8::1";
pub const GW2_OUT6: &str = "2001:db8::2";
pub const NODES: [&str; 2] = ["n1", "n2"];
pub const ALLOWED: &str = "xnalice";
pub const DENIED: &str = "xnbob";

pub struct Cluster {
    pub repo: PathBuf,
    pub xn_dir: PathBuf,
}

/// Output of a command, as text.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// A batch job's output file, read as the output of a run that succeeded: for its
    /// `JOB=` and `SEEN` lines.
    pub fn from_job_output(text: String) -> Run {
        Run {
            code: Some(0),
            stdout: text,
            stderr: String::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// `JOB=<id>` printed by the job's first line, or, for a job whose tasks never ran, the
    /// id in extnet's denial (`... denied for job <id>: ...`).
    pub fn job_id(&self) -> u32 {
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("JOB=").and_then(|v| v.parse().ok()))
            .or_else(|| {
                self.stderr.lines().find_map(|l| {
                    let rest = l.split_once("denied for job ")?.1;
                    rest.split(':').next()?.trim().parse().ok()
                })
            })
            .unwrap_or_else(|| panic!("no JOB= line in the job's output:\n{self}"))
    }

    /// The one `SEEN <proto> <ip> <port>` line of the outside host: the address and port it
    /// saw; panics when there is not exactly one.
    pub fn seen_one(&self, proto: &str) -> (String, u16) {
        let s = self.seen(proto);
        assert_eq!(s.len(), 1, "expected one SEEN {proto} line:\n{self}");
        s[0].clone()
    }

    /// The `SEEN <proto> <ip> <port>` lines of the outside host.
    pub fn seen(&self, proto: &str) -> Vec<(String, u16)> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == "SEEN" && f[1] == proto)
                    .then(|| (f[2].to_string(), f[3].parse().unwrap()))
            })
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Cluster {
    /// The running test cluster. Panics with the way to start it when it is not up.
    pub fn get() -> Cluster {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the repository")
            .to_path_buf();
        let xn_dir =
            PathBuf::from(std::env::var("XN_DIR").unwrap_or_else(|_| "/run/extnet-test".into()));
        assert!(
            xn_dir.join(".slurm-test-env").exists() && Path::new("/run/netns/xn-login").exists(),
            "the test cluster is not up (no {}/.slurm-test-env): run `slurm-test-env/test` (or `slurm-test-env/up` first)",
            xn_dir.display()
        );
        Cluster { repo, xn_dir }
    }

    /// Runs `args` as `user` on the login host (`slurm-test-env/xn-login`), at most `secs`.
    pub fn login(&self, user: &str, secs: u32, args: &[&str]) -> Run {
        let o = Command::new("timeout")
            .arg("-k5")
            .arg(secs.to_string())
            .arg(self.repo.join("slurm-test-env/xn-login"))
            .arg(user)
            .args(args)
            .env("XN_DIR", &self.xn_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run slurm-test-env/xn-login");
        Run::from_output(o)
    }

    /// `extnet --policy <the test policy> ARGS` on `node`, as root.
    pub fn extnet(&self, node: &str, args: &[&str]) -> Run {
        let policy = self.xn_dir.join("etc/extnet.toml");
        self.extnet_with(node, &policy, args)
    }

    /// `extnet --policy POLICY ARGS` on `node`, as root.
    pub fn extnet_with(&self, node: &str, policy: &Path, args: &[&str]) -> Run {
        let bin = self.xn_dir.join("bin/extnet").display().to_string();
        let policy = policy.display().to_string();
        let mut a = vec![bin.as_str(), "--policy", policy.as_str()];
        a.extend_from_slice(args);
        self.on_node(node, &a)
    }

    /// `extnet trace ADDR:PORT --at AT --json` (`[ADDR]:PORT` for an IPv6 address) on n1, over
    /// both nodes' lease logs: who held `port` of public address `ip` at `at` (seconds since
    /// the epoch); panics when it fails.
    pub fn trace(&self, ip: &str, port: u16, at: u64) -> Value {
        let target = if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        };
        let at = at.to_string();
        // a node that ran no granted job yet has no lease log
        let logs: Vec<String> = NODES
            .iter()
            .map(|n| self.xn_dir.join(format!("log/lease-{n}.log")))
            .filter(|l| l.exists())
            .map(|l| l.display().to_string())
            .collect();
        let mut args = vec!["trace", target.as_str(), "--at", at.as_str(), "--json"];
        for l in &logs {
            args.extend(["--log", l.as_str()]);
        }
        let r = self.extnet("n1", &args);
        assert!(r.ok(), "extnet trace {target} --at {at}:\n{r}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}:\n{r}"))
    }

    /// `sbatch --parsable ARGS --wrap WRAP` as `user` (up to `secs` seconds, for `--wait`);
    /// asserts that sbatch succeeded and returns the job id it printed.
    pub fn sbatch(&self, user: &str, secs: u32, args: &[&str], wrap: &str) -> u32 {
        let mut all = vec!["sbatch", "--parsable"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wrap", wrap]);
        self.sbatch_run(user, secs, &all)
    }

    /// Writes `script` to `name` in `user`'s work directory and runs it with `sbatch
    /// --parsable --wait` as `user` (up to `secs` seconds); asserts that sbatch succeeded and
    /// returns the job id it printed.
    pub fn sbatch_script(&self, user: &str, secs: u32, name: &str, script: &str) -> u32 {
        let path = self.work(user).join(name);
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let path = path.display().to_string();
        self.sbatch_run(user, secs, &["sbatch", "--parsable", "--wait", &path])
    }

    /// Like [`Cluster::sbatch_script`], without `--wait`: returns the job id at once.
    pub fn sbatch_script_nowait(&self, user: &str, name: &str, script: &str) -> u32 {
        let path = self.work(user).join(name);
        std::fs::write(&path, script).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let path = path.display().to_string();
        self.sbatch_run(user, 30, &["sbatch", "--parsable", &path])
    }

    fn sbatch_run(&self, user: &str, secs: u32, args: &[&str]) -> u32 {
        let r = self.login(user, secs, args);
        assert!(r.ok(), "sbatch failed:\n{r}");
        r.stdout
            .lines()
            .filter_map(|l| l.trim().split(';').next()?.parse().ok())
            .next_back()
            .unwrap_or_else(|| panic!("sbatch --parsable printed no job id:\n{r}"))
    }

    /// `user`'s work directory on the login host, where batch jobs start and write their
    /// output.
    pub fn work(&self, user: &str) -> PathBuf {
        self.xn_dir.join("work").join(user)
    }

    /// Where batch job `job` of `user` writes its output (`slurm-<job>.out`).
    pub fn job_output_path(&self, user: &str, job: u32) -> PathBuf {
        self.work(user).join(format!("slurm-{job}.out"))
    }

    /// The output of batch job `job` of `user`.
    pub fn job_output(&self, user: &str, job: u32) -> String {
        let path = self.job_output_path(user, job);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Waits (60 s at most) until the output of the running batch job `job` of `user`
    /// contains `needle`; returns the output.
    pub fn wait_job_output(&self, user: &str, job: u32, needle: &str) -> String {
        let path = self.job_output_path(user, job);
        wait::until(Duration::from_secs(60), Duration::from_millis(200), || {
            let t = std::fs::read_to_string(&path).unwrap_or_default();
            if t.contains(needle) {
                return Ok(t);
            }
            Err(format!(
                "{} has no {needle:?} after 60 s:\n{t}",
                path.display()
            ))
        })
    }

    /// `srun ARGS -- sh -c 'echo JOB=$SLURM_JOB_ID; SCRIPT'` as `user`.
    pub fn srun(&self, user: &str, srun_args: &[&str], script: &str) -> Run {
        let full = format!("echo JOB=$SLURM_JOB_ID; {script}");
        let mut args = vec!["srun"];
        args.extend_from_slice(srun_args);
        args.extend_from_slice(&["sh", "-c", &full]);
        self.login(user, 120, &args)
    }

    /// The probe a job runs to reach the outside host.
    pub fn probe(&self) -> String {
        self.xn_dir.join("bin/probe").display().to_string()
    }

    /// Runs a command in a node's network namespace, as root.
    pub fn on_node(&self, node: &str, args: &[&str]) -> Run {
        self.on_host(node, args)
    }

    /// Runs a command as root on any host of the cluster (`n1`, `gw1`, `out`, ...): in its
    /// network namespace `xn-<host>`.
    pub fn on_host(&self, host: &str, args: &[&str]) -> Run {
        let o = Command::new("nsenter")
            .arg(format!("--net=/run/netns/xn-{host}"))
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter");
        Run::from_output(o)
    }

    /// Whether the cluster's policy gives the nodes an IPv6 gateway (`[node] gateway6`), and
    /// with it the virtual addresses IPv6 ones.
    pub fn policy_has_ipv6(&self) -> bool {
        self.policy().node.gateway6.is_some()
    }

    /// `nft -j list map inet extnet MAP` on `node`.
    fn nft_map(&self, node: &str, map: &str) -> Run {
        self.on_node(node, &["nft", "-j", "list", "map", "inet", "extnet", map])
    }

    /// `extnet node setup --node NODE` on `node`: loads the node's base again when it is not
    /// in place (what a repair agent would do).
    pub fn node_setup(&self, node: &str) -> Run {
        self.extnet(node, &["node", "setup", "--node", node])
    }

    /// A guard for tests that break the node's base on purpose and judge the node without
    /// repair: it pauses the node's agent (`extnet node watch`, SIGSTOP), which would put the
    /// base back within a fraction of a second, and when dropped, also when the test panics,
    /// runs [`Cluster::node_setup`] on `node` and lets the agent go on (SIGCONT).
    pub fn restore_base_on_drop(&self, node: &'static str) -> BaseGuard<'_> {
        let agent = self.agent_pid(node);
        if let Some(pid) = agent {
            nix::sys::signal::kill(pid, nix::sys::signal::SIGSTOP).expect("pause the node agent");
        }
        BaseGuard {
            cluster: self,
            node,
            agent,
        }
    }

    /// The pid of the node agent of `node`, as `slurm-test-env/up` recorded it, if it runs.
    pub fn agent_pid(&self, node: &str) -> Option<nix::unistd::Pid> {
        let text =
            std::fs::read_to_string(self.xn_dir.join(format!("pids/watch-{node}.pid"))).ok()?;
        let pid: i32 = text.split_whitespace().next()?.parse().ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, None).ok().map(|_| pid)
    }

    /// Where the outside host's log (`out/seen.log`) ends now: pass it to
    /// [`Cluster::seen_since`].
    pub fn seen_log_mark(&self) -> u64 {
        std::fs::metadata(self.seen_log_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// What reached the outside host since `mark` ([`Cluster::seen_log_mark`]), in order.
    pub fn seen_since(&self, mark: u64) -> Vec<Seen> {
        let path = self.seen_log_path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let from = (mark as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..])
            .lines()
            .filter_map(Seen::parse)
            .collect()
    }

    fn seen_log_path(&self) -> PathBuf {
        self.xn_dir.join("out/seen.log")
    }

    /// The cluster's policy, as the prologs read it (without the file permission check: a
    /// test may have made it unsafe on purpose).
    pub fn policy(&self) -> extnet_policy::Policy {
        let path = self.xn_dir.join("etc/extnet.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        extnet_policy::Policy::from_toml(&text, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.xn_dir.join("state").join(node)
    }

    /// Waits (60 s at most) until `job` runs and its prolog on `node` has written its state.
    pub fn wait_running(&self, job: u32, node: &str) {
        wait::until(Duration::from_secs(60), Duration::from_millis(200), || {
            let r = self.login(
                "root",
                20,
                &["squeue", "-h", "-j", &job.to_string(), "-o", "%T"],
            );
            if r.stdout.trim() == "RUNNING"
                && self
                    .state_dir(node)
                    .join(format!("jobs/{job}.json"))
                    .exists()
            {
                return Ok(());
            }
            Err(format!("job {job} not running on {node} after 60 s: {r}"))
        });
    }

    /// The records of `node`'s JSON-lines log `log` (`lease`, `accounting`:
    /// `log/<log>-<node>.log`), in order.
    pub fn log(&self, log: &str, node: &str) -> Vec<Value> {
        jsonl::read(&self.xn_dir.join(format!("log/{log}-{node}.log")))
    }

    /// The records of `job` in the log `log` of every node.
    pub fn job_log(&self, log: &str, job: u32) -> Vec<Value> {
        NODES
            .iter()
            .flat_map(|node| self.log(log, node))
            .filter(|r| r["job_id"] == job)
            .collect()
    }

    /// The lease log records of `job` (all nodes).
    pub fn lease_records(&self, job: u32) -> Vec<Value> {
        self.job_log("lease", job)
    }

    /// The events (`allocate`, `interim`, `release`) of the lease log records of `job` (all
    /// nodes), in order.
    pub fn lease_events(&self, job: u32) -> Vec<String> {
        self.lease_records(job)
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// The lease log record `event` (`allocate`, `release`, `interim`) of `job` on `node`;
    /// panics when there is none.
    pub fn lease_record(&self, job: u32, node: &str, event: &str) -> Value {
        self.lease_records(job)
            .into_iter()
            .find(|r| r["event"] == event && r["node"] == node)
            .unwrap_or_else(|| panic!("no {event} record of job {job} on {node} in the lease log"))
    }

    /// The step names of the prolog's result line for `job` on `node` (`steps=a:12 b:3`, the
    /// line's last field, in the node's extnet log).
    pub fn prolog_steps(&self, job: u32, node: &str) -> Vec<String> {
        let path = self.xn_dir.join(format!("log/extnet-{node}.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.contains("extnet-prolog: ") && l.contains(&format!(" job_id={job} ")))
            .unwrap_or_else(|| panic!("no prolog result line of job {job} in {}", path.display()));
        let steps = line
            .rsplit_once(" steps=")
            .unwrap_or_else(|| panic!("no steps in {line:?}"))
            .1;
        steps
            .split(' ')
            .map(|s| s.split(':').next().unwrap().to_owned())
            .collect()
    }

    /// The port block the job was given on `node`, from the lease log.
    pub fn block(&self, job: u32, node: &str) -> (u16, u16) {
        let r = self.lease_record(job, node, "allocate");
        (
            r["port_first"].as_u64().unwrap() as u16,
            r["port_last"].as_u64().unwrap() as u16,
        )
    }

    /// Waits until slurmctld no longer lists the job (its epilog has run on every node).
    pub fn wait_gone(&self, job: u32) {
        wait::until(Duration::from_secs(60), Duration::from_millis(200), || {
            let r = self.login(
                "root",
                20,
                &["squeue", "-h", "-j", &job.to_string(), "-o", "%T"],
            );
            if r.stdout.trim().is_empty() || r.stderr.contains("Invalid job id") {
                return Ok(());
            }
            Err(format!("job {job} still listed after 60 s: {r}"))
        });
    }

    /// Waits (`secs` at most) until the lease log has a `release` record of `job`.
    pub fn wait_released(&self, job: u32, secs: u64) {
        wait::until(
            Duration::from_secs(secs),
            Duration::from_millis(100),
            || {
                if self.lease_events(job).iter().any(|e| e == "release") {
                    return Ok(());
                }
                Err(format!(
                    "no release of job {job} in the lease log after {secs} s"
                ))
            },
        );
    }

    /// The leases in `node`'s lease table (none when it has no table yet).
    pub fn leases(&self, node: &str) -> Vec<extnet::store::lease::Lease> {
        let path = self.state_dir(node).join("leases.table");
        extnet::store::lease::LeaseTable::load(&path, node)
            .unwrap_or_else(|e| panic!("{node}'s lease table must load: {e}"))
            .leases
    }

    /// What of `job` is still on the nodes: namespace, link, lease, state file, its cgroup,
    /// processes in a cgroup of no running job, extra rules, routes or nft elements. Empty
    /// when nothing.
    pub fn residue(&self, job: u32) -> Vec<String> {
        let mut left = Vec::new();
        // the node base (not per job): the main and the hold rule, the rules of pools with a
        // gateway of their own, and their tables; never more
        let policy = self.policy();
        let base_rules = 2 + extnet::plan::pool_rules(&policy).len();
        let table_routes = 1 + policy.node.internal.len();
        let table_routes6 = 1 + policy.node.internal6.len();
        let slots = policy.slots() as usize;
        for node in NODES {
            let ns = format!("/run/netns/extnet-{node}-{job}");
            if Path::new(&ns).exists() {
                left.push(format!("{node}: network namespace {ns}"));
            }
            let link = self.on_node(node, &["ip", "-o", "link", "show", &format!("xj{job}")]);
            if link.ok() {
                left.push(format!("{node}: link xj{job}"));
            }
            let state = self.state_dir(node).join(format!("jobs/{job}.json"));
            if state.exists() {
                left.push(format!("{node}: state file {}", state.display()));
            }
            let resolv = self.state_dir(node).join(format!("resolv/{job}.conf"));
            if resolv.exists() {
                left.push(format!(
                    "{node}: the job's resolv.conf {}",
                    resolv.display()
                ));
            }
            let marker = self.state_dir(node).join(format!("jobs/{job}.lease"));
            if marker.exists() {
                left.push(format!("{node}: lease marker {}", marker.display()));
            }
            // jobs that hold leases now: their cgroups may have processes (theirs)
            let mut others = Vec::new();
            let mut others_cgroup_mode = 0;
            for l in self.leases(node) {
                if l.job_id == job {
                    left.push(format!("{node}: lease {l:?}"));
                } else {
                    others.push(format!("job_{}", l.job_id));
                    if l.mode == extnet_policy::Mode::Cgroup {
                        others_cgroup_mode += 1;
                    }
                }
            }
            let cg = extnet::plan::layout::Layout::new(&policy, node).cgroup_root;
            if cg.join(format!("job_{job}")).exists() {
                left.push(format!("{node}: cgroup {}/job_{job}", cg.display()));
            }
            if let Ok(rd) = std::fs::read_dir(&cg) {
                for e in rd.flatten() {
                    if others.iter().any(|s| e.file_name() == s.as_str()) {
                        continue;
                    }
                    let procs =
                        std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                    if !procs.trim().is_empty() {
                        left.push(format!(
                            "{node}: processes {:?} in {}",
                            procs.trim(),
                            e.path().display()
                        ));
                    }
                }
            }
            // IPv6 has the same rules (with IPv6 out: a pool's IPv6 follows its IPv4) or fewer
            for family in ["-4", "-6"] {
                let rules = self.on_node(node, &["ip", family, "rule", "show"]);
                let n = rules
                    .stdout
                    .lines()
                    .filter(|l| l.contains("fwmark"))
                    .count();
                if n > base_rules {
                    left.push(format!(
                        "{node}: {n} fwmark rules of ip {family} ({base_rules} at most: the main and hold rules and the pools'):\n{}",
                        rules.stdout
                    ));
                }
            }
            let mut tables = vec![policy.node.route_table, policy.node.hold_table];
            tables.extend(policy.routed_pools().map(|p| p.route_table));
            // the hold table also throws the netns subnets back (plan::hold_routes)
            let netns_throw = |table: u32, net: bool| {
                usize::from(table == policy.node.hold_table && policy.uses_netns() && net)
            };
            for &table in &tables {
                let t = table.to_string();
                let routes = self.on_node(node, &["ip", "route", "show", "table", &t]);
                let n = routes.stdout.lines().count();
                let table_routes = table_routes + netns_throw(table, true);
                if n > table_routes {
                    left.push(format!(
                        "{node}: {n} routes in table {t} ({table_routes} expected):\n{}",
                        routes.stdout
                    ));
                }
            }
            // IPv6: a default (or the hold table's unreachable one) and a throw per internal6,
            // in the pools' tables too
            for table in tables {
                let t = table.to_string();
                let routes = self.on_node(node, &["ip", "-6", "route", "show", "table", &t]);
                let n = routes.stdout.lines().count();
                let table_routes6 =
                    table_routes6 + netns_throw(table, policy.node.netns_subnet6.is_some());
                if n > table_routes6 {
                    left.push(format!(
                        "{node}: {n} IPv6 routes in table {t} ({table_routes6} at most):\n{}",
                        routes.stdout
                    ));
                }
            }
            // job cgroup elements: per running cgroup-mode job its own cgroup's and, where Slurm
            // keeps it in a v2 job cgroup (mode v2), that one's; none of an ended job
            let m = self.nft_map(node, "job_cgroup");
            if m.ok() {
                let v: Value = serde_json::from_str(&m.stdout).expect("nft -j output");
                let elems = v["nftables"][1]["map"]["elem"]
                    .as_array()
                    .map_or(0, |a| a.len());
                if elems > 2 * others_cgroup_mode {
                    left.push(format!(
                        "{node}: map job_cgroup has {elems} elements, {others_cgroup_mode} cgroup-mode jobs hold leases:\n{}",
                        m.stdout
                    ));
                }
            }
            // allowlist bindings: at most one per slot, every active lease bound to its profile
            left.extend(self.stray_bindings(node));
            // per-slot elements only: as many as the pools have blocks, never one per job
            for map in ["slot_snat", "slot_netns"] {
                let m = self.nft_map(node, map);
                if m.ok() {
                    let v: Value = serde_json::from_str(&m.stdout).expect("nft -j output");
                    let elems = v["nftables"][1]["map"]["elem"]
                        .as_array()
                        .map(|a| a.len())
                        .unwrap_or(0);
                    if elems != slots {
                        left.push(format!(
                            "{node}: map {map} has {elems} elements, the pools have {slots} slots"
                        ));
                    }
                }
            }
        }
        left
    }

    /// Allowlist bindings (`slot_profile` elements) that break the rules: an element whose
    /// mark is no slot's (one per job instead of one per slot), or an active lease whose slot
    /// is not bound to its profile's verdict. An ended job's element stays for the slot's next
    /// holder (the epilog writes no nft change; see `extnet::allowlist`).
    pub fn stray_bindings(&self, node: &str) -> Vec<String> {
        let m = self.nft_map(node, "slot_profile");
        if !m.ok() {
            return Vec::new(); // no table yet on this node
        }
        let v: Value = serde_json::from_str(&m.stdout).expect("nft -j output");
        // (mark, verdict in nft syntax): `{"accept": null}`, `{"jump": {"target": "dest_web"}}`
        let elems: Vec<(u64, String)> = v["nftables"][1]["map"]["elem"]
            .as_array()
            .map(|a| a.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let (verb, arg) = e[1].as_object()?.iter().next()?;
                let verdict = match arg["target"].as_str() {
                    Some(chain) => format!("{verb} {chain}"),
                    None => verb.clone(),
                };
                Some((e[0].as_u64()?, verdict))
            })
            .collect();
        let policy = self.policy();
        let slot_marks: Vec<u64> = (0..policy.slots())
            .map(|s| extnet::plan::mark(&policy, s) as u64)
            .collect();
        let mut bad: Vec<String> = elems
            .iter()
            .filter(|(m, _)| !slot_marks.contains(m))
            .map(|(m, _)| format!("{node}: allowlist binding of mark 0x{m:x}, which is no slot's"))
            .collect();
        for l in self.leases(node) {
            let (mark, profile) = (u64::from(l.mark), l.profile.as_str());
            // a lease of a profile the policy no longer has stays unbound on purpose
            let Some(p) = policy.profile(profile) else {
                continue;
            };
            let want = extnet::plan::ruleset::allowlist::verdict(p);
            match elems.iter().find(|(m, _)| *m == mark) {
                Some((_, got)) if *got == want => {}
                got => bad.push(format!(
                    "{node}: the lease of job {} (mark 0x{mark:x}, profile {profile}) is bound to {:?}, not to {want:?}",
                    l.job_id,
                    got.map(|(_, v)| v.as_str())
                )),
            }
        }
        bad
    }

    /// Runs a job of [`ALLOWED`] without `--external-net` on n1 while a granted batch job of
    /// the same user runs there, and asserts that it gets nothing out and no lease. Returns
    /// the granted job (still running: scancel it) and the job without the flag.
    pub fn unflagged_job_beside_a_granted_one(&self) -> (u32, u32) {
        let p = self.probe();
        let granted = self.sbatch(
            ALLOWED,
            30,
            &["-N1", "-w", "n1", "--external-net"],
            &format!("{p} tcp; sleep 20"),
        );
        self.wait_running(granted, "n1");
        let r = self.srun(
            ALLOWED,
            &["-N1", "-w", "n1"],
            &format!("{p} tcp; echo rc=$?; {p} udp; echo rc=$?"),
        );
        assert!(
            r.stdout.contains("rc=1") && !r.stdout.contains("rc=0"),
            "a job without --external-net got out:\n{r}"
        );
        assert!(r.seen("tcp").is_empty() && r.seen("udp").is_empty(), "{r}");
        let job = r.job_id();
        assert!(
            self.lease_records(job).is_empty(),
            "a job that did not ask got a lease"
        );
        (granted, job)
    }

    /// Waits for the job to end and asserts that nothing of it is left on any node.
    pub fn assert_clean(&self, job: u32) {
        self.wait_gone(job);
        // the epilog finishes shortly after slurmctld forgets the job
        wait::until(Duration::from_secs(30), Duration::from_millis(250), || {
            let left = self.residue(job);
            if left.is_empty() {
                return Ok(());
            }
            Err(format!("job {job} left behind:\n  {}", left.join("\n  ")))
        });
    }
}

/// The uid of the test user `user` on this machine (the test cluster's users are its own).
pub fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"))
        .uid
        .as_raw()
}

/// Puts the policy file's content back when dropped (also when the test panics).
pub struct PolicyGuard {
    pub path: PathBuf,
    pub text: String,
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.text).unwrap_or_else(|e| {
            eprintln!("cannot restore the policy {}: {e}", self.path.display())
        });
    }
}

/// Runs `extnet node setup` on its node and lets its paused agent go on when dropped
/// ([`Cluster::restore_base_on_drop`]).
pub struct BaseGuard<'a> {
    cluster: &'a Cluster,
    node: &'static str,
    agent: Option<nix::unistd::Pid>,
}

impl Drop for BaseGuard<'_> {
    fn drop(&mut self) {
        let r = self.cluster.node_setup(self.node);
        if !r.ok() {
            eprintln!("cannot restore the base of {}:\n{r}", self.node);
        }
        if let Some(pid) = self.agent {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGCONT);
        }
    }
}

/// Now, in seconds since the epoch: the clock of `seen.log` and of `probe --for`.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// One line of the outside host's log (`out/seen.log`): what reached it, when, and from
/// which address and port.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Seconds since the epoch.
    pub at: f64,
    pub proto: String,
    pub ip: String,
    pub port: u16,
}

impl Seen {
    /// `2026-01-02T03:04:05.678+00:00 SEEN tcp 203.0.113.1 20001`
    fn parse(line: &str) -> Option<Seen> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 5 || f[1] != "SEEN" {
            return None;
        }
        Some(Seen {
            at: iso_to_unix(f[0])?,
            proto: f[2].to_owned(),
            ip: f[3].to_owned(),
            port: f[4].parse().ok()?,
        })
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} {} {}:{}", self.at, self.proto, self.ip, self.port)
    }
}

/// One attempt of `probe PROTO --for SECS`: when it started and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Seconds since the epoch.
    pub at: f64,
    pub proto: String,
    /// The address and port the outside host answered that it saw, or why there was no answer.
    pub outcome: Result<(String, u16), String>,
}

impl Attempt {
    /// The attempts in a job's output (`AT <time> <proto> SEEN <proto> <ip> <port>` or
    /// `AT <time> <proto> FAIL <error>`), in order; other lines are skipped.
    pub fn all(output: &str) -> Vec<Attempt> {
        output.lines().filter_map(Attempt::parse).collect()
    }

    fn parse(line: &str) -> Option<Attempt> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0] != "AT" {
            return None;
        }
        let outcome = match f[3] {
            "SEEN" if f.len() == 7 => Ok((f[5].to_owned(), f[6].parse().ok()?)),
            "FAIL" => Err(f[4..].join(" ")),
            _ => return None,
        };
        Some(Attempt {
            at: f[1].parse().ok()?,
            proto: f[2].to_owned(),
            outcome,
        })
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok((ip, port)) => write!(f, "{:.3} {} seen as {ip}:{port}", self.at, self.proto),
            Err(e) => write!(f, "{:.3} {} failed: {e}", self.at, self.proto),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]+HH:MM` (Python's `isoformat`) in seconds since the epoch.
fn iso_to_unix(s: &str) -> Option<f64> {
    let (date, rest) = s.split_once('T')?;
    let split = rest.rfind(['+', '-'])?;
    let (time, offset) = rest.split_at(split);
    let mut d = date.splitn(3, '-').map(|v| v.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    let (oh, om) = offset[1..].split_once(':')?;
    let off = (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?) * 60;
    let off = if offset.starts_with('-') { -off } else { off };
    // days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 - off) as f64 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_log_lines_and_probe_attempts_parse() {
        let s =
            Seen::parse("2026-12-07T00:29:24.125+00:00 SEEN udplite 203.0.113.1 20001").unwrap();
        assert_eq!(
            (s.proto.as_str(), s.ip.as_str(), s.port),
            ("udplite", "203.0.113.1", 20001)
        );
        assert!((s.at - 1_796_603_364.125).abs() < 1e-6, "{}", s.at);
        assert_eq!(iso_to_unix("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(
            iso_to_unix("2000-03-01T00:00:00+00:00"),
            Some(951_868_800.0)
        );
        let a = Attempt::all(
            "JOB=7\nAT 1796603364.761 tcp SEEN tcp 203.0.113.1 20001\nAT 1796603366.237 http FAIL Connection refused\n",
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].outcome, Ok(("203.0.113.1".to_owned(), 20001)));
        assert_eq!(a[1].outcome, Err("Connection refused".to_owned()));
        assert!((a[1].at - 1_796_603_366.237).abs() < 1e-6);
    }
}

//! `extnet-bench`: extnet's benchmarks, run by `slurm-test-env/bench` inside a node of the test
//! cluster (`nsenter --net=/run/netns/xn-n1`). Not a test: it prints figures and checks them
//! against the project's targets, reporting every miss.
//!
//! - **Per-job cost.** The real `extnet-prolog` and `extnet-epilog`, started as slurmd starts
//!   them (minimal environment, no `PATH`), for a job that did not ask, an external job in
//!   cgroup mode and one in netns mode; beside them, in the same rounds, `/bin/true` (the floor
//!   of starting a process) and the same setup and teardown done the way sites do it today: a
//!   shell script with `ip` and `nft` commands. Each at 1, 100 and 1000 active external jobs on
//!   the node (the others filled in by running the prolog for that many jobs). Wall time
//!   (median) and peak RSS (`ru_maxrss` from `wait4`).
//! - **Data path.** iperf3 TCP from the node to the outside host through the gateway: the
//!   unmarked path (a temporary /32 route in the node's namespace, removed at once), a job's
//!   path in cgroup mode and in netns mode, and the job's path with 9 999 more elements in every
//!   map its packets look up (10 000 against 1). Rounds of the three paths one after the
//!   other, iperf3's client pinned to CPU 0 and its server to CPU 1; a ratio is the median of
//!   the rounds' ratios.
//!
//! Everything it makes lives under `$XN_DIR/bench`, in cgroups `extnet/bench-*`, in the nft
//! tables `inet extnet` and `ip extnet_sh` of the node's namespace and in `extnet-*` namespaces;
//! `extnet-bench cleanup` (run before and after) removes all of it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netns::command_in;

const GATEWAY: &str = "10.99.0.254";
const OUTSIDE: &str = "203.0.113.10";
const IPERF_PORT: &str = "5201";
/// Job ids of the benchmark: far above what the test cluster's slurmctld hands out.
const BACKGROUND_BASE: u32 = 20_000_000;
const MEASURED_BASE: u32 = 100_000_000;
const DATAPLANE_BASE: u32 = 30_000_000;

#[derive(Parser)]
#[command(
    name = "extnet-bench",
    about = "extnet's benchmarks (run by slurm-test-env/bench)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The test cluster's state directory.
    #[arg(long, default_value = "/run/extnet-test")]
    xn_dir: PathBuf,
    /// Where extnet-prolog, extnet-epilog and extnet are.
    #[arg(long)]
    bin_dir: PathBuf,
    /// The nodes to use: the first is the one this runs in (the data path, and the per-job
    /// cost at the highest level); the second, when given, runs the lower levels, so that each
    /// lower level is measured side by side with the highest one.
    #[arg(long, value_delimiter = ',', default_value = "n1,n2")]
    nodes: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmarks and print the table (Markdown).
    Run {
        #[command(flatten)]
        common: Common,
        /// Rounds per figure (each round runs every row once, side by side).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Active external jobs on the node at which the per-job cost is measured.
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        levels: Vec<usize>,
        /// Seconds per iperf3 run (after one omitted second).
        #[arg(long, default_value_t = 3)]
        iperf_secs: u32,
        /// iperf3 runs per figure: rounds of the three paths. Single runs vary by ±15 % on
        /// the 2-core VM; more, shorter rounds steady the median of their ratios.
        #[arg(long, default_value_t = 9)]
        iperf_reps: usize,
        /// Elements in each map the job's packets look up, for the loaded figure.
        #[arg(long, default_value_t = 10_000)]
        elements: u32,
        /// Skip the per-job cost.
        #[arg(long)]
        no_jobs: bool,
        /// Skip the data path.
        #[arg(long)]
        no_dataplane: bool,
        /// Also write the table to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The command line to show in the table.
        #[arg(long, default_value = "slurm-test-env/bench")]
        command: String,
    },
    /// Remove everything a run (also an interrupted one) made.
    Cleanup {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run {
            common,
            runs,
            levels,
            iperf_secs,
            iperf_reps,
            elements,
            no_jobs,
            no_dataplane,
            out,
            command,
        } => {
            let b = match Bench::new(common) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("extnet-bench: {e:#}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            b.cleanup();
            let r = b.run(&RunOpts {
                runs,
                levels,
                iperf_secs,
                iperf_reps,
                elements,
                jobs: !no_jobs,
                dataplane: !no_dataplane,
                out,
                command,
            });
            let left = b.cleanup();
            r.and_then(|()| {
                if left.is_empty() {
                    Ok(())
                } else {
                    bail!("cleanup left: {}", left.join("; "))
                }
            })
        }
        Cmd::Cleanup { common } => Bench::new(common).and_then(|b| {
            let left = b.cleanup();
            if left.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!("cleanup left: {}", left.join("; ")))
            }
        }),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("extnet-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

struct RunOpts {
    runs: usize,
    levels: Vec<usize>,
    iperf_secs: u32,
    iperf_reps: usize,
    elements: u32,
    jobs: bool,
    dataplane: bool,
    out: Option<PathBuf>,
    command: String,
}

/// Formats filler element `i` of one map.
type Elem<'a> = Box<dyn Fn(u32) -> String + 'a>;

/// Throughputs of one mode, bits per second, one entry per run.
#[derive(Default)]
struct Tput {
    /// The node's own, unmarked path.
    unmarked: Vec<f64>,
    /// The job's path.
    job: Vec<f64>,
    /// The job's path with the maps loaded.
    loaded: Vec<f64>,
}

/// One process run: wall time from spawn to reaping, and its peak resident set.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    rss_kib: u64,
}

/// The rows of the per-job table, in the order each round runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    True,
    PrologNone,
    EpilogNone,
    PrologCgroup,
    EpilogCgroup,
    PrologNetns,
    EpilogNetns,
    ShSetupCgroup,
    ShTeardownCgroup,
    ShSetupNetns,
    ShTeardownNetns,
}

impl Row {
    const ALL: [Row; 11] = [
        Row::True,
        Row::PrologNone,
        Row::EpilogNone,
        Row::PrologCgroup,
        Row::EpilogCgroup,
        Row::PrologNetns,
        Row::EpilogNetns,
        Row::ShSetupCgroup,
        Row::ShTeardownCgroup,
        Row::ShSetupNetns,
        Row::ShTeardownNetns,
    ];

    fn label(self) -> &'static str {
        match self {
            Row::True => "`/bin/true` (floor: starting a process)",
            Row::PrologNone => "prolog, job that did not ask",
            Row::EpilogNone => "epilog, job that did not ask",
            Row::PrologCgroup => "prolog, external job, cgroup mode",
            Row::EpilogCgroup => "epilog, external job, cgroup mode",
            Row::PrologNetns => "prolog, external job, netns mode",
            Row::EpilogNetns => "epilog, external job, netns mode",
            Row::ShSetupCgroup => "site script setup, cgroup (mkdir + `nft add element`)",
            Row::ShTeardownCgroup => "site script teardown, cgroup (`nft delete element` + rmdir)",
            Row::ShSetupNetns => "site script setup, netns (8 `ip` commands)",
            Row::ShTeardownNetns => {
                "site script teardown, netns (`ip netns pids`, kill, `ip netns del`)"
            }
        }
    }

    fn is_extnet(self) -> bool {
        matches!(
            self,
            Row::PrologNone
                | Row::EpilogNone
                | Row::PrologCgroup
                | Row::EpilogCgroup
                | Row::PrologNetns
                | Row::EpilogNetns
        )
    }
}

/// What a site's prolog and epilog do today, with `ip` and `nft` (the comparison row). The
/// cgroup case adds one element mapping the job's cgroup to its mark; the netns case builds
/// what extnet's netns mode builds. No lease bookkeeping: the script gets the easier job.
const SITE_SCRIPT: &str = r#"#!/bin/sh
# usage: site.sh setup|teardown cgroup|netns JOB INDEX   (env: CG, CGREL, MARK)
set -e
op=$1 mode=$2 job=$3 i=$4
ns=extnet-shb-$job
veth=xs$job
a=$((i / 64)) b=$((i % 64 * 4))
host=100.127.$a.$((b + 1))
jobaddr=100.127.$a.$((b + 2))
case $op.$mode in
setup.cgroup)
    mkdir "$CG/job_$job"
    nft add element ip extnet_sh cg "{ \"$CGREL/job_$job\" : $MARK }"
    ;;
teardown.cgroup)
    nft delete element ip extnet_sh cg "{ \"$CGREL/job_$job\" }"
    rmdir "$CG/job_$job"
    ;;
setup.netns)
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip addr add "$host/30" dev "$veth"
    ip link set "$veth" up
    echo 1 >"/proc/sys/net/ipv4/conf/$veth/forwarding"
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$jobaddr/30" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$host"
    ;;
teardown.netns)
    # end what still runs in the namespace, then drop it (the kernel reaps the veth pair)
    pids=$(ip netns pids "$ns")
    if [ -n "$pids" ]; then kill -9 $pids; fi
    ip netns del "$ns"
    ;;
*) echo "site.sh: bad arguments: $*" >&2; exit 2 ;;
esac
"#;

struct Bench {
    c: Common,
    dir: PathBuf,
    cgroup_mount: PathBuf,
    nodes: Vec<Node>,
}

/// A node of the test cluster: its name and its network namespace.
struct Node {
    name: String,
    ns: File,
}

/// The two policies: `jobs` (1562 slots, real quarantine) and `dataplane` (one slot).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pol {
    Jobs,
    Dataplane,
}

impl Pol {
    fn name(self) -> &'static str {
        match self {
            Pol::Jobs => "jobs",
            Pol::Dataplane => "dataplane",
        }
    }
}

impl Bench {
    fn new(c: Common) -> Result<Bench> {
        let dir = c.xn_dir.join("bench");
        let mut nodes = Vec::new();
        for name in &c.nodes {
            let path = format!("/run/netns/xn-{name}");
            let ns = File::open(&path)
                .with_context(|| format!("open {path}: is the test cluster up?"))?;
            nodes.push(Node {
                name: name.clone(),
                ns,
            });
        }
        if nodes.is_empty() {
            bail!("--nodes names no node");
        }
        Ok(Bench {
            c,
            dir,
            cgroup_mount: extnet::plan::layout::detect_cgroup2_mount(),
            nodes,
        })
    }

    /// The node this process runs in.
    fn own(&self) -> &Node {
        &self.nodes[0]
    }

    fn policy_path(&self, p: Pol) -> PathBuf {
        self.dir.join(format!("{}.toml", p.name()))
    }

    /// `<cgroup2>/extnet/bench-<what>-<node>` (`node` may be the template `%n`)
    fn cgroup(&self, what: &str, node: &str) -> PathBuf {
        self.cgroup_mount
            .join("extnet")
            .join(format!("bench-{what}-{node}"))
    }

    fn write_policy(&self, p: Pol) -> Result<PathBuf> {
        let (range, block, quarantine) = match p {
            // 1562 blocks of 32 ports: room for 1000 running jobs and the quarantined rest
            Pol::Jobs => ("10000-59999", 32, 120),
            Pol::Dataplane => ("40000-40255", 256, 0),
        };
        let d = self.dir.display();
        let cg = self.cgroup(p.name(), "%n");
        let text = format!(
            r#"# extnet-bench: policy "{name}" (written by extnet-bench)
version = 1

[node]
mode = "cgroup"
interface = "eth0"
gateway = "{GATEWAY}"
internal = ["10.99.0.0/24"]
state_dir = "{d}/state-{name}/%n"
cgroup_root = "{cg}"

[ports]
range = "{range}"
block_size = {block}
quarantine_secs = {quarantine}

[log]
lease_log = "{d}/log/lease-{name}-%n.log"
file = "{d}/log/extnet-{name}-%n.log"

[[profile]]
name = "default"
users = ["*"]

[[profile]]
name = "isolated"
users = ["*"]
mode = "netns"
"#,
            name = p.name(),
            cg = cg.display(),
        );
        std::fs::create_dir_all(&self.dir)?;
        let path = self.policy_path(p);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    fn layout(
        &self,
        p: Pol,
        n: &Node,
    ) -> Result<(extnet_policy::Policy, extnet::plan::layout::Layout)> {
        let policy = extnet_policy::Policy::load(&self.policy_path(p))?;
        let layout = extnet::plan::layout::Layout::new(&policy, &n.name);
        Ok((policy, layout))
    }

    /// The prolog or epilog for `job`, with the environment slurmd gives it.
    fn hook(&self, prog: &str, p: Pol, job: u32, request: Option<&str>, n: &Node) -> Command {
        let mut cmd = Command::new(self.c.bin_dir.join(prog));
        cmd.arg("--policy")
            .arg(self.policy_path(p))
            .env_clear()
            .env("SLURMD_NODENAME", &n.name)
            .env("SLURM_CLUSTER_NAME", "xn")
            .env("SLURM_JOB_ID", job.to_string())
            .env("SLURM_JOBID", job.to_string())
            .env("SLURM_JOB_UID", "4321")
            .env("SLURM_JOB_GID", "4321")
            .env("SLURM_JOB_USER", "xbench")
            .env("SLURM_JOB_PARTITION", "debug")
            .env(
                "SLURM_SCRIPT_CONTEXT",
                if prog.contains("prolog") {
                    "prolog_slurmd"
                } else {
                    "epilog_slurmd"
                },
            )
            .current_dir("/");
        if let Some(r) = request {
            cmd.env(extnet::job::env::REQUEST_VAR, r);
        }
        cmd
    }

    fn prolog(&self, p: Pol, job: u32, request: Option<&str>, n: &Node) -> Result<Sample> {
        measure(
            &mut self.hook("extnet-prolog", p, job, request, n),
            &self.dir.join("stderr"),
            n,
        )
        .with_context(|| format!("prolog of job {job} on {}", n.name))
    }

    fn epilog(&self, p: Pol, job: u32, n: &Node) -> Result<Sample> {
        measure(
            &mut self.hook("extnet-epilog", p, job, None, n),
            &self.dir.join("stderr"),
            n,
        )
        .with_context(|| format!("epilog of job {job} on {}", n.name))
    }

    /// The job's grant, from its state file; an error when it was not granted.
    fn grant(&self, p: Pol, job: u32, n: &Node) -> Result<extnet::store::state::Grant> {
        let (_, layout) = self.layout(p, n)?;
        let s = extnet::store::state::JobState::load(&layout.job_state(job), job)?
            .with_context(|| format!("job {job} has no state file"))?;
        match s.outcome {
            extnet::store::state::Outcome::Granted(g) => Ok(g),
            extnet::store::state::Outcome::Denied { reason } => bail!("job {job} denied: {reason}"),
        }
    }

    fn site(&self, op: &str, mode: &str, job: u32, index: usize, n: &Node) -> Result<Sample> {
        let cg = self.cgroup("sh", &n.name);
        let rel = cg
            .strip_prefix("/sys/fs/cgroup")
            .context("cgroup2 is not below /sys/fs/cgroup")?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg(self.dir.join("site.sh"))
            .args([op, mode, &job.to_string(), &index.to_string()])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CG", &cg)
            .env("CGREL", rel)
            .env("MARK", format!("0x{:x}", 0x10000 | (index as u32 & 0xffff)));
        measure(&mut cmd, &self.dir.join("stderr"), n)
            .with_context(|| format!("site script {op} {mode} for job {job} on {}", n.name))
    }

    /// `extnet --policy P ARGS --node N` in node `n`.
    fn extnet(&self, p: Pol, args: &[&str], n: &Node) -> Result<String> {
        let mut cmd = Command::new(self.c.bin_dir.join("extnet"));
        cmd.arg("--policy")
            .arg(self.policy_path(p))
            .args(args)
            .arg("--node")
            .arg(&n.name);
        command_in(&mut cmd, &n.ns);
        let out = cmd.output().context("run extnet")?;
        if !out.status.success() {
            bail!(
                "extnet {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run(&self, o: &RunOpts) -> Result<()> {
        check_in_node()?;
        std::fs::create_dir_all(self.dir.join("log"))?;
        let mut report = Report::new(o);
        if o.jobs {
            self.per_job(o, &mut report)?;
        }
        if o.dataplane {
            self.data_path(o, &mut report)?;
        }
        let text = report.render();
        print!("{text}");
        if let Some(out) = &o.out {
            if let Some(d) = out.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(out, &text).with_context(|| format!("write {}", out.display()))?;
        }
        Ok(())
    }

    fn per_job(&self, o: &RunOpts, report: &mut Report) -> Result<()> {
        self.write_policy(Pol::Jobs)?;
        let (policy, _) = self.layout(Pol::Jobs, self.own())?;
        let slots = policy.slots() as usize;
        let mut levels = o.levels.clone();
        levels.sort_unstable();
        levels.dedup();
        let Some(&top) = levels.last() else {
            bail!("--levels names no level");
        };
        if top + 2 * o.runs * levels.len() > slots {
            bail!(
                "the bench policy has {slots} slots: too few for {top} jobs and {} rounds",
                o.runs
            );
        }
        std::fs::write(self.dir.join("site.sh"), SITE_SCRIPT)?;
        for n in &self.nodes {
            // the site script's own table and cgroup directory
            std::fs::create_dir_all(self.cgroup("sh", &n.name))?;
            extnet::kernel::netns::run_in(n.ns.as_fd(), || {
                extnet::kernel::nftables::apply(
                    "add table ip extnet_sh\nadd map ip extnet_sh cg { type cgroupsv2 : mark; }\n",
                )
            })??;
            // the first external job on a fresh node loads the base
            let first = self.prolog(Pol::Jobs, MEASURED_BASE, Some("default"), n)?;
            self.grant(Pol::Jobs, MEASURED_BASE, n)?;
            self.epilog(Pol::Jobs, MEASURED_BASE, n)?;
            eprintln!(
                "extnet-bench: {}: base loaded in {:.1} ms",
                n.name,
                ms(first.wall)
            );
            if n.name == self.own().name {
                report.notes.push(format!(
                    "The first external job on a fresh node loads the base (the nft table with {slots} slots): prolog {:.1} ms (once per node and policy change).",
                    ms(first.wall)
                ));
            }
        }
        // the highest level on the first node; each lower level on the second node, round by
        // round beside the highest one (one node alone: one level after the other)
        let (high, low) = match self.nodes.get(1) {
            Some(second) if levels.len() > 1 => (Some(self.own()), second),
            _ => (None, self.own()),
        };
        let lower: Vec<usize> = if high.is_some() {
            levels[..levels.len() - 1].to_vec()
        } else {
            levels.clone()
        };
        report.placement = match high {
            Some(h) => format!(
                "{} on node {}, the others on node {}, alternating round by round with it",
                top, h.name, low.name
            ),
            None => format!("all on node {}, one level after the other", low.name),
        };
        let mut background: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut next_id = MEASURED_BASE + 10;
        if let Some(h) = high {
            self.fill(h, top, &mut background)?;
        }
        for &level in &lower {
            self.fill(low, level, &mut background)?;
            for _ in 0..o.runs {
                self.round(low, level, &mut next_id, report)?;
                if let Some(h) = high {
                    self.round(h, top, &mut next_id, report)?;
                }
            }
            eprintln!("extnet-bench: {level} active jobs: {} rounds done", o.runs);
        }
        for n in &self.nodes {
            let jobs = background.remove(&n.name).unwrap_or_default();
            let t = Instant::now();
            for &job in &jobs {
                self.epilog(Pol::Jobs, job, n)?;
            }
            eprintln!(
                "extnet-bench: {}: {} background jobs ended in {:.1} s",
                n.name,
                jobs.len(),
                t.elapsed().as_secs_f64()
            );
            let (_, layout) = self.layout(Pol::Jobs, n)?;
            let t = extnet::store::lease::LeaseTable::load(&layout.lease_table(), &n.name)?;
            if !t.leases.is_empty() {
                bail!("{}: leases left after every epilog: {:?}", n.name, t.leases);
            }
            let states = std::fs::read_dir(&layout.jobs_dir)
                .map(|d| d.count())
                .unwrap_or(0);
            if states != 0 {
                bail!(
                    "{states} job state files left in {}",
                    layout.jobs_dir.display()
                );
            }
            self.extnet(Pol::Jobs, &["node", "teardown"], n)?;
        }
        report.pool = slots;
        self.read_steps(report)?;
        Ok(())
    }

    /// Runs the prolog for more jobs on `n` until `level` would be active with one more (half
    /// cgroup, half netns).
    fn fill(&self, n: &Node, level: usize, bg: &mut BTreeMap<String, Vec<u32>>) -> Result<()> {
        let node_index = self
            .nodes
            .iter()
            .position(|m| m.name == n.name)
            .unwrap_or(0) as u32;
        let jobs = bg.entry(n.name.clone()).or_default();
        let t = Instant::now();
        while jobs.len() + 1 < level {
            let i = jobs.len() as u32;
            let job = BACKGROUND_BASE + node_index * 1_000_000 + i;
            let req = if i % 2 == 0 { "default" } else { "isolated" };
            self.prolog(Pol::Jobs, job, Some(req), n)?;
            self.grant(Pol::Jobs, job, n)?;
            jobs.push(job);
        }
        let (_, layout) = self.layout(Pol::Jobs, n)?;
        let leases = extnet::store::lease::LeaseTable::load(&layout.lease_table(), &n.name)?
            .leases
            .len();
        if leases != jobs.len() {
            bail!(
                "{}: the lease table holds {leases} leases, expected {}",
                n.name,
                jobs.len()
            );
        }
        eprintln!(
            "extnet-bench: {}: {level} active jobs ({} in the background), filled in {:.1} s",
            n.name,
            jobs.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Every row once on node `n`, recorded at `level`.
    fn round(&self, n: &Node, level: usize, next_id: &mut u32, report: &mut Report) -> Result<()> {
        let id = *next_id;
        *next_id += 10;
        // the site script's /30 in 100.127.0.0/16, per round
        let index = ((id - MEASURED_BASE) / 10) as usize % 16_000;
        let (_, layout) = self.layout(Pol::Jobs, n)?;
        let err = self.dir.join("stderr");
        for row in Row::ALL {
            let sample = match row {
                Row::True => measure(&mut Command::new("/bin/true"), &err, n)?,
                Row::PrologNone => {
                    let s = self.prolog(Pol::Jobs, id + 1, None, n)?;
                    if layout.job_state(id + 1).exists() {
                        bail!("a job that did not ask got a state file");
                    }
                    s
                }
                Row::EpilogNone => self.epilog(Pol::Jobs, id + 1, n)?,
                Row::PrologCgroup => {
                    let s = self.prolog(Pol::Jobs, id + 2, Some("default"), n)?;
                    self.grant(Pol::Jobs, id + 2, n)?;
                    s
                }
                Row::EpilogCgroup => self.epilog(Pol::Jobs, id + 2, n)?,
                Row::PrologNetns => {
                    let s = self.prolog(Pol::Jobs, id + 3, Some("isolated"), n)?;
                    self.grant(Pol::Jobs, id + 3, n)?;
                    s
                }
                Row::EpilogNetns => self.epilog(Pol::Jobs, id + 3, n)?,
                Row::ShSetupCgroup => self.site("setup", "cgroup", id + 4, index, n)?,
                Row::ShTeardownCgroup => self.site("teardown", "cgroup", id + 4, index, n)?,
                Row::ShSetupNetns => self.site("setup", "netns", id + 5, index, n)?,
                Row::ShTeardownNetns => self.site("teardown", "netns", id + 5, index, n)?,
            };
            report.jobs.entry((row, level)).or_default().push(sample);
            let job = match row {
                Row::PrologCgroup | Row::EpilogCgroup => id + 2,
                Row::PrologNetns | Row::EpilogNetns => id + 3,
                _ => continue,
            };
            report.measured.push((row, level, n.name.clone(), job));
        }
        Ok(())
    }

    /// The `steps` of the measured external jobs' result lines in each node's log.
    fn read_steps(&self, report: &mut Report) -> Result<()> {
        let mut lines: BTreeMap<(bool, String, u32), StepTimes> = BTreeMap::new();
        for n in &self.nodes {
            let path = self
                .dir
                .join(format!("log/extnet-{}-{}.log", Pol::Jobs.name(), n.name));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            for line in text.lines() {
                let epilog = line.contains("extnet-epilog: ");
                if !epilog && !line.contains("extnet-prolog: ") {
                    continue;
                }
                let field = |key: &str| -> Option<&str> {
                    let at = line.find(key)? + key.len();
                    let rest = &line[at..];
                    Some(&rest[..rest.find([' ', '"']).unwrap_or(rest.len())])
                };
                // `steps=decide:681 lock:13 ...`, the line's last field (quoted by some
                // formatters)
                let (Some(job), Some(at)) = (
                    field("job_id=").and_then(|j| j.parse::<u32>().ok()),
                    line.rfind("steps="),
                ) else {
                    continue;
                };
                let steps = line[at + 6..].trim_matches('"');
                let parsed = steps
                    .split_whitespace()
                    .filter_map(|kv| {
                        let (k, v) = kv.rsplit_once(':')?;
                        Some((k.to_owned(), v.parse::<f64>().ok()?))
                    })
                    .collect();
                lines.insert((epilog, n.name.clone(), job), parsed);
            }
        }
        for (row, level, node, job) in &report.measured {
            let epilog = matches!(row, Row::EpilogCgroup | Row::EpilogNetns);
            if let Some(st) = lines.get(&(epilog, node.clone(), *job)) {
                report
                    .steps
                    .entry((*row, *level))
                    .or_default()
                    .push(st.clone());
            }
        }
        Ok(())
    }

    fn data_path(&self, o: &RunOpts, report: &mut Report) -> Result<()> {
        self.write_policy(Pol::Dataplane)?;
        let own = self.own();
        let (policy, _) = self.layout(Pol::Dataplane, own)?;
        let mark_flag = policy.node.fwmark;
        let fill = o.elements.saturating_sub(1);
        // filler cgroups for job_cgroup (nft names a cgroup by an existing directory)
        let fill_cg = self.cgroup("fill", &own.name);
        let t = Instant::now();
        for i in 0..fill {
            std::fs::create_dir_all(fill_cg.join(format!("f{i}")))?;
        }
        eprintln!(
            "extnet-bench: {fill} filler cgroups made in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let rel = fill_cg
            .strip_prefix("/sys/fs/cgroup")
            .context("cgroup2 is not below /sys/fs/cgroup")?
            .display()
            .to_string();
        for (mode, request, job) in [
            ("cgroup", "default", DATAPLANE_BASE + 1),
            ("netns", "isolated", DATAPLANE_BASE + 2),
        ] {
            self.prolog(Pol::Dataplane, job, Some(request), own)?;
            let g = self.grant(Pol::Dataplane, job, own)?;
            // every map the job's packets are looked up in, per packet
            let maps: Vec<(&str, Elem<'_>)> = match mode {
                "cgroup" => vec![
                    (
                        "job_cgroup",
                        Box::new(|i| format!("\"{rel}/f{i}\" : 0x{:x}", mark_flag | 0xffff)),
                    ),
                    (
                        "slot_profile",
                        Box::new(|i| format!("0x{:x} : accept", mark_flag | (i + 1))),
                    ),
                ],
                _ => vec![
                    (
                        "slot_netns",
                        Box::new(|i| {
                            let a = std::net::Ipv4Addr::from(
                                u32::from(std::net::Ipv4Addr::new(100, 96, 0, 0)) + i,
                            );
                            format!("{a} : 0x{:x}", mark_flag | 0xffff)
                        }),
                    ),
                    (
                        "slot_profile",
                        Box::new(|i| format!("0x{:x} : accept", mark_flag | (i + 1))),
                    ),
                ],
            };
            let mut present = Vec::new();
            for (map, _) in &maps {
                if map_exists(map)? {
                    present.push(*map);
                }
            }
            let adds: String = maps
                .iter()
                .filter(|(m, _)| present.contains(m))
                .map(|(m, f)| {
                    let elems: Vec<String> = (0..fill).map(f).collect();
                    format!("add element inet extnet {m} {{ {} }}\n", elems.join(", "))
                })
                .collect();
            let dels: String = maps
                .iter()
                .filter(|(m, _)| present.contains(m))
                .map(|(m, f)| {
                    let keys: Vec<String> = (0..fill)
                        .map(|i| f(i).split(" : ").next().unwrap().to_owned())
                        .collect();
                    format!("delete element inet extnet {m} {{ {} }}\n", keys.join(", "))
                })
                .collect();
            report
                .maps
                .insert(mode, present.iter().map(|m| m.to_string()).collect());
            let via = match mode {
                "cgroup" => Via::Cgroup(g.cgroup.clone().context("cgroup grant without cgroup")?),
                _ => Via::Netns(g.netns.clone().context("netns grant without namespace")?),
            };
            for rep in 0..o.iperf_reps {
                // the three paths in a rotating order, so that drift of the machine's load
                // does not favour one of them
                let (mut base, mut one, mut loaded, mut load) = (0.0, 0.0, 0.0, Duration::ZERO);
                for k in 0..3 {
                    match (rep + k) % 3 {
                        0 => {
                            let _route = TempRoute::add()?;
                            base = iperf(o.iperf_secs, &Via::Node)?;
                        }
                        1 => one = iperf(o.iperf_secs, &via)?,
                        _ => {
                            let t = Instant::now();
                            extnet::kernel::nftables::apply(&adds)
                                .context("load the filler elements")?;
                            load = t.elapsed();
                            let r = iperf(o.iperf_secs, &via);
                            extnet::kernel::nftables::apply(&dels)
                                .context("delete the filler elements")?;
                            loaded = r?;
                        }
                    }
                }
                eprintln!(
                    "extnet-bench: {mode} round {}: unmarked {:.2}, job {:.2}, job with {} elements {:.2} Gbit/s (filler loaded in {:.0} ms)",
                    rep + 1,
                    base / 1e9,
                    one / 1e9,
                    o.elements,
                    loaded / 1e9,
                    ms(load)
                );
                let e = report.tput.entry(mode).or_default();
                e.unmarked.push(base);
                e.job.push(one);
                e.loaded.push(loaded);
            }
            self.epilog(Pol::Dataplane, job, own)?;
        }
        self.extnet(Pol::Dataplane, &["node", "teardown"], own)?;
        Ok(())
    }

    /// Removes everything of the benchmark; returns what could not be removed.
    fn cleanup(&self) -> Vec<String> {
        let mut left = Vec::new();
        TempRoute::remove();
        for n in &self.nodes {
            for p in [Pol::Jobs, Pol::Dataplane] {
                if !self.policy_path(p).exists() {
                    continue;
                }
                match self.layout(p, n) {
                    Ok((_, layout)) => {
                        let mut jobs: Vec<u32> =
                            extnet::store::lease::LeaseTable::load(&layout.lease_table(), &n.name)
                                .map(|t| t.leases.iter().map(|l| l.job_id).collect())
                                .unwrap_or_default();
                        for e in std::fs::read_dir(&layout.jobs_dir)
                            .into_iter()
                            .flatten()
                            .flatten()
                        {
                            if let Some(j) = e
                                .file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".json"))
                                .and_then(|n| n.parse().ok())
                            {
                                jobs.push(j);
                            }
                        }
                        jobs.sort_unstable();
                        jobs.dedup();
                        for j in jobs {
                            if let Err(e) = self.epilog(p, j, n) {
                                left.push(format!("{e:#}"));
                            }
                        }
                    }
                    Err(e) => left.push(format!("{e:#}")),
                }
                if let Err(e) = self.extnet(p, &["node", "teardown"], n) {
                    left.push(format!("{e:#}"));
                }
            }
            let _ = extnet::kernel::netns::run_in(n.ns.as_fd(), || {
                extnet::kernel::nftables::delete_table("extnet_sh")
            });
            for what in ["sh", "fill", "jobs", "dataplane"] {
                let dir = self.cgroup(what, &n.name);
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => left.push(format!("cgroup {}: {e}", dir.display())),
                }
            }
        }
        let netns_dir = Path::new("/run/netns");
        for e in std::fs::read_dir(netns_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("extnet-shb-") {
                if let Err(e) = extnet::kernel::netns::delete(netns_dir, &name) {
                    left.push(e.to_string());
                }
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                left.push(format!("{}: {e}", self.dir.display()));
            }
        }
        left
    }
}

/// The benchmark must run inside the node's network namespace: it has the cluster address.
fn check_in_node() -> Result<()> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "eth0"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains(" 10.99.0.") {
        bail!("not inside a node of the test cluster (no 10.99.0.x on eth0): run slurm-test-env/bench");
    }
    Ok(())
}

fn map_exists(map: &str) -> Result<bool> {
    // a netlink get of one map's header; never a listing of its elements
    Ok(
        extnet::kernel::nftables::netlink::NfSocket::open()?
            .set_exists(extnet::plan::TABLE, map)?,
    )
}

/// Runs `cmd` to its end through `extnet-bench-spawn` (beside this executable): wall time from
/// spawn to reaping, and `ru_maxrss` of exactly that process. Fails when it does not exit 0,
/// with its stderr.
fn measure(cmd: &mut Command, stderr: &Path, n: &Node) -> Result<Sample> {
    let spawner = std::env::current_exe()?
        .parent()
        .context("executable directory")?
        .join("extnet-bench-spawn");
    let mut l = Command::new(&spawner);
    l.arg(stderr)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            l.env(k, v);
        }
    }
    if let Some(d) = cmd.get_current_dir() {
        l.current_dir(d);
    }
    command_in(&mut l, &n.ns);
    let out = l
        .output()
        .with_context(|| format!("run {}", spawner.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if !out.status.success() || f.len() != 3 {
        bail!(
            "extnet-bench-spawn: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if f[2] != 0 {
        bail!(
            "{:?} failed (exit {}): {}",
            cmd.get_program(),
            f[2],
            std::fs::read_to_string(stderr).unwrap_or_default().trim()
        );
    }
    Ok(Sample {
        wall: Duration::from_nanos(f[0]),
        rss_kib: f[1],
    })
}

/// A /32 route to the outside host through the gateway in the node's main table: the unmarked
/// path, for the baseline. Removed when dropped (and by `cleanup`).
struct TempRoute;

impl TempRoute {
    fn add() -> Result<TempRoute> {
        let st = Command::new("ip")
            .args(["route", "add", &format!("{OUTSIDE}/32"), "via", GATEWAY])
            .status()?;
        if !st.success() {
            bail!("ip route add {OUTSIDE}/32 via {GATEWAY} failed");
        }
        Ok(TempRoute)
    }

    fn remove() {
        let _ = Command::new("ip")
            .args(["route", "del", &format!("{OUTSIDE}/32"), "via", GATEWAY])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TempRoute {
    fn drop(&mut self) {
        TempRoute::remove();
    }
}

/// Where an iperf3 client runs.
enum Via {
    /// The node itself, unmarked.
    Node,
    /// A process in the job's cgroup (cgroup mode).
    Cgroup(PathBuf),
    /// A process in the job's namespace (netns mode).
    Netns(PathBuf),
}

/// One iperf3 TCP run to the outside host; bits per second received.
fn iperf(secs: u32, via: &Via) -> Result<f64> {
    for attempt in 0..3 {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-c", OUTSIDE, "-p", IPERF_PORT, "-J", "-O", "1", "-t"])
            .arg(secs.to_string())
            .stdin(Stdio::null());
        // client on CPU 0 (where its packets are also forwarded: a veth hands a packet to its
        // peer on the sending CPU), server on CPU 1: the scheduler moving either of them
        // between the two CPUs was the largest part of the run-to-run spread
        if two_cpus() {
            cmd.args(["-A", "0,1"]);
        }
        let _keep;
        match via {
            Via::Node => {}
            Via::Cgroup(dir) => {
                let procs = CString::new(
                    dir.join("cgroup.procs")
                        .into_os_string()
                        .into_encoded_bytes(),
                )?;
                // SAFETY: between fork and exec only open(2), write(2) and close(2) on
                // memory prepared before the fork: async-signal-safe.
                unsafe {
                    cmd.pre_exec(move || {
                        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                        if n != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            Via::Netns(path) => {
                let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
                command_in(&mut cmd, &f);
                // open until the command has run
                _keep = f;
            }
        }
        let out = cmd.output().context("run iperf3")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            if e.contains("busy") && attempt < 2 {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            bail!("iperf3: {e}");
        }
        return v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3 output has no end.sum_received.bits_per_second");
    }
    unreachable!("the loop returns or fails on its last attempt")
}

/// True when CPUs 0 and 1 exist for pinning iperf3's client and server apart.
fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians, ratios and targets.
/// One run's `steps`: (step, µs) in the order the run took them.
type StepTimes = Vec<(String, f64)>;

struct Report {
    runs: usize,
    levels: Vec<usize>,
    iperf_secs: u32,
    iperf_reps: usize,
    elements: u32,
    command: String,
    pool: usize,
    /// Which node measured which level.
    placement: String,
    jobs: BTreeMap<(Row, usize), Vec<Sample>>,
    /// The measured external jobs: row, level, node, job id (their step times are read back
    /// from the log).
    measured: Vec<(Row, usize, String, u32)>,
    /// (row, level) → the `steps` of each measured run: step name → µs
    steps: BTreeMap<(Row, usize), Vec<StepTimes>>,
    /// mode → (unmarked, job, job with the maps loaded), bits per second
    tput: BTreeMap<&'static str, Tput>,
    maps: BTreeMap<&'static str, Vec<String>>,
    notes: Vec<String>,
}

impl Report {
    fn new(o: &RunOpts) -> Report {
        let mut levels = o.levels.clone();
        levels.sort_unstable();
        Report {
            runs: o.runs,
            measured: Vec::new(),
            steps: BTreeMap::new(),
            levels,
            iperf_secs: o.iperf_secs,
            iperf_reps: o.iperf_reps,
            elements: o.elements,
            command: o.command.clone(),
            pool: 0,
            placement: String::new(),
            jobs: BTreeMap::new(),
            tput: BTreeMap::new(),
            maps: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn med(&self, row: Row, level: usize) -> f64 {
        self.jobs
            .get(&(row, level))
            .map(|v| median(&v.iter().map(|s| ms(s.wall)).collect::<Vec<_>>()))
            .unwrap_or(f64::NAN)
    }

    fn rss(&self, row: Row) -> u64 {
        self.jobs
            .iter()
            .filter(|((r, _), _)| *r == row)
            .flat_map(|(_, v)| v.iter().map(|s| s.rss_kib))
            .max()
            .unwrap_or(0)
    }

    /// Where an external job's prolog and epilog spend their time at the lowest and the
    /// highest level: the median of each step (the log's `steps`), in ms.
    fn render_steps(&self, s: &mut String) {
        let (Some(&lo), Some(&hi)) = (self.levels.first(), self.levels.last()) else {
            return;
        };
        let levels: Vec<usize> = if lo == hi { vec![lo] } else { vec![lo, hi] };
        for (what, rows) in [
            ("prolog", [Row::PrologCgroup, Row::PrologNetns]),
            ("epilog", [Row::EpilogCgroup, Row::EpilogNetns]),
        ] {
            let mut cols = Vec::new();
            let mut names: Vec<String> = Vec::new();
            for row in rows {
                for &l in &levels {
                    let runs = self.steps.get(&(row, l)).cloned().unwrap_or_default();
                    for run in &runs {
                        for (k, _) in run {
                            if !names.contains(k) {
                                names.push(k.clone());
                            }
                        }
                    }
                    cols.push((row, l, runs));
                }
            }
            if names.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "\n**Where an external {what}'s time goes**: median of each step in ms, from the `steps` of its result line in the log (the wall time above also counts starting the process and reading the policy).\n"
            );
            let _ = write!(s, "| step |");
            for (row, l, _) in &cols {
                let mode = if matches!(row, Row::PrologCgroup | Row::EpilogCgroup) {
                    "cgroup"
                } else {
                    "netns"
                };
                let _ = write!(s, " {mode}, {l} job{} |", if *l == 1 { "" } else { "s" });
            }
            let _ = writeln!(s, "\n|---|{}", "---:|".repeat(cols.len()));
            for name in &names {
                let _ = write!(s, "| {name} |");
                for (_, _, runs) in &cols {
                    let v: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.iter().find(|(k, _)| k == name).map(|(_, v)| *v / 1e3))
                        .collect();
                    if v.is_empty() {
                        let _ = write!(s, " |");
                    } else {
                        let _ = write!(s, " {:.3} |", median(&v));
                    }
                }
                let _ = writeln!(s);
            }
        }
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let _ = writeln!(s, "Command: `{}`  ", self.command);
        let _ = writeln!(
            s,
            "Machine: {} CPUs ({cpu}), kernel {}, host {}; {} UTC; load average at the end {} (1, 5, 15 min)  ",
            cpus,
            kernel.trim(),
            host.trim(),
            utc_now(),
            load.join(" ")
        );
        let mut targets: Vec<(String, String, bool)> = Vec::new();
        if !self.jobs.is_empty() {
            let _ = writeln!(
                s,
                "\n**Per-job cost** on the test cluster's nodes: wall time in ms, median of {} rounds (or more); each round runs every row once, side by side. Columns: active external jobs on the node (half cgroup, half netns; bench pool of {} slots); levels {}.\n",
                self.runs, self.pool, self.placement
            );
            let _ = write!(s, "| what |");
            for l in &self.levels {
                let _ = write!(s, " {l} job{} |", if *l == 1 { "" } else { "s" });
            }
            let _ = writeln!(s, " peak RSS |");
            let _ = write!(s, "|---|");
            for _ in &self.levels {
                let _ = write!(s, "---:|");
            }
            let _ = writeln!(s, "---:|");
            for row in Row::ALL {
                let _ = write!(s, "| {} |", row.label());
                for &l in &self.levels {
                    let _ = write!(s, " {:.2} |", self.med(row, l));
                }
                let _ = writeln!(s, " {:.1} MiB |", self.rss(row) as f64 / 1024.0);
            }
            self.render_steps(&mut s);
            let per_level = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
                self.levels.iter().map(|&l| f(l)).collect()
            };
            let fmt = |v: &[f64]| {
                v.iter()
                    .map(|x| format!("{x:.2}×"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let lv = self
                .levels
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" / ");
            for (row, what) in [(Row::PrologNone, "prolog"), (Row::EpilogNone, "epilog")] {
                let v = per_level(&|l| self.med(row, l) / self.med(Row::True, l));
                targets.push((
                    format!("job that did not ask, {what}: ≤ 2× `/bin/true`"),
                    format!("{} (at {lv} jobs)", fmt(&v)),
                    v.iter().all(|&x| x <= 2.0),
                ));
            }
            for (ext, sh, what) in [
                (Row::PrologCgroup, Row::ShSetupCgroup, "setup, cgroup mode"),
                (
                    Row::EpilogCgroup,
                    Row::ShTeardownCgroup,
                    "teardown, cgroup mode",
                ),
                (Row::PrologNetns, Row::ShSetupNetns, "setup, netns mode"),
                (
                    Row::EpilogNetns,
                    Row::ShTeardownNetns,
                    "teardown, netns mode",
                ),
            ] {
                let v = per_level(&|l| self.med(sh, l) / self.med(ext, l));
                // a tenth of the script below the cost of starting any process cannot be met
                // by a program slurmd starts: say so next to the figure
                let floor = per_level(&|l| self.med(sh, l) / self.med(Row::True, l));
                let note = if floor.iter().any(|&x| x < 10.0) {
                    format!(
                        "; out of reach: the script costs only {} `/bin/true`",
                        fmt(&floor)
                    )
                } else {
                    String::new()
                };
                targets.push((
                    format!("external {what}: ≥ 10× faster than the site script"),
                    format!("{} faster (at {lv} jobs){note}", fmt(&v)),
                    v.iter().all(|&x| x >= 10.0),
                ));
            }
            if let (Some(&lo), Some(&hi)) = (self.levels.first(), self.levels.last()) {
                if lo != hi {
                    for row in Row::ALL.into_iter().filter(|r| r.is_extnet()) {
                        let r = self.med(row, hi) / self.med(row, lo);
                        targets.push((
                            format!("{}: cost at {hi} jobs ≤ 1.2× cost at {lo}", row.label()),
                            format!("{r:.2}×"),
                            r <= 1.2,
                        ));
                    }
                }
            }
            let peak = Row::ALL
                .into_iter()
                .filter(|r| r.is_extnet())
                .map(|r| self.rss(r))
                .max()
                .unwrap_or(0);
            targets.push((
                "prolog and epilog peak memory < 8 MiB".into(),
                format!(
                    "{:.1} MiB (largest peak RSS of all runs)",
                    peak as f64 / 1024.0
                ),
                peak < 8 * 1024,
            ));
        }
        if !self.tput.is_empty() {
            let _ = writeln!(
                s,
                "\n**Data path**: iperf3 TCP from node n1 through gateway gw1 to the outside host, {} s per run (first second omitted), median of {} runs in Gbit/s; within a mode the three paths take turns, in a rotating order{}. A target's ratio is the median of the rounds' ratios (the two figures of a round measured one after the other), with the lowest and highest round.\n",
                self.iperf_secs,
                self.iperf_reps,
                if two_cpus() {
                    "; client pinned to CPU 0, server to CPU 1 (`iperf3 -A 0,1`)"
                } else {
                    ""
                }
            );
            let _ = writeln!(s, "| path | cgroup mode | netns mode |\n|---|---:|---:|");
            let get = |mode: &str, i: usize| -> f64 {
                self.tput
                    .get(mode)
                    .map(|t| {
                        median(match i {
                            0 => &t.unmarked,
                            1 => &t.job,
                            _ => &t.loaded,
                        })
                    })
                    .unwrap_or(f64::NAN)
            };
            let maps = |mode: &str| {
                self.maps
                    .get(mode)
                    .map(|m| m.join(", "))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                s,
                "| unmarked: the node's own path to the gateway (temporary /32 route) | {:.2} | {:.2} |",
                get("cgroup", 0) / 1e9,
                get("netns", 0) / 1e9
            );
            let _ = writeln!(
                s,
                "| the job's path, 1 element per map | {:.2} | {:.2} |",
                get("cgroup", 1) / 1e9,
                get("netns", 1) / 1e9
            );
            let _ = writeln!(
                s,
                "| the job's path, {} elements per map (cgroup: {}; netns: {}) | {:.2} | {:.2} |",
                self.elements,
                maps("cgroup"),
                maps("netns"),
                get("cgroup", 2) / 1e9,
                get("netns", 2) / 1e9
            );
            // each round's two figures were measured one right after the other: their ratio,
            // median over the rounds, follows the machine's drift less than a ratio of medians
            let paired = |mode: &str, num: usize, den: usize| -> (f64, f64, f64) {
                let Some(t) = self.tput.get(mode) else {
                    return (f64::NAN, f64::NAN, f64::NAN);
                };
                let pick = |i: usize| match i {
                    0 => &t.unmarked,
                    1 => &t.job,
                    _ => &t.loaded,
                };
                let r: Vec<f64> = pick(num)
                    .iter()
                    .zip(pick(den))
                    .map(|(a, b)| a / b)
                    .collect();
                let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (median(&r), lo, hi)
            };
            for (mode, min) in [("cgroup", 0.97), ("netns", 0.9)] {
                let (r, lo, hi) = paired(mode, 1, 0);
                targets.push((
                    format!("{mode} mode throughput ≥ {min} of the unmarked path"),
                    format!("{r:.3} (rounds {lo:.3}-{hi:.3})"),
                    r >= min,
                ));
            }
            for mode in ["cgroup", "netns"] {
                let (r, lo, hi) = paired(mode, 2, 1);
                targets.push((
                    format!("{mode} mode, {} elements ≥ 0.98 of 1", self.elements),
                    format!("{r:.3} (rounds {lo:.3}-{hi:.3})"),
                    r >= 0.98,
                ));
            }
        }
        let _ = writeln!(s, "\n**Targets**\n\n| target | measured | |\n|---|---|---|");
        for (t, m, ok) in &targets {
            let _ = writeln!(
                s,
                "| {t} | {m} | {} |",
                if *ok { "PASS" } else { "**MISS**" }
            );
        }
        let misses = targets.iter().filter(|t| !t.2).count();
        let _ = writeln!(
            s,
            "\n{} of {} targets met{}.",
            targets.len() - misses,
            targets.len(),
            if misses > 0 {
                format!("; {misses} missed")
            } else {
                String::new()
            }
        );
        if !self.jobs.is_empty() {
            let _ = writeln!(
                s,
                "\nThe site script does less than extnet: no lease, no lease log, no accounting; its netns teardown is `ip netns pids` (to kill what still runs there) and `ip netns del` (the kernel reaps the veth pair). Peak RSS is `ru_maxrss` of the process, started from a small launcher whose own ~1.8 MiB is the floor any short-lived process shows (the `/bin/true` row)."
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }
}

/// `YYYY-MM-DD HH:MM` now, UTC.
fn utc_now() -> String {
    let t = extnet::store::lease::rfc3339(extnet::store::lease::now());
    t.get(..16).unwrap_or(&t).replace('T', " ")
}

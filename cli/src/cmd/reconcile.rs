//! `extnet reconcile`: tears down what jobs whose epilog never ran left on the node, and
//! closes in the lease log the leases a reboot ended ([`extnet::job::reconcile`]). Slurm is
//! asked here, at the edge, with `squeue`; the library gets a closure.

use anyhow::Context;
use extnet::job::reconcile::{self, Report};
use extnet::plan::layout::Layout;
use extnet::store::lease::{self, LogRecord};
use extnet_policy::Policy;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Where `squeue` is looked for: slurmd and systemd units run without a useful `PATH`.
pub const SQUEUE_DIRS: [&str; 4] = ["/usr/bin", "/usr/local/bin", "/opt/slurm/bin", "/usr/sbin"];

/// How long Slurm gets to answer before it counts as "cannot ask".
const SQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// `extnet reconcile` on `node`. Exits 1 when a teardown failed.
pub fn run(
    policy_path: &Path,
    node: &str,
    dry_run: bool,
    slurm_conf: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load_for_node(policy_path, node)?;
    let layout = Layout::new(&policy, node);
    let slurm = Slurm::new(node, slurm_conf);
    let report = reconcile::reconcile(&policy, &layout, &|job| slurm.running(job), dry_run)?;
    if let Some(e) = slurm.error() {
        eprintln!(
            "extnet: cannot ask Slurm which jobs run on {node} ({e}); those jobs are left alone"
        );
    }
    print_report(node, &report);
    let boot = extnet::kernel::boot::time()?;
    let closed = reconcile::close_unreleased(&layout, boot, lease::now(), dry_run)?;
    print_closed(node, &layout, &closed, dry_run);
    print_pinned(node, &reconcile::check_pinned(&layout, dry_run), dry_run);
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(node: &str, report: &Report) {
    if report.jobs.is_empty() {
        println!("node {node}: no job has anything on this node");
    }
    for j in &report.jobs {
        println!("node {node}: {j}");
    }
}

/// One line per pinned-namespace record [`reconcile::check_pinned`] looked at.
fn print_pinned(node: &str, checks: &[reconcile::PinCheck], dry_run: bool) {
    for c in checks {
        let p = &c.pinned;
        if c.gone {
            let verb = if dry_run { "would be" } else { "is" };
            println!(
                "node {node}: job {}: its pinned namespace net:[{}] is gone, the record {verb} removed",
                p.job_id, p.inode
            );
        } else {
            println!(
                "node {node}: job {}: its namespace net:[{}] is still pinned (only lo left) by {}",
                p.job_id,
                p.inode,
                p.holders_line()
            );
        }
    }
}

/// One line per `release` record [`reconcile::close_unreleased`] wrote (or would write).
pub fn print_closed(node: &str, layout: &Layout, closed: &[LogRecord], dry_run: bool) {
    let verb = if dry_run { "would get" } else { "got" };
    for r in closed {
        println!(
            "node {node}: job {}: lease-log allocate of ports {}-{} {verb} a release at {} (reason {})",
            r.job_id,
            r.port_first,
            r.port_last,
            r.time,
            r.reason.as_deref().unwrap_or("-")
        );
    }
    if closed.is_empty() {
        println!(
            "node {node}: every allocate in {} has its release or a lease",
            layout.lease_log.display()
        );
    }
}

/// Slurm, asked once (at the first question) which jobs run on a node.
pub struct Slurm {
    node: String,
    conf: Option<PathBuf>,
    asked: OnceCell<Result<HashSet<u32>, String>>,
}

impl Slurm {
    pub fn new(node: &str, conf: Option<PathBuf>) -> Slurm {
        Slurm {
            node: node.to_owned(),
            conf,
            asked: OnceCell::new(),
        }
    }

    /// Whether `job` runs on the node; `None` when Slurm could not be asked.
    pub fn running(&self, job: u32) -> Option<bool> {
        self.asked
            .get_or_init(|| {
                running_jobs(&self.node, self.conf.as_deref()).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .ok()
            .map(|jobs| jobs.contains(&job))
    }

    /// Why Slurm could not be asked, once it was.
    pub fn error(&self) -> Option<&str> {
        self.asked
            .get()
            .and_then(|r| r.as_ref().err())
            .map(String::as_str)
    }
}

/// `squeue` in the first of [`SQUEUE_DIRS`] that has it.
fn squeue() -> anyhow::Result<PathBuf> {
    SQUEUE_DIRS
        .iter()
        .map(|d| Path::new(d).join("squeue"))
        .find(|p| p.is_file())
        .with_context(|| format!("no squeue in {}", SQUEUE_DIRS.join(", ")))
}

/// The jobs Slurm says run on `node` (running, completing, configuring, suspended):
/// `squeue --noheader --nodelist=NODE --format=%A --states=...`, with `SLURM_CONF` set to
/// `slurm_conf` when given (else inherited). Fails on a non-zero exit, a line that is not a
/// job id, or no answer within a few seconds.
pub fn running_jobs(node: &str, slurm_conf: Option<&Path>) -> anyhow::Result<HashSet<u32>> {
    let mut cmd = Command::new(squeue()?);
    cmd.arg("--noheader")
        .arg(format!("--nodelist={node}"))
        .arg("--format=%A")
        .arg("--states=RUNNING,COMPLETING,CONFIGURING,SUSPENDED")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(conf) = slurm_conf {
        cmd.env("SLURM_CONF", conf);
    }
    let mut child = cmd.spawn().context("run squeue")?;
    // read in threads: a full pipe must not stop squeue while we wait for it to exit
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SQUEUE_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().context("wait for squeue")? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "squeue gave no answer within {} s",
                SQUEUE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out
        .join()
        .map_err(|_| anyhow::anyhow!("squeue reader panicked"))?
        .context("read squeue's output")?;
    let err = err.join().unwrap_or_default();
    if !status.success() {
        anyhow::bail!("squeue failed ({status}): {}", err.trim());
    }
    parse_job_ids(&out)
}

/// One job id a line (`%A`); blank lines are skipped, anything else is an error.
fn parse_job_ids(out: &str) -> anyhow::Result<HashSet<u32>> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .with_context(|| format!("squeue printed {l:?}, not a job id"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn squeue_output_is_job_ids_or_an_error() {
        let ids = super::parse_job_ids("12\n 13 \n\n").unwrap();
        assert_eq!(ids, [12, 13].into_iter().collect());
        assert!(super::parse_job_ids("12\nslurm_load_jobs error\n").is_err());
        assert!(super::parse_job_ids("").unwrap().is_empty());
    }
}

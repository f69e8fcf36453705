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

/// Slurm, asked which jobs run on a node: first the node's own slurmd (the step sockets in
/// its spool directory, read once), then, only for a job that has none, slurmctld (`squeue`,
/// asked once, at the first such question). So slurmctld hears from a node only when it has
/// leftovers that no local step accounts for, not once per node and period.
pub struct Slurm {
    node: String,
    conf: Option<PathBuf>,
    local: OnceCell<HashSet<u32>>,
    asked: OnceCell<Result<HashSet<u32>, String>>,
}

impl Slurm {
    pub fn new(node: &str, conf: Option<PathBuf>) -> Slurm {
        Slurm {
            node: node.to_owned(),
            conf,
            local: OnceCell::new(),
            asked: OnceCell::new(),
        }
    }

    /// Whether `job` runs on the node; `None` when Slurm could not be asked.
    pub fn running(&self, job: u32) -> Option<bool> {
        let local = self
            .local
            .get_or_init(|| local_steps(&self.node, self.conf.as_deref()));
        if local.contains(&job) {
            return Some(true);
        }
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

/// Where slurm.conf is when not given: `SLURM_CONF`, else Slurm's default.
const DEFAULT_SLURM_CONF: &str = "/etc/slurm/slurm.conf";

/// slurmd's spool directory when slurm.conf does not set `SlurmdSpoolDir`.
const DEFAULT_SPOOL_DIR: &str = "/var/spool/slurmd";

/// The jobs that have a live step on this node by slurmd's own account: a step socket
/// `<node>_<job>.<step>[.<het component>]` in its spool directory (as `stepd_available` in
/// Slurm's `src/common/stepd_api.c` lists them) that a slurmstepd listens on (in
/// `/proc/net/unix`, which lists the bound sockets of this network namespace: a socket file a
/// killed slurmstepd left behind is not there). Nothing found (no slurm.conf, no spool
/// directory, another namespace) means only that squeue is asked.
fn local_steps(node: &str, conf: Option<&Path>) -> HashSet<u32> {
    let conf = conf.map(Path::to_owned).unwrap_or_else(|| {
        std::env::var_os("SLURM_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SLURM_CONF))
    });
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let dir = spool_dir(&conf, node, &host);
    let listening = std::fs::read_to_string("/proc/net/unix")
        .map(|t| listening_socket_names(&t))
        .unwrap_or_default();
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let job = step_socket_job(&name, node)?;
            listening.contains(&name).then_some(job)
        })
        .collect()
}

/// `SlurmdSpoolDir` of slurm.conf `conf` and the files it includes (`Include`), with `%n`
/// (node name) and `%h` (host name) expanded; Slurm's default when not set or not readable.
fn spool_dir(conf: &Path, node: &str, host: &str) -> PathBuf {
    fn find(conf: &Path, depth: u32) -> Option<String> {
        let text = std::fs::read_to_string(conf).ok()?;
        let (value, includes) = spool_dir_setting(&text);
        if value.is_some() || depth == 0 {
            return value;
        }
        includes.iter().find_map(|i| find(Path::new(i), depth - 1))
    }
    let raw = find(conf, 2).unwrap_or_else(|| DEFAULT_SPOOL_DIR.to_owned());
    PathBuf::from(raw.replace("%n", node).replace("%h", host))
}

/// From slurm.conf's text: the value of `SlurmdSpoolDir` (keys are case-insensitive; the last
/// one counts, as in Slurm; quotes and `#` comments stripped), and the files `Include` names.
fn spool_dir_setting(text: &str) -> (Option<String>, Vec<String>) {
    let mut value = None;
    let mut includes = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some((k, rest)) = line.split_once(char::is_whitespace) {
            if k.eq_ignore_ascii_case("include") {
                includes.push(rest.trim().trim_matches('"').to_owned());
                continue;
            }
        }
        for token in line.split_whitespace() {
            if let Some((k, v)) = token.split_once('=') {
                if k.eq_ignore_ascii_case("SlurmdSpoolDir") {
                    value = Some(v.trim_matches('"').to_owned());
                }
            }
        }
    }
    (value, includes)
}

/// The job of a step socket's file name `<node>_<job>.<step>` or `<node>_<job>.<step>.<het>`
/// (digits only), for node `node`; `None` for any other name (another node's socket, the
/// spool's other files).
fn step_socket_job(name: &str, node: &str) -> Option<u32> {
    let rest = name.strip_prefix(node)?.strip_prefix('_')?;
    let mut parts = rest.split('.');
    let job = parts.next()?;
    let step = parts.next()?;
    let het = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !digits(job) || !digits(step) || het.is_some_and(|h| !digits(h)) {
        return None;
    }
    job.parse().ok()
}

/// The file names of the listening Unix sockets in `/proc/net/unix`'s text
/// (`Num RefCount Protocol Flags Type St Inode Path`; flag `__SO_ACCEPTCON` 0x10000).
fn listening_socket_names(text: &str) -> HashSet<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let path = f.get(7)?;
            (flags & 0x10000 != 0)
                .then(|| Path::new(path).file_name())
                .flatten()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .collect()
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
    use super::*;

    #[test]
    fn step_sockets_name_this_nodes_jobs() {
        assert_eq!(step_socket_job("n1_42.0", "n1"), Some(42));
        assert_eq!(step_socket_job("n1_42.4294967292", "n1"), Some(42));
        assert_eq!(step_socket_job("n1_42.0.1", "n1"), Some(42));
        for other in [
            "n10_42.0",
            "n2_42.0",
            "n1_42",
            "n1_.0",
            "n1_42.",
            "n1_4x.0",
            "n1_42.0.1.2",
            "n1_42.0.x",
            "cred_state",
            "n1_42.0.",
        ] {
            assert_eq!(step_socket_job(other, "n1"), None, "{other}");
        }
    }

    #[test]
    fn spool_dir_from_slurm_conf_and_its_includes() {
        let (v, inc) = spool_dir_setting(
            "# SlurmdSpoolDir=/commented\nClusterName=xn\nslurmdspooldir=/a/%n # x\nInclude /etc/slurm/more.conf\nSlurmdSpoolDir=\"/b/%n\"\n",
        );
        assert_eq!(v.as_deref(), Some("/b/%n"), "the last setting counts");
        assert_eq!(inc, ["/etc/slurm/more.conf"]);
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("slurm.conf");
        let more = d.path().join("more.conf");
        std::fs::write(&more, "SlurmdSpoolDir=/spool/%h/%n\n").unwrap();
        std::fs::write(
            &main,
            format!("ClusterName=x\nInclude {}\n", more.display()),
        )
        .unwrap();
        assert_eq!(spool_dir(&main, "n1", "host"), Path::new("/spool/host/n1"));
        std::fs::write(&main, "ClusterName=x\n").unwrap();
        assert_eq!(spool_dir(&main, "n1", "host"), Path::new(DEFAULT_SPOOL_DIR));
        assert_eq!(
            spool_dir(&d.path().join("missing"), "n1", "h"),
            Path::new(DEFAULT_SPOOL_DIR)
        );
    }

    #[test]
    fn listening_sockets_from_proc_net_unix() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 31337 /var/spool/slurmd/n1_42.0\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 31338 /var/spool/slurmd/n1_43.0\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 31339\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 31340 @abstract\n";
        let names = listening_socket_names(text);
        assert!(names.contains("n1_42.0"));
        assert!(!names.contains("n1_43.0"), "connected, not listening");
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn squeue_output_is_job_ids_or_an_error() {
        let ids = super::parse_job_ids("12\n 13 \n\n").unwrap();
        assert_eq!(ids, [12, 13].into_iter().collect());
        assert!(super::parse_job_ids("12\nslurm_load_jobs error\n").is_err());
        assert!(super::parse_job_ids("").unwrap().is_empty());
    }
}

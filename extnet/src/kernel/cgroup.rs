//! cgroup v2 directories: the job cgroups whose sockets carry a job's mark. The root is always a
//! parameter so tests can use a directory of their own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot {op} cgroup {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup {path} still holds processes {pids:?} after cgroup.kill; they keep the slot busy until they exit")]
    Busy { path: PathBuf, pids: Vec<i32> },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// `mkdir -p DIR` in the cgroup2 hierarchy.
pub fn create(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(io("create", dir)(e)),
    }
}

/// The cgroup id nftables matches on: the inode number of the directory.
pub fn id(dir: &Path) -> Result<u64, CgroupError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(io("stat", dir))
}

/// Processes in the cgroup (`cat DIR/cgroup.procs`); a missing cgroup has none.
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Kills every process left in the cgroup (`echo 1 > DIR/cgroup.kill`, kernel 5.14+; SIGKILL
/// to each listed pid otherwise) and waits up to `wait` for it to empty.
pub fn kill_all(dir: &Path, wait: Duration) -> Result<(), CgroupError> {
    let mut pids = procs(dir)?;
    if pids.is_empty() {
        return Ok(());
    }
    let kill_file = dir.join("cgroup.kill");
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(&kill_file)
        .and_then(|mut f| f.write_all(b"1"))
        .is_ok();
    if !killed {
        for p in &pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::SIGKILL);
        }
    }
    let start = Instant::now();
    while !pids.is_empty() && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(5));
        pids = procs(dir)?;
    }
    if pids.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::Busy {
            path: dir.to_owned(),
            pids,
        })
    }
}

/// `rmdir DIR`; a missing directory is fine.
pub fn remove(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", dir)(e)),
    }
}

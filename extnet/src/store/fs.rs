//! Crash-safe file primitives: atomic replace, append with fsync, an exclusive lock.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` and its parents with mode 0755 (root-owned state directories).
pub fn ensure_dir(dir: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))
}

/// Removes a file; one that is not there counts as removed. Returns whether it was there.
pub fn remove_file(path: &Path) -> Result<bool, FsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", path)(e)),
    }
}

/// Replaces `path` with `data`: write a temp file beside it, fsync, rename, fsync the directory.
/// A reader sees the old or the new content, never a mix; a crash leaves at worst a temp file.
/// The file gets exactly `mode`, whatever the umask.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))?;
    Ok(())
}

/// Replaces `path` with `data` (temp file beside it, rename) without waiting for the disk:
/// for files that need not outlive the node's uptime (job state, the base marker), whose loss
/// or truncation in a power cut is detected and handled by their readers. Readers still see
/// the old or the new content, never a mix. One fsync on a busy disk costs milliseconds, on
/// every job's critical path.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let open = |tmp: &Path| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(tmp)
    };
    let mut f = match open(&tmp) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ensure_dir(dir)?;
            open(&tmp).map_err(io("create", &tmp))?
        }
        Err(e) => return Err(io("create", &tmp)(e)),
    };
    f.write_all(data).map_err(io("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(())
}

/// Appends one line and fsyncs before returning (the lease log: a record is on disk before the
/// job's tasks start). Opens by path every time, so a log moved away by logrotate is followed
/// by a new file at the same path.
pub fn append_line(path: &Path, line: &str) -> Result<(), FsError> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(io("open for append", path))?;
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    f.write_all(buf.as_bytes()).map_err(io("append to", path))?;
    f.sync_data().map_err(io("fsync", path))?;
    Ok(())
}

/// An exclusive `flock` on a lock file, held until dropped. Serializes the prologs and epilogs
/// of one node around the lease table and the base setup.
pub struct Lock {
    _lock: Flock<File>,
}

impl Lock {
    pub fn acquire(path: &Path) -> Result<Lock, FsError> {
        let lock = Flock::lock(Lock::open(path)?, FlockArg::LockExclusive).map_err(|(_, e)| {
            FsError::Io {
                op: "lock",
                path: path.to_owned(),
                source: e.into(),
            }
        })?;
        Ok(Lock { _lock: lock })
    }

    /// The lock file, made (with its directory) if missing.
    fn open(path: &Path) -> Result<File, FsError> {
        if let Some(dir) = path.parent() {
            ensure_dir(dir)?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open lock", path))
    }

    /// [`Lock::acquire`] without waiting: `None` when another process holds the lock.
    pub fn try_acquire(path: &Path) -> Result<Option<Lock>, FsError> {
        match Flock::lock(Lock::open(path)?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(Lock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(FsError::Io {
                op: "lock",
                path: path.to_owned(),
                source: e.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_busy_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lock");
        let held = Lock::try_acquire(&path).unwrap().expect("a free lock");
        assert!(Lock::try_acquire(&path).unwrap().is_none(), "held twice");
        drop(held);
        assert!(Lock::try_acquire(&path).unwrap().is_some());
    }
}

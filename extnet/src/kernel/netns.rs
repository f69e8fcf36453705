//! Named network namespaces, kept exactly as `ip netns` keeps them: an empty file `DIR/NAME`
//! with the namespace bind-mounted onto it, `DIR` being `/run/netns` for `ip` (its
//! `NETNS_RUN_DIR`) and a parameter here. No fork, no exec.
//!
//! `setns` and `unshare` act on the calling thread only. Every function here that moves the
//! thread returns it to its original namespace before returning, also on error; when even that
//! fails ([`NetnsError::Restore`]) the thread must not be used for anything else.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

/// The calling thread's own network namespace. `/proc/self` would name the main thread's,
/// which is not ours in a multi-threaded process.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, Linux 4.11): the `CLONE_NEW*` type of a namespace fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("cannot {op} {}: {source}{hint}", path.display())]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
        hint: &'static str,
    },
    #[error(
        "{} is not a network namespace ({what}); hint: remove it by hand if it is a leftover, \
         or choose another namespace directory",
        path.display()
    )]
    NotNetns { path: PathBuf, what: String },
    #[error(
        "cannot return this thread to its original network namespace: {source}; the thread is \
         left in another namespace and must not be used further"
    )]
    Restore { source: io::Error },
}

/// Builds a [`NetnsError::Sys`]; the hint depends on the errno and is found once, here.
fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> NetnsError + 'a {
    move |errno| NetnsError::Sys {
        op,
        path: path.to_owned(),
        source: errno.into(),
        hint: match errno {
            Errno::EPERM | Errno::EACCES => {
                "; hint: needs root (CAP_SYS_ADMIN for namespaces and mounts)"
            }
            Errno::EEXIST => {
                "; hint: a namespace of this name exists already: delete it first (`extnet` \
                 epilog or `ip netns del`) if it is a leftover"
            }
            Errno::EROFS => "; hint: the namespace directory must be on a writable filesystem",
            _ => "",
        },
    }
}

fn io_sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |e| sys(op, path)(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// A name is one path component: no `/`, not empty, not `.` or `..`.
fn check_name(name: &str) -> Result<(), NetnsError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.contains('/') {
        "contains '/'"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_owned(),
        why,
    })
}

/// Makes `dir` exist and be a shared mount point, as `ip netns add` does with its run
/// directory: namespace mounts made under it then propagate to other mount namespaces, so an
/// unmount anywhere unmounts everywhere and the namespace can be freed. Callers serialize
/// (the node lock): two concurrent first calls could stack two bind mounts on `dir`.
fn ensure_shared_dir(dir: &Path) -> Result<(), NetnsError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_sys("create directory", dir))?;
    let mut made_mount_point = false;
    loop {
        match nix::mount::mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            // EINVAL: `dir` is not a mount point yet. Make it one by bind-mounting it onto
            // itself, once, then make that shared.
            Err(Errno::EINVAL) if !made_mount_point => {
                nix::mount::mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(sys("bind-mount onto itself", dir))?;
                made_mount_point = true;
            }
            Err(e) => return Err(sys("make shared mount (mount --make-rshared)", dir)(e)),
        }
    }
}

/// The calling thread's network namespace, opened (`O_RDONLY|O_CLOEXEC`).
pub fn current() -> Result<File, NetnsError> {
    File::open(THREAD_NETNS).map_err(io_sys("open", Path::new(THREAD_NETNS)))
}

/// Creates the named network namespace `dir/name` and returns it opened (`O_RDONLY|O_CLOEXEC`).
/// Fails with `EEXIST` when the name is taken. On error nothing is left behind.
/// Equals `ip netns add NAME` with `NETNS_RUN_DIR=dir`.
pub fn create(dir: &Path, name: &str) -> Result<File, NetnsError> {
    check_name(name)?;
    ensure_shared_dir(dir)?;
    let path = dir.join(name);
    // Mode 0 like iproute2: the file is only a mount point, nobody opens it unmounted.
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("create namespace file", &path))?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    // a crash here leaves a plain file: `open` reports it, `delete` removes it
    crate::diag::failpoint::hit("prolog-netns-file-created");

    match bind_new_netns(&path).and_then(|()| open_checked(&path)) {
        Ok(ns) => {
            tracing::debug!(path = %path.display(), "network namespace created");
            Ok(ns)
        }
        Err(e) => {
            // Roll back: unmount if the bind mount was made, then remove the file.
            let _ = nix::mount::umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
            let _ = nix::unistd::unlink(&path);
            Err(e)
        }
    }
}

/// Moves the calling thread into a new network namespace, bind-mounts that namespace onto
/// `path`, and returns the thread to its original namespace (also when the mount failed).
fn bind_new_netns(path: &Path) -> Result<(), NetnsError> {
    let original = current()?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(sys("create a network namespace (unshare) for", path))?;
    let mounted = nix::mount::mount(
        Some(THREAD_NETNS),
        path,
        Some("none"),
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys("bind-mount the new network namespace onto", path));
    nix::sched::setns(original.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetnsError::Restore { source: e.into() })?;
    // If the mount failed, the new namespace had no other reference and is gone already.
    mounted
}

/// Opens `path` without following a symlink and checks that it is a network namespace owned
/// by root (a user must not be able to plant a namespace of their own where a job looks).
pub fn open_checked(path: &Path) -> Result<File, NetnsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_sys("open", path))?;
    let fs_type = nix::sys::statfs::fstatfs(&file)
        .map_err(sys("statfs", path))?
        .filesystem_type();
    if fs_type != nix::sys::statfs::NSFS_MAGIC {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
            what: format!(
                "filesystem type {:#x}, not nsfs: nothing is mounted on it",
                fs_type.0
            ),
        });
    }
    let owner = file.metadata().map_err(io_sys("stat", path))?.uid();
    if owner != 0 {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
            what: format!("a namespace owned by uid {owner}, not root"),
        });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `file` keeps open.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype >= 0 && nstype != libc::CLONE_NEWNET {
        return Err(NetnsError::NotNetns {
            path: path.to_owned(),
            what: format!("a namespace of type {nstype:#x}"),
        });
    }
    Ok(file)
}

/// Opens the named network namespace `dir/name` (`O_RDONLY|O_CLOEXEC|O_NOFOLLOW`) and checks
/// that it is one (on nsfs); `Ok(None)` when there is no such name. A plain file left by an
/// interrupted [`create`] is an error here and removed by [`delete`].
/// Equals what `ip netns exec NAME` opens.
pub fn open(dir: &Path, name: &str) -> Result<Option<File>, NetnsError> {
    check_name(name)?;
    match open_checked(&dir.join(name)) {
        Ok(f) => Ok(Some(f)),
        Err(NetnsError::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Deletes the named network namespace `dir/name`: unmounts it (lazily, `MNT_DETACH`) and
/// removes the file. `Ok(false)` when there was nothing; safe to call twice. The namespace
/// itself, with its links and routes, is freed by the kernel once no process and no open fd
/// holds it any more (kill its processes first: [`pids_in`]).
/// Equals `ip netns del NAME` with `NETNS_RUN_DIR=dir`.
pub fn delete(dir: &Path, name: &str) -> Result<bool, NetnsError> {
    check_name(name)?;
    let path = dir.join(name);
    // Unmount until nothing is mounted there (EINVAL); a stack of mounts is not expected but
    // would otherwise keep the namespace alive. UMOUNT_NOFOLLOW: never unmount where a symlink
    // planted in the directory points.
    for _ in 0..8 {
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(sys("unmount", &path)(e)),
        }
    }
    match nix::unistd::unlink(&path) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "network namespace deleted");
            Ok(true)
        }
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(sys("remove", &path)(e)),
    }
}

/// Moves the calling thread into the network namespace `ns` (for good: the caller restores).
/// Equals the `setns` of `ip netns exec` / `nsenter --net`.
pub fn enter(ns: BorrowedFd<'_>) -> Result<(), NetnsError> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
        let fd = PathBuf::from(format!("/proc/self/fd/{}", ns.as_raw_fd()));
        sys("enter network namespace", &fd)(e)
    })
}

/// Runs `f` with the calling thread inside the network namespace `ns`, then returns the thread
/// to the namespace it was in, whatever `f` returned. Sockets `f` opens stay in `ns`.
pub fn run_in<T>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
    let original = current()?;
    enter(ns)?;
    // Restores on unwind too, should `f` panic; on the normal path below, with the error.
    let guard = RestoreOnDrop(Some(original));
    let out = f();
    guard.restore()?;
    Ok(out)
}

/// Returns the thread to the namespace it holds when dropped (best effort: a panic is already
/// on its way), or when [`RestoreOnDrop::restore`] is called (reporting failure).
struct RestoreOnDrop(Option<File>);

impl RestoreOnDrop {
    fn restore(mut self) -> Result<(), NetnsError> {
        let Some(original) = self.0.take() else {
            return Ok(());
        };
        nix::sched::setns(original.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetnsError::Restore { source: e.into() })
    }
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        if let Some(original) = self.0.take() {
            if let Err(e) = nix::sched::setns(original.as_fd(), CloneFlags::CLONE_NEWNET) {
                tracing::error!(error = %e, "cannot return the thread to its network namespace");
            }
        }
    }
}

/// The inode number of a namespace file: the namespace's identity, the number `ip netns
/// identify` and `/proc/PID/ns/net` (`net:[INODE]`) show. 0 only if `fstat` on the open file
/// failed, which the kernel does not do for a valid fd.
pub fn inode(f: &File) -> u64 {
    f.metadata().map(|m| m.ino()).unwrap_or(0)
}

/// The processes one of whose threads is in the network namespace with inode `ns_inode`:
/// what must be killed before a job's namespace can go. Processes that exit while we look are
/// skipped. Equals `ip netns pids NAME`, which looks at main threads only: a thread can
/// `setns` on its own, and a process whose other thread sits in the namespace keeps it (and
/// its veth) alive just the same.
///
/// O(processes on the node): Slurm has normally killed the job's tasks before its epilog, but
/// a process that escaped its tracking (a daemon under `proctrack/linuxproc`, something an
/// admin started with `nsenter`) would keep the namespace and its veth alive, and reach out
/// with the address, and so the mark, of the slot's next job. One `readlinkat` per process
/// (`net:[INODE]`), relative to an open `/proc`: `stat` of `/proc/PID/ns/net`, as `ip netns
/// pids` does, also follows the link into nsfs and costs about twice as much (figures and
/// their command: docs/PERFORMANCE.md). A process whose main thread is elsewhere costs one
/// `fstatat` more (`/proc/PID/task`'s link count is 2 + its threads), and only a
/// multi-threaded one a read of its threads' links.
pub fn pids_in(ns_inode: u64) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt as _;
    let (Ok(dir), Ok(entries)) = (File::open("/proc"), std::fs::read_dir("/proc")) else {
        return Vec::new();
    };
    let want = format!("net:[{ns_inode}]");
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let name = name.as_bytes();
        if link_is(&dir, &[name, b"/ns/net"], want.as_bytes())
            || (threads(&dir, name) > 1 && a_thread_in(pid, name, want.as_bytes()))
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// A process that holds a network namespace: by a thread inside it, or by open file
/// descriptors on it (a `/run/netns` file or a `/proc/PID/ns/net` it opened, or one passed to
/// it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: i32,
    /// Real uid (`/proc/PID/status`).
    pub uid: u32,
    /// `/proc/PID/comm`.
    pub comm: String,
    /// One of its threads is in the namespace.
    pub inside: bool,
    /// Its file descriptors open on the namespace.
    pub fds: Vec<i32>,
}

/// Every process that holds the network namespace with inode `ns_inode` by a thread in it
/// ([`pids_in`]) or an open fd on it. O(processes + their open files): one pass over `/proc`
/// and one `fstatat` per open file (what the fd is open on: device nsfs and the namespace's
/// inode; its link does not say, since an fd opened through a `/run/netns` bind mount reads
/// as that path, not `net:[INODE]`); meant for after a teardown, when the namespace is
/// expected to be gone. A mount of the namespace in another mount namespace holds it too and
/// is not found here. Processes that exit while we look are skipped.
pub fn holders(ns_inode: u64) -> Vec<Holder> {
    use std::os::unix::ffi::OsStrExt as _;
    let (Ok(proc_dir), Ok(nsfs)) = (File::open("/proc"), std::fs::metadata(THREAD_NETNS)) else {
        return Vec::new();
    };
    let nsfs_dev = nsfs.dev();
    let inside = pids_in(ns_inode);
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let fd_dir = format!("/proc/{pid}/fd");
        let fds: Vec<i32> = std::fs::read_dir(&fd_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let fd = n.to_str()?.parse::<i32>().ok()?;
                (file_id(&proc_dir, &[name.as_bytes(), b"/fd/", n.as_bytes()])
                    == Some((nsfs_dev, ns_inode)))
                .then_some(fd)
            })
            .collect();
        let is_inside = inside.binary_search(&pid).is_ok();
        if fds.is_empty() && !is_inside {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| parse_status_uid(&s))
            .unwrap_or(u32::MAX);
        out.push(Holder {
            pid,
            uid,
            comm,
            inside: is_inside,
            fds,
        });
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// The device and inode of what the path made of `parts` (relative to the open directory
/// `dir`) leads to, following a final link (for `/proc/PID/fd/N`: the open file itself).
fn file_id(dir: &File, parts: &[&[u8]]) -> Option<(u64, u64)> {
    let path = proc_path(parts)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated within its 64 bytes ([`proc_path`]), `st` is
    // writable, `dir` is an open directory for the whole call.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr().cast(), st.as_mut_ptr(), 0) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstatat succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// The NUL-terminated path made of `parts`; `None` when it does not fit (paths under /proc
/// are short).
fn proc_path(parts: &[&[u8]]) -> Option<[u8; 64]> {
    let mut path = [0u8; 64];
    let mut len = 0;
    for p in parts {
        if len + p.len() >= path.len() {
            return None;
        }
        path[len..len + p.len()].copy_from_slice(p);
        len += p.len();
    }
    // path[len] is the NUL the buffer was filled with
    Some(path)
}

/// The real uid of a `/proc/PID/status` text (`Uid:\treal\teffective\tsaved\tfs`).
fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// Whether the link at the path made of `parts` (relative to the open directory `dir`) reads
/// `want`. Paths of /proc are short: one that does not fit the buffer is no match.
fn link_is(dir: &File, parts: &[&[u8]], want: &[u8]) -> bool {
    let Some(path) = proc_path(parts) else {
        return false;
    };
    let mut link = [0u8; 40];
    // SAFETY: `path` is NUL-terminated within its 64 bytes, `link` is writable for its
    // length, and `dir` is an open directory for the whole call.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            path.as_ptr().cast(),
            link.as_mut_ptr().cast(),
            link.len(),
        )
    };
    usize::try_from(n).is_ok_and(|n| &link[..n] == want)
}

/// The number of threads of process `pid` (its name in /proc), from the link count of
/// `/proc/PID/task`; 0 when it is gone.
fn threads(dir: &File, pid: &[u8]) -> u64 {
    let mut path = [0u8; 32];
    const SUFFIX: &[u8] = b"/task";
    if pid.len() + SUFFIX.len() >= path.len() {
        return 0;
    }
    path[..pid.len()].copy_from_slice(pid);
    path[pid.len()..pid.len() + SUFFIX.len()].copy_from_slice(SUFFIX);
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated within its 32 bytes, `st` is writable, `dir` is open.
    let rc = unsafe { libc::fstatat(dir.as_raw_fd(), path.as_ptr().cast(), st.as_mut_ptr(), 0) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: fstatat succeeded and filled `st`.
    let nlink = unsafe { st.assume_init() }.st_nlink;
    nlink.saturating_sub(2)
}

/// Whether a thread other than the main one of process `pid` is in the namespace `want`
/// names.
fn a_thread_in(pid: i32, name: &[u8], want: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let task = format!("/proc/{pid}/task");
    let (Ok(dir), Ok(entries)) = (File::open(&task), std::fs::read_dir(&task)) else {
        return false;
    };
    entries.flatten().any(|t| {
        let tid = t.file_name();
        tid.as_bytes() != name && link_is(&dir, &[tid.as_bytes(), b"/ns/net"], want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_uid_is_the_real_uid() {
        let status = "Name:\tsleep\nUmask:\t0022\nUid:\t1001\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(parse_status_uid(status), Some(1001));
        assert_eq!(parse_status_uid("Name:\tx\n"), None);
        assert_eq!(parse_status_uid("Uid:\tnope\n"), None);
    }

    /// No root needed: this process holds its own namespace by an open fd and by being in it.
    #[test]
    fn holders_finds_an_open_namespace_fd() {
        let ns = current().unwrap();
        let ino = inode(&ns);
        let me = std::process::id() as i32;
        let found = holders(ino);
        let h = found
            .iter()
            .find(|h| h.pid == me)
            .expect("this process holds its namespace");
        assert!(h.inside);
        assert!(h.fds.contains(&ns.as_raw_fd()), "{h:?}");
        assert_eq!(h.uid, nix::unistd::getuid().as_raw());
        assert!(!h.comm.is_empty());
        let fd = ns.as_raw_fd();
        drop(ns);
        assert!(holders(ino)
            .iter()
            .all(|h| h.pid != me || !h.fds.contains(&fd)));
    }

    #[test]
    fn names_are_one_path_component() {
        for bad in ["", ".", "..", "a/b", "/abs", "x\0y"] {
            assert!(
                matches!(check_name(bad), Err(NetnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        for good in ["extnet-j123", "job.7", "..x"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn errors_carry_path_operation_and_hint() {
        let e = sys("create namespace file", Path::new("/run/netns/j1"))(Errno::EEXIST);
        let text = e.to_string();
        assert!(
            text.starts_with("cannot create namespace file /run/netns/j1: "),
            "{text}"
        );
        assert!(
            text.contains("hint: a namespace of this name exists already"),
            "{text}"
        );
    }
}

//! Private network namespaces for the kernel and crash tests and the micro-benchmarks: they
//! never touch the machine's own namespace.
//!
//! Two ways, as the code under test needs: [`in_private_netns`] runs code on a thread of its
//! own that unshares a new namespace, which goes with the thread; [`NetnsDir`] is a temporary
//! namespace directory (`NETNS_RUN_DIR`) for named namespaces, kept as extnet keeps them, and
//! checks at the end that none is left ([`with_netns_dir`]: the frame of a test that uses one).
//! [`node_link`] gives a namespace the node's network
//! interface; [`ip`], [`ip_in`], [`sh_in`] and [`command_in`] run commands inside one.

use extnet::kernel::netns;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `f` on a thread of its own, so that no namespace change can leak into the caller's
/// thread (the test harness's); a panic in `f` goes on in the caller with its own message.
pub fn in_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` on a thread of its own in a new, empty network namespace (`unshare(CLONE_NEWNET)`:
/// only `lo`, down). The processes the thread starts are born in it; the namespace goes when
/// the thread and whatever `f` left open in it are gone. As root.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_thread(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
}

/// Gives the calling thread's network namespace the node's network interface: `name`, one
/// end of a veth pair whose other end (`<name>p`) stays in the namespace too, both up, so that
/// `name` has a carrier like a real NIC (the dummy driver is not built into every kernel);
/// the address `addr` (`10.99.0.11/24`) on it; a default route via `gateway` when given; `lo`
/// up.
pub fn node_link(name: &str, addr: &str, gateway: Option<&str>) {
    let peer = format!("{name}p");
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    ip(&["link", "set", &peer, "up"]);
    ip(&["addr", "add", addr, "dev", name]);
    ip(&["link", "set", name, "up"]);
    if let Some(gateway) = gateway {
        ip(&["route", "add", "default", "via", gateway, "dev", name]);
    }
}

/// Adds the IPv6 address `addr` (`fd00:78e7::11/64`) to `dev` in the calling thread's
/// namespace, usable at once (`nodad`: not tentative for a second).
pub fn addr6(dev: &str, addr: &str) {
    ip(&["-6", "addr", "add", addr, "dev", dev, "nodad"]);
}

/// Runs `ip ARGS` in the calling thread's network namespace and returns what it printed;
/// panics with its stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    output(Command::new("ip").args(args))
}

/// [`ip`] in the network namespace `ns`.
pub fn ip_in(ns: &File, args: &[&str]) -> String {
    output(command_in(Command::new("ip").args(args), ns))
}

/// Runs the shell command `cmd` (`sh -c`) in the network namespace `ns` and returns what it
/// printed; panics with its stderr when it fails.
pub fn sh_in(ns: &File, cmd: &str) -> String {
    output(command_in(Command::new("sh").args(["-c", cmd]), ns))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `cmd` start inside the network namespace `ns` (`setns` in the child, before exec).
/// `ns` must stay open until the command has been spawned.
pub fn command_in<'c>(cmd: &'c mut Command, ns: &File) -> &'c mut Command {
    let fd = ns.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
    // is async-signal-safe; the caller keeps `ns`, and so `fd`, open until the child has
    // exec'd.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// True when the program `cmd` can be run (`cmd -V`).
pub fn have(cmd: &str) -> bool {
    Command::new(cmd).arg("-V").output().is_ok()
}

/// The frame of a test of named namespaces. Without root, says why `test` is skipped
/// ([`is_root`](crate::root::is_root)). Otherwise runs `f` on a thread of its own
/// ([`in_thread`]) with a new [`NetnsDir`], then checks that `f` deleted every namespace it
/// made and that nothing is left ([`NetnsDir::finish`]).
pub fn with_netns_dir(test: &str, f: impl FnOnce(&NetnsDir) + Send) {
    if !crate::root::is_root(test, "network namespaces and mounts") {
        return;
    }
    in_thread(|| {
        let dir = NetnsDir::temporary();
        f(&dir);
        dir.finish();
    });
}

/// A temporary namespace directory, as `/run/netns` is for `ip`, with the namespaces made in
/// it. Dropping it deletes them and unmounts the directory; [`NetnsDir::finish`] does the same
/// and checks that nothing is left.
pub struct NetnsDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl NetnsDir {
    /// A new, empty directory `/tmp/extnet-netns-*`.
    pub fn temporary() -> NetnsDir {
        let dir = tempfile::Builder::new()
            .prefix("extnet-netns-")
            .tempdir()
            .expect("create a temporary namespace directory");
        let path = dir.path().to_owned();
        NetnsDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new namespace `name` in the directory (extnet's `netns::create`); panics when it
    /// cannot be made.
    pub fn create(&self, name: &str) -> File {
        netns::create(&self.path, name).unwrap_or_else(|e| panic!("create netns {name}: {e}"))
    }

    /// Asserts that every namespace made in the directory was deleted, deletes the directory,
    /// and asserts that no mount at or under it and no file is left.
    pub fn finish(mut self) {
        let entries: Vec<_> = std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            entries.is_empty(),
            "namespace files left in {}: {entries:?}",
            self.path.display()
        );
        let path = self.path.clone();
        self.remove();
        assert_eq!(
            mounts_under(&path),
            Vec::<String>::new(),
            "mounts left under the namespace directory"
        );
        assert!(!path.exists(), "{} is left", path.display());
    }

    fn remove(&mut self) {
        remove_all(&self.path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for NetnsDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Deletes every namespace in the namespace directory `dir` and undoes the shared bind mount
/// extnet's `netns::create` makes of the directory itself. Errors are ignored: this is
/// cleanup, and the caller checks afterwards what is left.
pub fn remove_all(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = netns::delete(dir, &entry.file_name().to_string_lossy());
    }
    while nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}

/// Mount points at or below `dir` in the calling thread's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/thread-self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|mp| mp == dir || mp.starts_with(&format!("{dir}/")))
        .collect()
}

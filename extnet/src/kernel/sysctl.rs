//! Kernel parameters under `/proc/sys` (`sysctl -w`), of the calling thread's network namespace.

use std::path::{Path, PathBuf};

/// A sysctl file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot set {path}: {source}; run as root in the node's network namespace")]
pub struct SysctlError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes `value` to a sysctl file unless it already holds it (`sysctl -w KEY=VALUE`).
pub fn set(path: &str, value: &str) -> Result<(), SysctlError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| SysctlError {
        path: path.into(),
        source,
    })
}

/// Turns forwarding on for IPv4 on interface `name`
/// (`sysctl -w net.ipv4.conf.NAME.forwarding=1`).
pub fn enable_forwarding(name: &str) -> Result<(), SysctlError> {
    set(&format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1")
}

/// Turns IPv6 off on interface `name` (`sysctl -w net.ipv6.conf.NAME.disable_ipv6=1`). Nothing
/// to do on a kernel without IPv6 (`ipv6.disable=1`: no `/proc/sys/net/ipv6`). Written without
/// reading it first (unlike [`set`]): the link is new, and the kernel ignores a write of the
/// value it has.
pub fn disable_ipv6(name: &str) -> Result<(), SysctlError> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(source)
            if source.kind() == std::io::ErrorKind::NotFound
                && !Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        Err(source) => Err(SysctlError {
            path: path.into(),
            source,
        }),
    }
}

/// Whether this kernel has IPv6 at all: not on one booted with `ipv6.disable=1` (no
/// `/proc/sys/net/ipv6` in any namespace), where there is nothing of a job's to hold.
pub fn ipv6_available() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// The file of the node's IPv6 forwarding switch. On Linux it is global in effect: a
/// forwarded IPv6 packet needs `all.forwarding` (the per-interface value does not enable
/// `ip6_forward`), and setting it makes every interface a router, which ignores router
/// advertisements unless its `accept_ra` is 2. An admin's choice, never extnet's.
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Whether this network namespace forwards IPv6 (`net.ipv6.conf.all.forwarding` is 1; false
/// on a kernel without IPv6).
pub fn ipv6_forwarding() -> bool {
    std::fs::read_to_string(IPV6_FORWARDING).is_ok_and(|v| v.trim() == "1")
}

/// Turns IPv6 on for a new link `name` (still down) with nothing automatic: no link-local or
/// other generated address (`addr_gen_mode` 1, set first), no router advertisements taken
/// from the link (`accept_ra` 0: what a job sends on its veth must never change the node's
/// routes). Equals `sysctl -w net.ipv6.conf.NAME.addr_gen_mode=1
/// net.ipv6.conf.NAME.accept_ra=0 net.ipv6.conf.NAME.disable_ipv6=0`.
pub fn enable_ipv6_bare(name: &str) -> Result<(), SysctlError> {
    for (key, value) in [
        ("addr_gen_mode", "1"),
        ("accept_ra", "0"),
        ("disable_ipv6", "0"),
    ] {
        set(&format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value)?;
    }
    Ok(())
}

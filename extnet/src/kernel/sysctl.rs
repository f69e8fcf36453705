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

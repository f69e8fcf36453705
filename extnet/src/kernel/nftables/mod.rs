//! nftables: the node's base table is loaded by the `nft` program (`nft -f -`, one atomic
//! transaction), which happens rarely: the first external job on a node, a policy change, a
//! repair. Everything on the per-job path goes straight to nf_tables over netlink
//! ([`netlink`]), and no extnet binary links libnftables: the prolog and epilog start
//! without its six shared libraries.

pub mod netlink;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where `nft` is looked for, in order. slurmd runs the prolog and epilog without `PATH`.
pub const NFT_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/bin"];

/// How much of nft's error output goes into an error message.
const STDERR_MAX: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot find the nft program in {}: install nftables (Debian: apt-get install nftables)", NFT_DIRS.join(", "))]
    NotFound,
    #[error("cannot run {} to load {what}: {source}", path.display())]
    Exec {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("{} -f - refused {what}: {stderr}; fix what nft names (a kernel without an nftables feature the ruleset uses, a cgroup directory that is gone, a policy value nft refuses), then run `extnet node setup` on the node", path.display())]
    Rejected {
        path: PathBuf,
        what: String,
        stderr: String,
    },
    #[error("netlink query of nftables table {table}: {source}")]
    Netlink {
        table: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Nfnl(#[from] crate::kernel::nftables::netlink::NfnlError),
}

/// The `nft` program: the first of [`NFT_DIRS`] that has it.
pub fn program() -> Result<PathBuf, NftError> {
    NFT_DIRS
        .iter()
        .map(|d| Path::new(d).join("nft"))
        .find(|p| p.is_file())
        .ok_or(NftError::NotFound)
}

/// Loads `ruleset` (one atomic transaction) with `nft -f -`, in the calling thread's network
/// namespace. nft's messages are in English (`LC_ALL=C`) and end up in the error.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    let what = ruleset
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            format!(
                "the ruleset starting with {:?}",
                l.chars().take(80).collect::<String>()
            )
        })
        .unwrap_or_else(|| "an empty ruleset".into());
    let path = program()?;
    let exec = |source| NftError::Exec {
        path: path.clone(),
        what: what.clone(),
        source,
    };
    let mut child = Command::new(&path)
        .args(["-f", "-"])
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(exec)?;
    // nft reads all of its input before it says anything: writing first cannot deadlock. A
    // write error (nft gone early) shows in its exit status and stderr.
    let written = child
        .stdin
        .take()
        .map(|mut i| i.write_all(ruleset.as_bytes()));
    let out = child.wait_with_output().map_err(exec)?;
    if out.status.success() {
        if let Some(Err(e)) = written {
            return Err(exec(e));
        }
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = format!("{} without a message", out.status);
    }
    if stderr.len() > STDERR_MAX {
        let cut = (0..=STDERR_MAX)
            .rev()
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(0);
        stderr.truncate(cut);
        stderr.push_str(" [...]");
    }
    Err(NftError::Rejected { path, what, stderr })
}

/// `nft delete table ip NAME` over netlink; absent is fine.
pub fn delete_table(name: &str) -> Result<(), NftError> {
    crate::kernel::nftables::netlink::NfSocket::open()
        .map_err(crate::kernel::nftables::netlink::NfnlError::Open)?
        .delete_table(name)?;
    Ok(())
}

/// Whether table `FAMILY NAME` exists in the current network namespace (`nft list table
/// FAMILY NAME`, one netlink round trip).
pub fn table_exists_in(family: netlink::Family, name: &str) -> Result<bool, NftError> {
    netlink::NfSocket::open()
        .and_then(|mut s| s.table_exists_in(family, name))
        .map_err(|source| NftError::Netlink {
            table: format!("{family} {name}"),
            source,
        })
}

/// Feeds the chains and rules of table `FAMILY NAME` in the current network namespace into
/// `h` ([`netlink::NfSocket::hash_structure`]); `false` when there is no such table.
pub fn hash_structure_in(
    family: netlink::Family,
    name: &str,
    h: &mut impl std::hash::Hasher,
) -> Result<bool, NftError> {
    netlink::NfSocket::open()
        .and_then(|mut s| s.hash_structure(family, name, h))
        .map_err(|source| NftError::Netlink {
            table: format!("{family} {name}"),
            source,
        })
}

/// Whether table `ip NAME` exists in the current network namespace (`nft list tables`, but
/// one netlink round trip and no element is touched).
pub fn table_exists(name: &str) -> Result<bool, NftError> {
    crate::kernel::nftables::netlink::NfSocket::open()
        .and_then(|mut s| s.table_exists(name))
        .map_err(|source| NftError::Netlink {
            table: name.into(),
            source,
        })
}

//! nftables: the node's base table is loaded once with `nft -f` (one atomic transaction); the
//! job path never runs `nft`. Existence checks go straight to nf_tables over netlink: listing
//! the table would resolve every cgroup element (minutes at thousands of elements).

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io::Write;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {nft}: {source}; install nftables (Debian: apt-get install nftables)")]
    Spawn { nft: String, source: std::io::Error },
    #[error("nft refused the extnet ruleset: {stderr}")]
    Rejected { stderr: String },
    #[error("netlink query of nftables table {table}: {source}")]
    Netlink {
        table: String,
        source: std::io::Error,
    },
}

/// `nft -f -` with `ruleset` on stdin. `nft` is looked up as `/usr/sbin/nft`, then on PATH.
pub fn apply(ruleset: &str) -> Result<(), NftError> {
    let nft = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn {
            nft: nft.into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|source| NftError::Spawn {
                nft: nft.into(),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn {
        nft: nft.into(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `nft delete table ip NAME`; absent is fine.
pub fn delete_table(name: &str) -> Result<(), NftError> {
    if table_exists(name)? {
        apply(&format!("delete table ip {name}\n"))?;
    }
    Ok(())
}

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFPROTO_IPV4: u8 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// Whether table `ip NAME` exists in the current network namespace (`nft list tables`, but
/// one netlink round trip and no element is touched).
pub fn table_exists(name: &str) -> Result<bool, NftError> {
    let err = |source: std::io::Error| NftError::Netlink {
        table: name.into(),
        source,
    };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(err)?;
    sock.bind_auto().map_err(err)?;
    sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
    // nlmsghdr | nfgenmsg | NFTA_TABLE_NAME attribute (NUL-terminated, padded to 4)
    let mut attr = Vec::new();
    let val_len = name.len() + 1;
    attr.extend_from_slice(&((4 + val_len) as u16).to_ne_bytes());
    attr.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
    attr.extend_from_slice(name.as_bytes());
    attr.push(0);
    while attr.len() % 4 != 0 {
        attr.push(0);
    }
    let len = 16 + 4 + attr.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]); // family, version, res_id
    msg.extend_from_slice(&attr);
    sock.send(&msg, 0).map_err(err)?;
    let mut found = false;
    let mut buf = vec![0u8; 16384];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0).map_err(err)?;
        let mut off = 0;
        while off + 16 <= n {
            let mlen =
                u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let mtype = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
            if mlen < 16 || off + mlen > n {
                return Err(err(std::io::Error::other("truncated netlink reply")));
            }
            if mtype == NLMSG_ERROR {
                let code =
                    i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or_default());
                return match -code {
                    0 => Ok(found),
                    libc::ENOENT => Ok(false),
                    e => Err(err(std::io::Error::from_raw_os_error(e))),
                };
            }
            found = true;
            off += (mlen + 3) & !3;
        }
    }
}

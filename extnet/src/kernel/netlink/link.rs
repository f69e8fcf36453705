//! Network links (`ip link`): look up, create a veth pair across namespaces, bring up, delete.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkUnspec, LinkVeth};

use super::{Netlink, NetlinkError, Protocol, SocketError};

/// `IFNAMSIZ` minus the terminating NUL.
const MAX_NAME_LEN: usize = 15;

/// Checks a link name as the kernel's `dev_valid_name` does, to fail with a clear message
/// before asking.
pub fn check_name(name: &str) -> Result<(), NetlinkError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "too long"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        "contains '/', ':', NUL or whitespace"
    } else {
        return Ok(());
    };
    Err(NetlinkError::InvalidLinkName {
        name: name.to_owned(),
        why,
    })
}

/// How an `ifreq` names its link.
#[derive(Debug, Clone, Copy)]
enum IfReq<'a> {
    Name(&'a str),
    Index(u32),
}

impl Netlink {
    /// The index of link `name` in this socket's namespace, or `None` when there is no such
    /// link. Equals `ip link show NAME` (for the index).
    ///
    /// One `SIOCGIFINDEX` ioctl on this socket (the kernel resolves the name in the socket's
    /// namespace), not a netlink get: the kernel answers a get with the whole link,
    /// statistics and all, which a new process would have to parse for one number.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let Some(req) = self.link_ioctl(IfReq::Name(name), libc::SIOCGIFINDEX, "SIOCGIFINDEX")?
        else {
            return Ok(None);
        };
        // SAFETY: a successful SIOCGIFINDEX filled in the index member of the union.
        let idx = unsafe { req.ifr_ifru.ifru_ifindex };
        Ok(u32::try_from(idx).ok())
    }

    /// The name of link `index` in this socket's namespace, or `None` when there is no such
    /// link: one `SIOCGIFNAME` ioctl on this socket. Equals `ip link show` (for the name).
    pub fn name_of(&mut self, index: u32) -> Result<Option<String>, NetlinkError> {
        let Some(req) = self.link_ioctl(IfReq::Index(index), libc::SIOCGIFNAME, "SIOCGIFNAME")?
        else {
            return Ok(None);
        };
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Whether link `name` is administratively up (`IFF_UP`), or `None` when there is no such
    /// link. Equals the `UP` flag of `ip link show NAME`. One `SIOCGIFFLAGS` ioctl, like
    /// [`Netlink::index`].
    pub fn is_up(&mut self, name: &str) -> Result<Option<bool>, NetlinkError> {
        let Some(req) = self.link_ioctl(IfReq::Name(name), libc::SIOCGIFFLAGS, "SIOCGIFFLAGS")?
        else {
            return Ok(None);
        };
        // SAFETY: a successful SIOCGIFFLAGS filled in the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        Ok(Some(flags & libc::IFF_UP as libc::c_short != 0))
    }

    /// The MTU of link `name`, or `None` when there is no such link. Equals the `mtu` of
    /// `ip link show NAME`. One `SIOCGIFMTU` ioctl, like [`Netlink::index`].
    pub fn mtu(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let Some(req) = self.link_ioctl(IfReq::Name(name), libc::SIOCGIFMTU, "SIOCGIFMTU")? else {
            return Ok(None);
        };
        // SAFETY: a successful SIOCGIFMTU filled in the mtu member of the union.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        Ok(u32::try_from(mtu).ok())
    }

    /// The hardware (MAC) address of Ethernet link `name`, or `None` when there is no such
    /// link. Equals the `link/ether` of `ip link show NAME`. One `SIOCGIFHWADDR` ioctl.
    pub fn hwaddr(&mut self, name: &str) -> Result<Option<[u8; 6]>, NetlinkError> {
        let Some(req) = self.link_ioctl(IfReq::Name(name), libc::SIOCGIFHWADDR, "SIOCGIFHWADDR")?
        else {
            return Ok(None);
        };
        // SAFETY: a successful SIOCGIFHWADDR filled in the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(Some(mac))
    }

    /// One `ifreq` ioctl (`SIOCGIF*`) on this socket, for the link named or numbered by `link`
    /// (resolved in the socket's namespace): the filled-in request, or `None` when there is
    /// no such link.
    fn link_ioctl(
        &mut self,
        link: IfReq<'_>,
        request: libc::c_ulong,
        what: &'static str,
    ) -> Result<Option<libc::ifreq>, NetlinkError> {
        // SAFETY: `ifreq` is plain data (a name array and a union of integers and
        // addresses), valid when zeroed.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        match link {
            IfReq::Name(name) => {
                check_name(name)?;
                for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
                    *d = *s as libc::c_char;
                }
            }
            IfReq::Index(i) => req.ifr_ifru.ifru_ifindex = i as libc::c_int,
        }
        // SAFETY: a name is at most 15 bytes (checked above) in 16 zeroed ones, so it is
        // NUL-terminated; the SIOCGIF* requests read the name or index and write one member
        // of `req`, which outlives the call; the fd is this socket's, open for `self`'s life.
        let r = unsafe { libc::ioctl(self.socket.as_fd().as_raw_fd(), request, &mut req) };
        if r == 0 {
            return Ok(Some(req));
        }
        let source = std::io::Error::last_os_error();
        match source.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(NetlinkError::Request {
                op: match link {
                    IfReq::Name(name) => format!("show link {name}"),
                    IfReq::Index(i) => format!("show link with index {i}"),
                },
                source: SocketError::Io {
                    protocol: Protocol::Route,
                    step: what,
                    source,
                },
            }),
        }
    }

    /// Creates the veth pair `name` (in this socket's namespace) and `peer`, the peer made
    /// directly inside the namespace `peer_netns` (no move afterwards, so no moment where both
    /// ends share a namespace), both ends with MTU `mtu` (`None`: the kernel's default, 1500).
    /// Fails with `EEXIST` ([`NetlinkError::is_exists`]) when `name` exists. Equals
    /// `ip link add NAME mtu MTU type veth peer name PEER mtu MTU netns NS`.
    pub fn veth_add(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        check_name(name)?;
        check_name(peer)?;
        // The fd is only read by the kernel while it handles this request; `peer_netns`
        // borrows it for at least that long.
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_netns.as_raw_fd());
        let mut host = LinkVeth::new(name, peer);
        if let Some(m) = mtu {
            // why both: each end of a veth has its own MTU; the kernel gives the peer the
            // default, not the MTU of the end it is created with
            peer_msg = peer_msg.mtu(m);
            host = host.mtu(m);
        }
        let msg = host
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.change(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| {
                format!(
                    "add link {name}{} type veth peer name {peer} netns fd {}",
                    mtu.map(|m| format!(" mtu {m}")).unwrap_or_default(),
                    peer_netns.as_raw_fd()
                )
            },
        )?;
        tracing::debug!(link = name, peer, ?mtu, "veth pair added");
        Ok(())
    }

    /// Creates the veth pair `name` / `peer` inside this socket's namespace unless `name`
    /// exists, and returns `name`'s index. Neither end is set up. Equals `ip link add NAME type
    /// veth peer name PEER`.
    pub fn veth_pair_ensure(&mut self, name: &str, peer: &str) -> Result<u32, NetlinkError> {
        if let Some(i) = self.index(name)? {
            return Ok(i);
        }
        check_name(name)?;
        check_name(peer)?;
        let msg = LinkVeth::new(name, peer).build();
        match self.change(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add link {name} type veth peer name {peer}"),
        ) {
            Ok(()) => tracing::debug!(link = name, peer, "veth pair added"),
            // made by another program between the lookup and here
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e),
        }
        self.index(name)?.ok_or_else(|| NetlinkError::Vanished {
            what: format!("link {name}"),
        })
    }

    /// Sets link `index` administratively up. Equals `ip link set dev X up`.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.change(RouteNetlinkMessage::NewLink(msg), 0, &|| {
            format!("set link with index {index} up")
        })?;
        tracing::debug!(index, "link set up");
        Ok(())
    }

    /// Deletes link `name`: `Ok(true)` when deleted, `Ok(false)` when there was no such link.
    /// Deleting one end of a veth pair deletes both. Slow, since the kernel waits for an RCU
    /// grace period before it answers: dropping the job's namespace reaps its pair for free.
    /// Equals `ip link del NAME`.
    pub fn delete(&mut self, name: &str) -> Result<bool, NetlinkError> {
        let msg: LinkMessage = LinkUnspec::new_with_name(name).build();
        match self.change(RouteNetlinkMessage::DelLink(msg), 0, &|| {
            format!("delete link {name}")
        }) {
            Ok(()) => {
                tracing::debug!(link = name, "link deleted");
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads only (no root needed): `lo` has index 1 in every network namespace.
    #[test]
    fn index_finds_links_by_name_and_none_for_missing_ones() {
        let mut nl = Netlink::open().unwrap();
        assert_eq!(nl.index("lo").unwrap(), Some(1));
        assert_eq!(nl.name_of(1).unwrap().as_deref(), Some("lo"));
        assert_eq!(nl.name_of(u32::MAX >> 1).unwrap(), None);
        assert_eq!(nl.index("xn-missing0").unwrap(), None);
        // lo's MTU is 65536 unless someone changed it; any link has one above 0
        assert!(nl.mtu("lo").unwrap().is_some_and(|m| m > 0));
        assert_eq!(nl.mtu("xn-missing0").unwrap(), None);
        assert!(nl.is_up("lo").unwrap().is_some());
        assert_eq!(nl.is_up("xn-missing0").unwrap(), None);
        // names that no link can have are errors that say why, not a lookup
        for bad in ["lo\0x", "a-name-far-too-long-for-a-link", ""] {
            let e = nl.index(bad).unwrap_err();
            assert!(
                matches!(e, NetlinkError::InvalidLinkName { .. }),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn link_names_are_checked_like_the_kernel_does() {
        for good in ["eth0", "ve-j123456789ab", "lo"] {
            check_name(good).unwrap();
        }
        for bad in ["", ".", "..", "ve-j1234567890ab", "a/b", "a:b", "a b"] {
            let err = check_name(bad).unwrap_err();
            assert!(
                matches!(err, NetlinkError::InvalidLinkName { .. }),
                "{bad:?}"
            );
        }
    }
}

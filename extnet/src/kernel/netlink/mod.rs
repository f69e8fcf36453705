//! Routing objects of the kernel over one blocking `NETLINK_ROUTE` socket: [`link`], [`addr`],
//! [`neigh`], [`route`] and [`rule`], one module per object, each function named after the `ip` command it
//! equals; and [`monitor`], the kernel's notifications of their changes (`ip monitor`).
//!
//! Messages are built with `rtnetlink`'s builders (or `netlink-packet-route` directly) and read
//! back with `netlink-packet-route`; [`socket`] carries them to the kernel and back (sequence
//! numbers, ACKs, errors, dumps, the timeout), the same transport as nf_tables'. Every change
//! is answered by its ACK or error; a dump is read until `NLMSG_DONE`.
//!
//! A socket belongs to the network namespace it was opened in, for its whole life: open one per
//! namespace ([`Netlink::open`], [`Netlink::open_in`]).

pub mod addr;
pub mod link;
pub mod monitor;
pub mod neigh;
pub mod route;
pub mod rule;
pub mod socket;

pub use route::{Route, RouteKind};
pub use rule::FwmarkRule;
pub use socket::{Drained, Listener, Notification, Protocol, SocketError};

use std::os::fd::BorrowedFd;

use netlink_packet_core::ParseableParametrized;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use socket::Socket;

/// One blocking `NETLINK_ROUTE` socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
}

/// A failed netlink operation: what was asked (`op`, worded like the `ip` command), and why
/// (the errno, the kernel's extended-ACK message, what the admin can do).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened (in its namespace).
    #[error(transparent)]
    Open(SocketError),
    /// The kernel refused a request, or did not answer it in time.
    #[error("{op}: {source}")]
    Request { op: String, source: SocketError },
    #[error("invalid link name {name:?}: {why} (the kernel takes 1 to 15 bytes, no '/', ':' or whitespace)")]
    InvalidLinkName { name: String, why: &'static str },
    /// Something just made is gone again (another program deleted it).
    #[error("{what} vanished right after it was made; another program deletes it")]
    Vanished { what: String },
}

impl NetlinkError {
    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Open(e) | NetlinkError::Request { source: e, .. } => e.errno(),
            NetlinkError::InvalidLinkName { .. } | NetlinkError::Vanished { .. } => None,
        }
    }

    /// The object exists already (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }

    /// The object is not there. The kernel says so differently per object: `ENODEV` for links,
    /// `ESRCH` for routes, `ENOENT` for rules and tables, `EADDRNOTAVAIL` for addresses.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(Errno::ENODEV | Errno::ESRCH | Errno::ENOENT | Errno::EADDRNOTAVAIL)
        )
    }
}

/// Describes an operation for error messages; only called when something failed, so the happy
/// path formats nothing.
pub(crate) type Op<'a> = &'a dyn Fn() -> String;

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let socket = Socket::open(Protocol::Route, None).map_err(NetlinkError::Open)?;
        Ok(Netlink { socket })
    }

    /// Opens a socket inside the network namespace `netns`: enters it on the calling thread,
    /// opens the socket, and returns the thread to its original namespace, also on error. The
    /// socket stays in `netns` for its whole life.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Netlink, NetlinkError> {
        let socket = Socket::open(Protocol::Route, Some(netns)).map_err(NetlinkError::Open)?;
        Ok(Netlink { socket })
    }

    /// Sends a change request (`NLM_F_REQUEST|NLM_F_ACK|flags`) and waits for its ACK.
    pub(crate) fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: Op<'_>,
    ) -> Result<(), NetlinkError> {
        self.socket
            .request(&msg, flags, &mut |_| Ok(()))
            .map_err(|source| NetlinkError::Request { op: op(), source })
    }

    /// Sends a get request and returns the kernel's answer (the messages before the ACK).
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut out = Vec::new();
        self.socket
            .request(&msg, 0, &mut |m| {
                out.push(
                    RouteNetlinkMessage::parse_with_param(m.payload, m.msg_type)
                        .map_err(|e| e.to_string())?,
                );
                Ok(())
            })
            .map_err(|source| NetlinkError::Request { op: op(), source })?;
        Ok(out)
    }

    /// Sends a dump request and returns every message of the dump, read until `NLMSG_DONE`.
    /// A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is read again.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.socket
            .dump(&msg, |out: &mut Vec<RouteNetlinkMessage>, m| {
                let msg = RouteNetlinkMessage::parse_with_param(m.payload, m.msg_type)
                    .map_err(|e| e.to_string())?;
                out.push(msg);
                Ok(())
            })
            .map_err(|source| NetlinkError::Request { op: op(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_operation_errno_and_a_hint() {
        let kernel = |errno, message: Option<&str>| SocketError::Kernel {
            protocol: Protocol::Route,
            errno,
            message: message.map(Into::into),
        };
        let e = NetlinkError::Request {
            op: "replace route default via 10.99.0.254 table 7700".into(),
            source: kernel(Errno::ENETUNREACH, Some("Nexthop has invalid gateway")),
        };
        let text = e.to_string();
        assert!(text.starts_with("replace route default via 10.99.0.254 table 7700: ENETUNREACH"));
        assert!(text.contains("(kernel: Nexthop has invalid gateway)"));
        assert!(text.contains("hint: the gateway is not on a connected subnet"));
        assert!(!e.is_exists() && !e.is_not_found());
        let gone = NetlinkError::Request {
            op: "x".into(),
            source: kernel(Errno::ESRCH, None),
        };
        assert!(gone.is_not_found());
    }
}

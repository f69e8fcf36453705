//! Routing objects of the kernel over one blocking `NETLINK_ROUTE` socket: [`link`], [`addr`],
//! [`route`] and [`rule`], one module per object, each function named after the `ip` command it
//! equals.
//!
//! No async runtime and no threads: this runs in the prolog on the job's critical path, where a
//! whole per-job setup costs about a millisecond. Messages are built with `rtnetlink`'s builders
//! (or `netlink-packet-route` directly) and exchanged here: every request carries
//! `NLM_F_REQUEST|NLM_F_ACK` and is answered by the ACK or error with its own sequence number;
//! a dump is read until `NLMSG_DONE`, over as many datagrams as the kernel needs.
//!
//! A socket belongs to the network namespace it was opened in, for its whole life: open one per
//! namespace ([`Netlink::open`], [`Netlink::open_in`]).

pub mod addr;
pub mod link;
pub mod route;
pub mod rule;

pub use route::{Route, RouteKind};
pub use rule::FwmarkRule;

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use crate::kernel::netns::NetnsError;

/// Receive buffer. The kernel builds dump datagrams of at most 32 KiB (`netlink_dump` caps its
/// skb at `max_recvmsg_len`, itself capped at 32 KiB), so one datagram always fits; a larger
/// one is reported as an error rather than silently cut.
const RECV_BUF: usize = 64 * 1024;

/// A kernel that does not answer within this time is reported instead of hanging the prolog.
const RECV_TIMEOUT_SECS: i64 = 10;

/// A dump that changed while it was read (`NLM_F_DUMP_INTR`) is read again this many times.
const DUMP_ATTEMPTS: usize = 4;

/// `NLMSGERR_ATTR_MSG`: the extended-ACK attribute carrying the kernel's text message.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One blocking `NETLINK_ROUTE` socket bound to the network namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

/// A failed netlink operation: what was asked (`op`, worded like the `ip` command), the errno
/// and, when the kernel gave one, its extended-ACK message.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink route socket ({step}): {source}{}", hint(source.raw_os_error()))]
    Open {
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot open a netlink socket inside the network namespace: {0}")]
    Namespace(#[source] NetnsError),
    #[error("{op}: {errno}{}{}", kernel_msg(.message), hint(Some(*.errno as i32)))]
    Kernel {
        op: String,
        errno: Errno,
        message: Option<String>,
    },
    #[error("{op}: netlink socket {step} failed: {source}{}", hint(source.raw_os_error()))]
    Io {
        op: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("{op}: unexpected kernel reply: {detail}")]
    Protocol { op: String, detail: String },
    #[error("invalid link name {name:?}: {why} (the kernel takes 1 to 15 bytes, no '/', ':' or whitespace)")]
    InvalidLinkName { name: String, why: &'static str },
}

fn kernel_msg(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(" (kernel: {m})"),
        None => String::new(),
    }
}

/// The way out for the admin, by errno: said once here instead of at every call site.
fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "; hint: needs root (CAP_NET_ADMIN in the namespace's owning user namespace)"
        }
        Some(libc::EEXIST) => "; hint: an object with this key exists already",
        Some(libc::ENODEV) => "; hint: no such link (check `ip link`)",
        Some(libc::ENETUNREACH) => {
            "; hint: the gateway is not on a connected subnet: add the link's address and bring it up first"
        }
        Some(libc::EOPNOTSUPP) => {
            "; hint: the kernel lacks this feature (is the module loaded, e.g. `modprobe veth`?)"
        }
        Some(libc::EAGAIN) => "; hint: the kernel did not answer in time",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => "; hint: the kernel is short of memory",
        _ => "",
    }
}

impl NetlinkError {
    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Open { source, .. } | NetlinkError::Io { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
            NetlinkError::Namespace(_)
            | NetlinkError::Protocol { .. }
            | NetlinkError::InvalidLinkName { .. } => None,
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

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let open_err = |step| move |source| NetlinkError::Open { step, source };
        let socket = Socket::new(NETLINK_ROUTE).map_err(open_err("socket"))?;
        // Error replies carry only the request's header, not the whole request back (CAP_ACK),
        // plus the kernel's text message (EXT_ACK); both are optional comforts.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        // Strict checking lets dumps be filtered in the kernel (one table, one link) instead of
        // shipping the whole main table here. Kernels before 4.20 lack it; we filter again
        // on our side, so it stays optional.
        let _ = socket.set_netlink_get_strict_chk(true);
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| NetlinkError::Open {
                step: "set receive timeout",
                source: e.into(),
            })?;
        Ok(Netlink {
            socket,
            seq: 0,
            tx: Vec::with_capacity(1024),
            rx: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Opens a socket inside the network namespace `netns`: enters it on the calling thread,
    /// opens the socket, and returns the thread to its original namespace, also on error. The
    /// socket stays in `netns` for its whole life.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Netlink, NetlinkError> {
        crate::kernel::netns::run_in(netns, Netlink::open).map_err(NetlinkError::Namespace)?
    }

    /// Sends a change request (`NLM_F_REQUEST|NLM_F_ACK|flags`) and waits for its ACK.
    pub(crate) fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: Op<'_>,
    ) -> Result<(), NetlinkError> {
        self.exchange(msg, flags, op, &mut |_| {})
    }

    /// Sends a dump request and returns every message of the dump, read until `NLMSG_DONE`.
    /// A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is read again.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: Op<'_>,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut out = Vec::new();
            match self.exchange(msg.clone(), NLM_F_DUMP, op, &mut |m| out.push(m)) {
                Ok(()) => return Ok(out),
                Err(e) if e.errno() == Some(Errno::EINTR) => {
                    tracing::debug!(op = %op(), "netlink dump interrupted by a change; reading again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(NetlinkError::Kernel {
            op: op(),
            errno: Errno::EINTR,
            message: Some(format!(
                "dump interrupted by concurrent changes {DUMP_ATTEMPTS} times"
            )),
        })
    }

    /// One request and its whole answer. Dumps (`NLM_F_DUMP`) end with `NLMSG_DONE`, anything
    /// else with the ACK; both carry the request's sequence number, and messages with any other
    /// sequence number (leftovers of an earlier request) are skipped. Even after a failure the
    /// answer is read to its end, so the socket stays usable for the next request.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: Op<'_>,
        on_msg: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        // Dumps are not ACKed: the kernel answers a started dump with NLMSG_DONE, and a dump
        // that could not start with an error message.
        let flags = NLM_F_REQUEST | flags | if is_dump { 0 } else { NLM_F_ACK };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;

        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        self.tx.clear();
        self.tx.resize(req.buffer_len(), 0);
        req.serialize(&mut self.tx);

        let kernel = SocketAddr::new(0, 0);
        loop {
            match self.socket.send_to(&self.tx, &kernel, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Io {
                        op: op(),
                        step: "send",
                        source,
                    })
                }
            }
        }

        let mut first_err: Option<NetlinkError> = None;
        let mut interrupted = false;
        loop {
            self.rx.clear();
            let len = match self.socket.recv(&mut self.rx, libc::MSG_TRUNC) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(NetlinkError::Io {
                        op: op(),
                        step: "receive",
                        source,
                    })
                }
            };
            if len > self.rx.len() {
                return Err(NetlinkError::Protocol {
                    op: op(),
                    detail: format!("datagram of {len} bytes exceeds the {RECV_BUF}-byte buffer"),
                });
            }

            let mut off = 0;
            while off < len {
                let buf = &self.rx[off..len];
                let nl = NetlinkBuffer::new_checked(buf).map_err(|e| NetlinkError::Protocol {
                    op: op(),
                    detail: format!("bad netlink header: {e}"),
                })?;
                let msg_len = nl.length() as usize;
                let msg_seq = nl.sequence_number();
                let msg_flags = nl.flags();
                // NLMSG_ALIGN: messages in one datagram start on 4-byte boundaries.
                off += (msg_len + 3) & !3;
                if msg_seq != seq {
                    tracing::debug!(
                        msg_seq,
                        seq,
                        "skipping a netlink message of another request"
                    );
                    continue;
                }
                if msg_flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..msg_len]);
                let payload = match parsed {
                    Ok(m) => m.payload,
                    Err(e) => {
                        first_err.get_or_insert(NetlinkError::Protocol {
                            op: op(),
                            detail: format!("cannot decode message: {e}"),
                        });
                        continue;
                    }
                };
                match payload {
                    NetlinkPayload::InnerMessage(inner) => on_msg(inner),
                    NetlinkPayload::Error(err) => {
                        // An ACK (code 0) or a NACK; either ends the exchange.
                        if let Some(code) = err.code {
                            let message = ext_ack_message(&err.header, msg_flags, true);
                            return Err(first_err.unwrap_or(NetlinkError::Kernel {
                                op: op(),
                                errno: Errno::from_raw(-code.get()),
                                message,
                            }));
                        }
                        if !is_dump {
                            return first_err.map_or(Ok(()), Err);
                        }
                    }
                    NetlinkPayload::Done(done) => {
                        if done.code < 0 {
                            let message = ext_ack_message(&done.extended_ack, msg_flags, false);
                            return Err(first_err.unwrap_or(NetlinkError::Kernel {
                                op: op(),
                                errno: Errno::from_raw(-done.code),
                                message,
                            }));
                        }
                        if let Some(e) = first_err {
                            return Err(e);
                        }
                        if interrupted {
                            return Err(NetlinkError::Kernel {
                                op: op(),
                                errno: Errno::EINTR,
                                message: None,
                            });
                        }
                        return Ok(());
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::Protocol {
                            op: op(),
                            detail: "kernel reported a buffer overrun".into(),
                        });
                    }
                    _ => {} // NLMSG_NOOP and whatever later versions add
                }
            }
        }
    }
}

/// The kernel's text from an extended ACK: after the error code come the request's header
/// (only the header with `NLM_F_CAPPED`, else the whole request: `with_request`), then, with
/// `NLM_F_ACK_TLVS`, attributes of which `NLMSGERR_ATTR_MSG` is the text.
fn ext_ack_message(data: &[u8], flags: u16, with_request: bool) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let mut off = 0;
    if with_request {
        const NLMSG_HDRLEN: usize = 16;
        off = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            let len = u32::from_ne_bytes(data.get(..4)?.try_into().ok()?) as usize;
            (len + 3) & !3
        };
    }
    while off + 4 <= data.len() {
        let nla_len = u16::from_ne_bytes([data[off], data[off + 1]]) as usize;
        let nla_type = u16::from_ne_bytes([data[off + 2], data[off + 3]]) & 0x3fff;
        if nla_len < 4 || off + nla_len > data.len() {
            return None;
        }
        if nla_type == NLMSGERR_ATTR_MSG {
            let text = &data[off + 4..off + nla_len];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        off += (nla_len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut data = vec![0u8; 16];
        let text = b"Nexthop has invalid gateway\0";
        let nla_len = (4 + text.len()) as u16;
        data.extend_from_slice(&nla_len.to_ne_bytes());
        data.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        data.extend_from_slice(text);
        let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
        assert_eq!(
            ext_ack_message(&data, flags, true).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        assert_eq!(ext_ack_message(&data, NLM_F_CAPPED, true), None);
        assert_eq!(
            ext_ack_message(&data[16..], NLM_F_ACK_TLVS, false).as_deref(),
            Some("Nexthop has invalid gateway")
        );
    }

    #[test]
    fn errors_name_the_operation_errno_and_a_hint() {
        let e = NetlinkError::Kernel {
            op: "replace route default via 10.99.0.254 table 7700".into(),
            errno: Errno::ENETUNREACH,
            message: Some("Nexthop has invalid gateway".into()),
        };
        let text = e.to_string();
        assert!(text.starts_with("replace route default via 10.99.0.254 table 7700: ENETUNREACH"));
        assert!(text.contains("(kernel: Nexthop has invalid gateway)"));
        assert!(text.contains("hint: the gateway is not on a connected subnet"));
        assert!(!e.is_exists() && !e.is_not_found());
        let gone = NetlinkError::Kernel {
            op: "x".into(),
            errno: Errno::ESRCH,
            message: None,
        };
        assert!(gone.is_not_found());
    }
}

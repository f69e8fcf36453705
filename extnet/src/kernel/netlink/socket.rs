//! One blocking netlink socket: the transport under rtnetlink ([`super::Netlink`]) and
//! nf_tables ([`crate::kernel::nftables::netlink::NfSocket`]), which keep only the building
//! and reading of their own messages.
//!
//! A `Socket` opens a socket of a [`Protocol`], in the calling thread's network namespace or
//! in a given one; numbers the requests; sends one request, or several in one datagram (an
//! nf_tables batch); reads the answer until its ACK, error or `NLMSG_DONE`, with a timeout;
//! reads the kernel's error code and extended-ACK text; and says once, by protocol and errno,
//! what the admin can do (in [`SocketError`]'s message).
//!
//! Answers are matched by sequence number: a message with another one (the rest of an answer
//! given up on earlier) is skipped. Even after a failure an answer is read to its end, so the
//! socket stays usable for the next request.
//!
//! No async runtime and no threads: the prolog, the epilog and the SPANK plugin (in
//! slurmstepd's forked processes) call this directly and wait for the kernel's answer.
//!
//! A socket belongs to the network namespace it was opened in, for its whole life.
//!
//! A [`Listener`] is the other direction: a socket subscribed to some of the kernel's multicast
//! groups, which the kernel sends a message for every change of the objects of those groups
//! (what `ip monitor` and `nft monitor` print). It never waits by itself: its owner polls its
//! descriptor and [`Listener::drain`]s what is queued.

use std::fmt;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{
    Emitable, NetlinkBuffer, NetlinkHeader, NetlinkSerializable, NLMSG_DONE, NLMSG_ERROR,
    NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_sys::protocols::{NETLINK_NETFILTER, NETLINK_ROUTE};
use netlink_sys::SocketAddr;
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

/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;

/// `NLMSG_ALIGN`: messages in one datagram start on 4-byte boundaries.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The netlink protocol of a socket. It also picks the hints of its errors: one errno means
/// different things to rtnetlink and to nf_tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `NETLINK_ROUTE`: links, addresses, routes, rules.
    Route,
    /// `NETLINK_NETFILTER`: nf_tables.
    Netfilter,
}

impl Protocol {
    fn number(self) -> isize {
        match self {
            Protocol::Route => NETLINK_ROUTE,
            Protocol::Netfilter => NETLINK_NETFILTER,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Route => "route",
            Protocol::Netfilter => "netfilter",
        })
    }
}

/// A failed exchange with the kernel. It does not name the request: the protocol's own error
/// ([`super::NetlinkError`], [`crate::kernel::nftables::netlink::NfnlError`]) says what was
/// asked and of which object.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot open a netlink {protocol} socket ({step}): {source}{}", hint(*protocol, source.raw_os_error()))]
    Open {
        protocol: Protocol,
        step: &'static str,
        source: io::Error,
    },
    #[error("cannot open a netlink {protocol} socket inside the network namespace: {source}")]
    Namespace {
        protocol: Protocol,
        /// Boxed: a rare error, kept out of the size of every `Result` that carries this type.
        source: Box<NetnsError>,
    },
    /// The kernel refused the request: its errno and, when it gave one, its extended-ACK text.
    #[error("{errno}{}{}", kernel_msg(.message), hint(*protocol, Some(*errno as i32)))]
    Kernel {
        protocol: Protocol,
        errno: Errno,
        message: Option<String>,
    },
    /// A send, receive or ioctl on the socket failed (`EAGAIN`: no answer in time).
    #[error("netlink socket {step} failed: {source}{}", hint(*protocol, source.raw_os_error()))]
    Io {
        protocol: Protocol,
        step: &'static str,
        source: io::Error,
    },
    /// An answer that does not read as netlink, or as the message it should be.
    #[error("unexpected kernel reply: {detail}")]
    Malformed { detail: String },
}

fn kernel_msg(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(" (kernel: {m})"),
        None => String::new(),
    }
}

/// The way out for the admin, by protocol and errno: said once here instead of at every call
/// site.
fn hint(protocol: Protocol, errno: Option<i32>) -> &'static str {
    use Protocol::{Netfilter, Route};
    let Some(errno) = errno else {
        return "";
    };
    match (protocol, errno) {
        (_, libc::EPERM | libc::EACCES) => {
            "; hint: needs root (CAP_NET_ADMIN in the user namespace that owns the network namespace)"
        }
        (_, libc::EAGAIN) => "; hint: the kernel did not answer in time",
        (_, libc::ENOBUFS | libc::ENOMEM) => "; hint: the kernel is short of memory",
        (_, libc::EPROTONOSUPPORT) => {
            "; hint: the kernel lacks this netlink protocol (for nf_tables: `modprobe nf_tables`)"
        }
        (Route, libc::EEXIST) => "; hint: an object with this key exists already",
        (Route, libc::ENODEV) => "; hint: no such link (check `ip link`)",
        (Route, libc::ENETUNREACH) => {
            "; hint: the gateway is not on a connected subnet: add the link's address and bring it up first"
        }
        (Route, libc::EOPNOTSUPP) => {
            "; hint: the kernel lacks this feature (is the module loaded, e.g. `modprobe veth`?)"
        }
        (Netfilter, libc::EEXIST | libc::EBUSY) => {
            "; hint: another element holds the key (an extnet command running at the same time?); try again"
        }
        (Netfilter, libc::EOPNOTSUPP | libc::EINVAL | libc::EAFNOSUPPORT) => {
            "; hint: the kernel refused the request: extnet needs Linux 4.20 or later with nf_tables"
        }
        (Netfilter, libc::ENFILE) => "; hint: the set or map is full (its `size`)",
        _ => "",
    }
}

impl SocketError {
    /// The errno behind this error, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SocketError::Kernel { errno, .. } => Some(*errno),
            SocketError::Open { source, .. } | SocketError::Io { source, .. } => {
                source.raw_os_error().map(Errno::from_raw)
            }
            SocketError::Namespace { .. } | SocketError::Malformed { .. } => None,
        }
    }
}

/// For callers whose errors carry an `io::Error`: the errno stays readable (`raw_os_error`);
/// the kernel's extended-ACK text does not survive.
impl From<SocketError> for io::Error {
    fn from(e: SocketError) -> io::Error {
        match e {
            SocketError::Kernel { errno, .. } => io::Error::from_raw_os_error(errno as i32),
            SocketError::Open { source, .. } | SocketError::Io { source, .. } => source,
            e @ (SocketError::Namespace { .. } | SocketError::Malformed { .. }) => {
                io::Error::other(e)
            }
        }
    }
}

/// One message of an answer: its header's type, flags and sequence number, and its payload
/// (after the `nlmsghdr`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

impl Reply<'_> {
    /// The code of an `NLMSG_ERROR` or `NLMSG_DONE` message: 0 or a negative errno.
    fn code(&self) -> Option<i32> {
        Some(i32::from_ne_bytes(self.payload.get(..4)?.try_into().ok()?))
    }
}

/// The messages of one datagram, in order; a message cut short ends them with an error.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Reply<'a>, SocketError>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf: &'a [u8] = self.0;
        if buf.is_empty() {
            return None;
        }
        let header = match NetlinkBuffer::new_checked(buf) {
            Ok(h) => h,
            Err(e) => {
                self.0 = &[];
                return Some(Err(SocketError::Malformed {
                    detail: format!("bad netlink header: {e}"),
                }));
            }
        };
        let len = header.length() as usize;
        self.0 = &buf[align(len).min(buf.len())..];
        Some(Ok(Reply {
            msg_type: header.message_type(),
            flags: header.flags(),
            seq: header.sequence_number(),
            payload: &buf[NLMSG_HDRLEN..len],
        }))
    }
}

/// Appends one message to `out`, on a 4-byte boundary: the `nlmsghdr` (length, type,
/// `NLM_F_REQUEST|flags`, `seq`, port 0: the kernel), then `msg`.
pub(crate) fn encode(out: &mut Vec<u8>, msg: &dyn NetlinkSerializable, flags: u16, seq: u32) {
    let start = align(out.len());
    let len = NLMSG_HDRLEN + msg.buffer_len();
    out.resize(start + len, 0);
    let mut header = NetlinkHeader::default();
    header.length = len as u32;
    header.message_type = msg.message_type();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = seq;
    header.emit(&mut out[start..start + NLMSG_HDRLEN]);
    msg.serialize(&mut out[start + NLMSG_HDRLEN..]);
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
        off = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            let len = u32::from_ne_bytes(data.get(..4)?.try_into().ok()?) as usize;
            align(len)
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
        off += align(nla_len);
    }
    None
}

/// The kernel's refusal in an `NLMSG_ERROR` (`in_error`) or `NLMSG_DONE` message with `code`.
fn refusal(protocol: Protocol, m: &Reply<'_>, code: i32, in_error: bool) -> SocketError {
    SocketError::Kernel {
        protocol,
        errno: Errno::from_raw(-code),
        message: ext_ack_message(m.payload.get(4..).unwrap_or_default(), m.flags, in_error),
    }
}

/// Runs `call` again while a signal interrupts it; its error is the failed `step`.
fn retry<T>(
    protocol: Protocol,
    step: &'static str,
    mut call: impl FnMut() -> io::Result<T>,
) -> Result<T, SocketError> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            done => {
                return done.map_err(|source| SocketError::Io {
                    protocol,
                    step,
                    source,
                })
            }
        }
    }
}

/// Hands each message of one answer to the caller and says when it ended.
struct Answer {
    protocol: Protocol,
    seq: u32,
    dump: bool,
    /// The dump changed while it was read (`NLM_F_DUMP_INTR` on one of its messages).
    interrupted: bool,
    /// The first message the caller could not read; reported once the answer has ended.
    failed: Option<SocketError>,
}

impl Answer {
    /// Takes one message. `Break` with the outcome when it ends the answer: the ACK or error of
    /// a request, the `NLMSG_DONE` of a dump (or an error that stopped it).
    fn take(
        &mut self,
        m: Reply<'_>,
        on_reply: &mut dyn FnMut(Reply<'_>) -> Result<(), String>,
    ) -> ControlFlow<Result<(), SocketError>> {
        if m.seq != self.seq {
            tracing::debug!(
                msg_seq = m.seq,
                seq = self.seq,
                "skipping a netlink message of another request"
            );
            return ControlFlow::Continue(());
        }
        self.interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
        let outcome = match m.msg_type {
            NLMSG_ERROR => match m.code() {
                None => Err(SocketError::Malformed {
                    detail: "error message without its code".into(),
                }),
                Some(0) if self.dump => return ControlFlow::Continue(()),
                Some(0) => Ok(()),
                Some(code) => Err(refusal(self.protocol, &m, code, true)),
            },
            NLMSG_DONE => match m.code().unwrap_or(0) {
                code if code < 0 => Err(refusal(self.protocol, &m, code, false)),
                _ if self.interrupted => Err(SocketError::Kernel {
                    protocol: self.protocol,
                    errno: Errno::EINTR,
                    message: None,
                }),
                _ => Ok(()),
            },
            NLMSG_OVERRUN => Err(SocketError::Malformed {
                detail: "kernel reported a buffer overrun".into(),
            }),
            NLMSG_NOOP => return ControlFlow::Continue(()),
            _ => {
                if let Err(detail) = on_reply(m) {
                    self.failed.get_or_insert(SocketError::Malformed {
                        detail: format!("cannot decode message: {detail}"),
                    });
                }
                return ControlFlow::Continue(());
            }
        };
        // A message the caller could not read is the first thing that went wrong.
        ControlFlow::Break(match self.failed.take() {
            Some(e) => Err(e),
            None => outcome,
        })
    }
}

/// One blocking netlink socket of one protocol, bound to the network namespace it was opened
/// in.
pub(crate) struct Socket {
    socket: netlink_sys::Socket,
    protocol: Protocol,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("protocol", &self.protocol)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The socket's descriptor, for requests that are not netlink messages (an interface ioctl).
impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Socket {
    /// Opens a socket of `protocol` in the calling thread's network namespace, or inside
    /// `netns`: the thread enters it, opens the socket and returns to its own namespace, also
    /// on error. The socket stays in the namespace it was opened in.
    pub(crate) fn open(
        protocol: Protocol,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<Socket, SocketError> {
        match netns {
            None => Socket::open_here(protocol),
            Some(ns) => crate::kernel::netns::run_in(ns, || Socket::open_here(protocol)).map_err(
                |source| SocketError::Namespace {
                    protocol,
                    source: Box::new(source),
                },
            )?,
        }
    }

    fn open_here(protocol: Protocol) -> Result<Socket, SocketError> {
        let open_err = |step| {
            move |source| SocketError::Open {
                protocol,
                step,
                source,
            }
        };
        let socket = netlink_sys::Socket::new(protocol.number()).map_err(open_err("socket"))?;
        // Error replies carry only the request's header, not the whole request back (CAP_ACK),
        // plus the kernel's text message (EXT_ACK); both are optional comforts.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        if protocol == Protocol::Route {
            // Strict checking lets dumps be filtered in the kernel (one table, one link)
            // instead of shipping the whole main table here. Kernels before 4.20 lack it; the
            // callers filter again, so it stays optional.
            let _ = socket.set_netlink_get_strict_chk(true);
        }
        let timeout = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| open_err("set receive timeout")(e.into()))?;
        // Connected to the kernel (port 0): the socket takes datagrams from the kernel only,
        // and connecting binds it to a port the kernel picks.
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(open_err("connect"))?;
        Ok(Socket {
            socket,
            protocol,
            seq: 0,
            tx: Vec::with_capacity(1024),
            rx: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` with `NLM_F_REQUEST|NLM_F_ACK|flags` and hands each message of the answer
    /// to `on_reply` until the ACK (a get's object comes before it). Errors: the kernel's
    /// refusal, no answer in time, or a message `on_reply` could not read (its text).
    pub(crate) fn request(
        &mut self,
        msg: &dyn NetlinkSerializable,
        flags: u16,
        on_reply: &mut dyn FnMut(Reply<'_>) -> Result<(), String>,
    ) -> Result<(), SocketError> {
        let seq = self.send(&[(msg, NLM_F_ACK | flags)])?;
        self.answer(seq, false, on_reply)
    }

    /// Sends `msg` as a dump request (`NLM_F_REQUEST|NLM_F_DUMP`) and folds every message of
    /// the dump into a `T`, read until `NLMSG_DONE` over as many datagrams as the kernel
    /// needs. A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is read again into
    /// a new `T`.
    pub(crate) fn dump<T: Default>(
        &mut self,
        msg: &dyn NetlinkSerializable,
        mut fold: impl FnMut(&mut T, Reply<'_>) -> Result<(), String>,
    ) -> Result<T, SocketError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut out = T::default();
            // Dumps are not ACKed: the kernel answers a started dump with NLMSG_DONE, and a
            // dump that could not start with an error message.
            let seq = self.send(&[(msg, NLM_F_DUMP)])?;
            let read = self.answer(seq, true, &mut |m| fold(&mut out, m));
            match read {
                Ok(()) => return Ok(out),
                Err(e) if e.errno() == Some(Errno::EINTR) => {
                    tracing::debug!(
                        protocol = %self.protocol,
                        "netlink dump interrupted by a change; reading again"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(SocketError::Kernel {
            protocol: self.protocol,
            errno: Errno::EINTR,
            message: Some(format!(
                "dump interrupted by concurrent changes {DUMP_ATTEMPTS} times"
            )),
        })
    }

    /// Sends `msgs` (message, flags) in one datagram, each with `NLM_F_REQUEST` and its own
    /// sequence number, and waits for the answer of each that asks for one (`NLM_F_ACK`).
    /// Fails with the error of the first of those (in order) the kernel refused. A refusal of
    /// a message that asked for no answer (the frame of an nfnetlink batch: no permission, no
    /// such subsystem) fails the whole at once.
    pub(crate) fn batch(
        &mut self,
        msgs: &[(&dyn NetlinkSerializable, u16)],
    ) -> Result<(), SocketError> {
        let first = self.send(msgs)?;
        let mut waiting: Vec<bool> = msgs.iter().map(|(_, f)| f & NLM_F_ACK != 0).collect();
        let mut refused: Option<(usize, SocketError)> = None;
        while waiting.contains(&true) {
            let len = self.recv()?;
            for m in Messages(&self.rx[..len]) {
                let m = m?;
                let i = m.seq.wrapping_sub(first) as usize;
                if m.msg_type != NLMSG_ERROR || i >= msgs.len() {
                    continue; // not an answer to this batch
                }
                waiting[i] = false;
                let code = m.code().unwrap_or(-libc::EPROTO);
                if code == 0 {
                    continue;
                }
                let e = refusal(self.protocol, &m, code, true);
                if msgs[i].1 & NLM_F_ACK == 0 {
                    return Err(e);
                }
                if refused.as_ref().is_none_or(|(j, _)| i < *j) {
                    refused = Some((i, e));
                }
            }
        }
        refused.map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Numbers and sends `msgs` in one datagram; returns the sequence number of the first (the
    /// others follow it one by one).
    fn send(&mut self, msgs: &[(&dyn NetlinkSerializable, u16)]) -> Result<u32, SocketError> {
        let first = self.seq.wrapping_add(1);
        self.tx.clear();
        for (msg, flags) in msgs {
            self.seq = self.seq.wrapping_add(1);
            encode(&mut self.tx, *msg, *flags, self.seq);
        }
        let (socket, tx) = (&self.socket, &self.tx);
        retry(self.protocol, "send", || socket.send(tx, 0))?;
        Ok(first)
    }

    /// Receives one datagram into the receive buffer; returns its length.
    fn recv(&mut self) -> Result<usize, SocketError> {
        let (socket, rx) = (&self.socket, &mut self.rx);
        let len = retry(self.protocol, "receive", || {
            rx.clear();
            socket.recv(rx, libc::MSG_TRUNC)
        })?;
        if len > self.rx.len() {
            return Err(SocketError::Malformed {
                detail: format!("datagram of {len} bytes exceeds the {RECV_BUF}-byte buffer"),
            });
        }
        Ok(len)
    }

    /// Reads the answer to the request (or dump) `seq` to its end.
    fn answer(
        &mut self,
        seq: u32,
        dump: bool,
        on_reply: &mut dyn FnMut(Reply<'_>) -> Result<(), String>,
    ) -> Result<(), SocketError> {
        let mut answer = Answer {
            protocol: self.protocol,
            seq,
            dump,
            interrupted: false,
            failed: None,
        };
        loop {
            let len = self.recv()?;
            for m in Messages(&self.rx[..len]) {
                if let ControlFlow::Break(outcome) = answer.take(m?, on_reply) {
                    return outcome;
                }
            }
        }
    }
}

/// How much the kernel may queue for a [`Listener`] before it drops notifications and reports
/// `ENOBUFS`: a reload of the node's table notifies every one of its objects.
const LISTEN_BUF: usize = 4 << 20;

/// One message the kernel multicast to a [`Listener`]: its type and its payload (after the
/// `nlmsghdr`).
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub msg_type: u16,
    pub payload: &'a [u8],
}

/// What one [`Listener::drain`] read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Notifications handed to the caller.
    pub messages: usize,
    /// The kernel dropped notifications since the last read (its queue for this socket was
    /// full: `ENOBUFS`): whatever they said is unknown, so the caller must look at the state
    /// itself.
    pub overrun: bool,
    /// `limit` datagrams were read and more may be queued.
    pub more: bool,
}

/// A netlink socket subscribed to multicast groups of the kernel: it receives a notification
/// for every change of the objects of those groups, made by anyone in its network namespace.
/// Non-blocking: its owner polls [`AsFd::as_fd`] for `POLLIN` and then calls
/// [`Listener::drain`].
pub struct Listener {
    socket: netlink_sys::Socket,
    protocol: Protocol,
    rx: Vec<u8>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Listener {
    /// Opens a socket of `protocol` in the calling thread's network namespace, bound to a port
    /// the kernel picks, and subscribes it to `groups` (the kernel's group numbers:
    /// `RTNLGRP_*`, `NFNLGRP_*`). Its receive queue is [`LISTEN_BUF`] when the caller may
    /// raise it (`CAP_NET_ADMIN`), else the system's maximum.
    pub(crate) fn open(protocol: Protocol, groups: &[u32]) -> Result<Listener, SocketError> {
        let open_err = |step| {
            move |source| SocketError::Open {
                protocol,
                step,
                source,
            }
        };
        let mut socket = netlink_sys::Socket::new(protocol.number()).map_err(open_err("socket"))?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .map_err(open_err("bind"))?;
        // a burst larger than the queue is not an error: the caller learns of it (`overrun`)
        // and looks at the state itself
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &LISTEN_BUF).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &LISTEN_BUF);
        }
        for &group in groups {
            socket
                .add_membership(group)
                .map_err(open_err("join a multicast group"))?;
        }
        Ok(Listener {
            socket,
            protocol,
            rx: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Reads what the kernel has queued, at most `limit` datagrams, without waiting, and hands
    /// each notification to `on_msg` (control messages of the protocol are skipped).
    /// Notifications the kernel dropped (`ENOBUFS`), or a datagram too large for the buffer,
    /// set [`Drained::overrun`]; reading goes on after them.
    pub fn drain(
        &mut self,
        limit: usize,
        on_msg: &mut dyn FnMut(Notification<'_>),
    ) -> Result<Drained, SocketError> {
        let mut out = Drained::default();
        for _ in 0..limit {
            self.rx.clear();
            let len = match self
                .socket
                .recv(&mut self.rx, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
            {
                Ok(len) => len,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(out),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        out.overrun = true;
                        continue;
                    }
                    _ => {
                        return Err(SocketError::Io {
                            protocol: self.protocol,
                            step: "receive a notification",
                            source: e,
                        })
                    }
                },
            };
            if len > self.rx.len() {
                out.overrun = true; // cut short: what it said is lost
                continue;
            }
            for m in Messages(&self.rx[..len]) {
                let Ok(m) = m else {
                    out.overrun = true;
                    break;
                };
                if matches!(
                    m.msg_type,
                    NLMSG_NOOP | NLMSG_ERROR | NLMSG_DONE | NLMSG_OVERRUN
                ) {
                    continue;
                }
                out.messages += 1;
                on_msg(Notification {
                    msg_type: m.msg_type,
                    payload: m.payload,
                });
            }
        }
        out.more = true;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` message answering `seq` with `code`, echoing a capped header.
    fn error_message(seq: u32, code: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + tlvs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        m.extend_from_slice(tlvs);
        m
    }

    fn msg_tlv(text: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        t.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        t.extend_from_slice(text);
        t.resize(align(t.len()), 0);
        t
    }

    fn answer(seq: u32, dump: bool) -> Answer {
        Answer {
            protocol: Protocol::Netfilter,
            seq,
            dump,
            interrupted: false,
            failed: None,
        }
    }

    #[test]
    fn ext_ack_text_is_found_after_a_capped_header() {
        let mut data = vec![0u8; 16];
        data.extend(msg_tlv(b"Nexthop has invalid gateway\0"));
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
    fn answers_are_split_and_errors_read() {
        // an ACK and an ENOENT error (with the kernel's text) in one datagram
        let mut buf = error_message(3, 0, 0, &[]);
        let text = msg_tlv(b"no such set\0");
        buf.extend(error_message(
            4,
            -libc::ENOENT,
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &text,
        ));
        let m: Vec<_> = Messages(&buf).map(Result::unwrap).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].seq, m[0].msg_type, m[0].code()),
            (3, NLMSG_ERROR, Some(0))
        );
        assert_eq!((m[1].seq, m[1].code()), (4, Some(-libc::ENOENT)));

        let mut nothing = |_: Reply<'_>| -> Result<(), String> { panic!("no data expected") };
        // the request numbered 4: the ACK of 3 is skipped, the error ends it
        let mut a = answer(4, false);
        assert!(a.take(m[0], &mut nothing).is_continue());
        let ControlFlow::Break(Err(e)) = a.take(m[1], &mut nothing) else {
            panic!("the error ends the answer");
        };
        assert_eq!(e.errno(), Some(Errno::ENOENT));
        assert_eq!(
            e.to_string(),
            "ENOENT: No such file or directory (kernel: no such set)"
        );
        // the request numbered 3 ends with its ACK
        let mut a = answer(3, false);
        assert!(matches!(
            a.take(m[0], &mut nothing),
            ControlFlow::Break(Ok(()))
        ));

        let cut = &buf[..buf.len() - 4];
        let m: Vec<_> = Messages(cut).collect();
        assert!(
            m[0].is_ok() && m[1].is_err(),
            "a truncated message is an error"
        );
    }

    #[test]
    fn a_dump_ends_with_done_and_reports_what_could_not_be_read() {
        let data = |seq: u32, flags: u16| {
            let mut m = Vec::new();
            encode(&mut m, &Raw(0x10, vec![1, 2, 3, 4]), flags, seq);
            m
        };
        let mut done = Vec::new();
        encode(
            &mut done,
            &Raw(NLMSG_DONE, 0i32.to_ne_bytes().to_vec()),
            0,
            9,
        );
        let (first, intr, done) = (data(9, 0), data(9, NLM_F_DUMP_INTR), done);

        let mut seen = 0;
        let mut count = |_: Reply<'_>| -> Result<(), String> {
            seen += 1;
            Ok(())
        };
        let mut a = answer(9, true);
        assert!(a.take(read(&first), &mut count).is_continue());
        assert!(matches!(
            a.take(read(&done), &mut count),
            ControlFlow::Break(Ok(()))
        ));
        assert_eq!(seen, 1);

        // a dump that changed while it was read ends with EINTR, to be read again
        let mut a = answer(9, true);
        assert!(a.take(read(&intr), &mut |_| Ok(())).is_continue());
        let ControlFlow::Break(Err(e)) = a.take(read(&done), &mut |_| Ok(())) else {
            panic!("an interrupted dump is an error");
        };
        assert_eq!(e.errno(), Some(Errno::EINTR));

        // a message the caller cannot read is reported, after the dump's end
        let mut a = answer(9, true);
        let mut refuse = |_: Reply<'_>| -> Result<(), String> { Err("bad attribute".into()) };
        assert!(a.take(read(&first), &mut refuse).is_continue());
        let ControlFlow::Break(Err(e)) = a.take(read(&done), &mut refuse) else {
            panic!("an unreadable message is an error");
        };
        assert_eq!(
            e.to_string(),
            "unexpected kernel reply: cannot decode message: bad attribute"
        );
    }

    fn read(bytes: &[u8]) -> Reply<'_> {
        Messages(bytes).next().unwrap().unwrap()
    }

    /// A message of type `.0` with payload `.1`.
    struct Raw(u16, Vec<u8>);

    impl NetlinkSerializable for Raw {
        fn message_type(&self) -> u16 {
            self.0
        }
        fn buffer_len(&self) -> usize {
            self.1.len()
        }
        fn serialize(&self, buffer: &mut [u8]) {
            buffer.copy_from_slice(&self.1);
        }
    }

    #[test]
    fn messages_are_encoded_with_their_header_on_4_byte_boundaries() {
        let mut out = Vec::new();
        encode(&mut out, &Raw(0x10, vec![7; 5]), 0, 1);
        encode(&mut out, &Raw(0x0a0c, vec![8; 4]), NLM_F_ACK, 2);
        assert_eq!(
            out.len(),
            24 + 20,
            "the first message is padded to 24 bytes"
        );
        assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 21);
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 0x10);
        assert_eq!(u16::from_ne_bytes([out[6], out[7]]), NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 1);
        assert_eq!(&out[16..21], &[7; 5]);
        let m: Vec<_> = Messages(&out).map(Result::unwrap).collect();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[1].msg_type, m[1].flags, m[1].seq, m[1].payload),
            (0x0a0c, NLM_F_REQUEST | NLM_F_ACK, 2, &[8u8; 4][..])
        );
    }

    #[test]
    fn hints_depend_on_the_protocol() {
        let (route, nf) = (Protocol::Route, Protocol::Netfilter);
        assert!(hint(route, Some(libc::EEXIST)).contains("exists already"));
        assert!(hint(nf, Some(libc::EEXIST)).contains("another element holds the key"));
        assert_eq!(hint(route, Some(libc::EPERM)), hint(nf, Some(libc::EPERM)));
        assert!(hint(route, Some(libc::EPERM)).contains("CAP_NET_ADMIN"));
        assert_eq!(hint(nf, Some(libc::ENOENT)), "");
        assert_eq!(hint(nf, None), "");
        let e = SocketError::Io {
            protocol: nf,
            step: "receive",
            source: io::Error::from_raw_os_error(libc::EAGAIN),
        };
        assert!(
            e.to_string()
                .ends_with("; hint: the kernel did not answer in time"),
            "{e}"
        );
        assert_eq!(io::Error::from(e).raw_os_error(), Some(libc::EAGAIN));
    }
}

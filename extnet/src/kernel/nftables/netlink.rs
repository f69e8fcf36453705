//! nf_tables over raw netlink (`NETLINK_NETFILTER`), for the few requests extnet makes where
//! libnftables would cost too much: on the per-job path (one allowlist element) and where its
//! cache would fetch the whole table (counters; existence checks), whose cgroup maps grow with
//! the number of jobs. No binary of extnet links libnftables; the base table is loaded with
//! `nft -f -` ([`crate::kernel::nftables::apply`]).
//!
//! This module builds and reads nf_tables messages only; the socket, sequence numbers, ACKs,
//! errors and the timeout are the transport shared with rtnetlink
//! ([`crate::kernel::netlink::socket`]).
//!
//! What each request equals:
//!
//! - [`NfSocket::table_exists`], [`NfSocket::set_exists`], [`NfSocket::chain_exists`]:
//!   `nft list table|map|chain ...` reduced to its header (no element is read);
//! - [`NfSocket::get_verdict`]: `nft get element inet T S { KEY }` on a verdict map (one
//!   `NFT_MSG_GETSETELEM` without `NLM_F_DUMP`: kernel 4.20 or later);
//! - [`NfSocket::set_verdict`]: `nft add element inet T S { KEY : VERDICT }`, as
//!   `delete element` + `add element` in one transaction when the key holds another verdict;
//! - [`NfSocket::delete_element`]: `nft delete element inet T S { KEY }`;
//! - [`NfSocket::delete_table`]: `nft delete table inet T`;
//! - [`NfSocket::counter`], [`NfSocket::all_counters`]: `nft list|reset counter inet T NAME`,
//!   `nft list counters table inet T`;
//! - [`NfSocket::generation`]: the ruleset generation (`nft list ruleset` prints none; it is
//!   the number every committed transaction increments);
//! - [`NfSocket::table_exists_in`]: `nft list table inet|ip|ip6 T` reduced to its header;
//! - [`NfSocket::hash_structure`]: `nft list table inet|ip|ip6 T` without its elements and
//!   counter values, hashed (two dumps: chains, rules);
//! - [`listen`] and [`change`]: `nft monitor`, the kernel's notification of every change of
//!   any table in the namespace, and what one is about.
//!
//! Changes go in one batch (`NFNL_MSG_BATCH_BEGIN` ... `NFNL_MSG_BATCH_END`), which the kernel
//! commits or aborts as a whole; every message of it asks for an ACK, and the batch counts as
//! done only when each message has been answered. Why adds and not deletes on a hot path: the
//! kernel frees deleted objects after an RCU grace period, and closing a socket whose batch
//! deleted something waits for that grace period; an add returns at once.
//!
//! Family `inet` (NFPROTO_INET) is used for everything: extnet's table is `inet extnet`, one
//! table for both IP families. The existence checks also ask about `ip` and `ip6`, the
//! families of the two tables of earlier versions, which a load deletes.

use std::collections::HashMap;
use std::fmt;
use std::io;

use netlink_packet_core::{NetlinkSerializable, NLM_F_ACK, NLM_F_CREATE};
use nix::errno::Errno;

use crate::kernel::netlink::socket::{Listener, Notification, Socket, SocketError};
use crate::kernel::netlink::Protocol;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// The multicast group of nf_tables' notifications (`NFNLGRP_NFTABLES`).
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10; // NLMSG_MIN_TYPE
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
const NFT_MSG_DELOBJ: u16 = 20;
const NFT_MSG_GETOBJ_RESET: u16 = 21;
const NFT_MSG_NEWFLOWTABLE: u16 = 22;
const NFT_MSG_DELFLOWTABLE: u16 = 24;
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYRULE: u16 = 28;
const NFT_MSG_DESTROYSET: u16 = 29;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFT_MSG_DESTROYOBJ: u16 = 31;
const NFT_MSG_DESTROYFLOWTABLE: u16 = 32;
/// The table's name: attribute 1 of every object's message (table, chain, rule, set, element
/// list, object, flowtable).
const NFTA_ANY_TABLE: u16 = 1;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_FLAGS: u16 = 10;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
/// Expressions whose data is state that traffic changes (`counter`'s packets and bytes,
/// `quota`'s consumed bytes, `last`'s time), not what the rule says.
const STATEFUL_EXPRS: [&[u8]; 3] = [b"counter\0", b"quota\0", b"last\0"];
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type without the nested / byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The verdict of a verdict-map element, as nft writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
    /// A verdict code extnet never writes (`queue`, ...).
    Other(i32),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Other(code) => write!(f, "verdict code {code}"),
        }
    }
}

impl Verdict {
    /// The chain a jump or goto names.
    pub fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }

    fn code(&self) -> i32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
            Verdict::Continue => NFT_CONTINUE,
            Verdict::Return => NFT_RETURN,
            Verdict::Jump(_) => NFT_JUMP,
            Verdict::Goto(_) => NFT_GOTO,
            Verdict::Other(c) => *c,
        }
    }

    fn from_parts(code: i32, chain: Option<String>) -> Verdict {
        match (code, chain) {
            (NF_ACCEPT, _) => Verdict::Accept,
            (NF_DROP, _) => Verdict::Drop,
            (NFT_CONTINUE, _) => Verdict::Continue,
            (NFT_RETURN, _) => Verdict::Return,
            (NFT_JUMP, Some(c)) => Verdict::Jump(c),
            (NFT_GOTO, Some(c)) => Verdict::Goto(c),
            (c, _) => Verdict::Other(c),
        }
    }
}

/// The address family of a table (the nft keyword before its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: both IP families (extnet's node table).
    Inet,
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
}

impl Family {
    fn number(self) -> u8 {
        match self {
            Family::Inet => NFPROTO_INET,
            Family::Ip => NFPROTO_IPV4,
            Family::Ip6 => NFPROTO_IPV6,
        }
    }

    fn of(number: u8) -> Option<Family> {
        match number {
            NFPROTO_INET => Some(Family::Inet),
            NFPROTO_IPV4 => Some(Family::Ip),
            NFPROTO_IPV6 => Some(Family::Ip6),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        })
    }
}

/// What [`NfSocket::set_verdict`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The element had this verdict already: nothing was sent.
    Unchanged,
    /// There was no element: one was added.
    Added,
    /// The element had another verdict (returned): it was replaced in one transaction.
    Replaced(Verdict),
}

/// Why an nf_tables request failed, in the words an admin needs.
#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("cannot open a netfilter netlink socket: {0}; extnet needs root (CAP_NET_ADMIN) in the node's network namespace and a kernel with nf_tables")]
    Open(#[source] io::Error),
    #[error("nftables table inet {table} does not exist: the node's base table is not loaded; run `extnet node setup` on the node")]
    TableMissing { table: String },
    #[error("nftables table inet {table} has no map {set}: the node's base table is older than this extnet; run `extnet node setup` on the node")]
    SetMissing { table: String, set: String },
    #[error("nftables table inet {table} has no chain {chain}, which the verdict `{verdict}` of map {set} needs: the node's base table does not match the policy; run `extnet node setup` on the node")]
    ChainMissing {
        table: String,
        set: String,
        chain: String,
        verdict: Verdict,
    },
    /// The errno's hint (what the admin can do) is in `source`.
    #[error("cannot {op} in nftables table inet {table}: {source}")]
    Kernel {
        /// What was asked, in nft's words (`add element slot_profile { 0x10003 : accept }`).
        op: String,
        table: String,
        source: SocketError,
    },
}

/// Appends attribute `kind` with `payload`, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Appends nested attribute `kind` whose payload `fill` writes.
fn nest(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    attr(out, kind | NLA_F_NESTED, &inner);
}

/// A NUL-terminated string payload.
fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The string of a NUL-terminated payload.
fn string(p: &[u8]) -> String {
    String::from_utf8_lossy(p.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

/// The attributes of `data` as (type without flags, payload).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut v = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        v.push((kind, &data[4..len]));
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    v
}

/// Appends one attribute of a structure to `out`, length-prefixed so that parts cannot run
/// into each other.
fn structure_part(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    out.extend_from_slice(payload);
}

/// What a rule says (see [`NfSocket::hash_structure`]): its chain, each expression's name
/// and data (only the name of a stateful one), its comment.
fn rule_structure(rule: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    structure_part(
        &mut out,
        NFTA_RULE_CHAIN,
        find(rule, NFTA_RULE_CHAIN).unwrap_or_default(),
    );
    for (kind, expr) in attrs(find(rule, NFTA_RULE_EXPRESSIONS).unwrap_or_default()) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let e = attrs(expr);
        let name = find(&e, NFTA_EXPR_NAME).unwrap_or_default();
        structure_part(&mut out, NFTA_EXPR_NAME, name);
        if !STATEFUL_EXPRS.contains(&name) {
            structure_part(
                &mut out,
                NFTA_EXPR_DATA,
                find(&e, NFTA_EXPR_DATA).unwrap_or_default(),
            );
        }
    }
    structure_part(
        &mut out,
        NFTA_RULE_USERDATA,
        find(rule, NFTA_RULE_USERDATA).unwrap_or_default(),
    );
    out
}

fn find<'a>(a: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    a.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

fn be_u64(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..8)?.try_into().ok()?))
}

fn be_i32(p: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(p.get(..4)?.try_into().ok()?))
}

/// The body of one nfnetlink message: nfgenmsg (family, version 0, resource id) and
/// attributes; the socket writes the nlmsghdr in front of it.
struct NfMessage<'a> {
    msg_type: u16,
    family: u8,
    res_id: u16,
    attrs: &'a [u8],
}

impl<'a> NfMessage<'a> {
    /// An nf_tables request of family `ip`.
    fn nft(msg_type: u16, attrs: &'a [u8]) -> NfMessage<'a> {
        NfMessage::nft_in(Family::Inet, msg_type, attrs)
    }

    /// An nf_tables request of family `family`.
    fn nft_in(family: Family, msg_type: u16, attrs: &'a [u8]) -> NfMessage<'a> {
        NfMessage {
            msg_type: (NFNL_SUBSYS_NFTABLES << 8) | msg_type,
            family: family.number(),
            res_id: 0,
            attrs,
        }
    }

    /// The begin or end of a batch for the nf_tables subsystem.
    fn batch_frame(msg_type: u16) -> NfMessage<'static> {
        NfMessage {
            msg_type,
            family: NFPROTO_UNSPEC,
            res_id: NFNL_SUBSYS_NFTABLES,
            attrs: &[],
        }
    }
}

impl NetlinkSerializable for NfMessage<'_> {
    fn message_type(&self) -> u16 {
        self.msg_type
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // NFNETLINK_V0
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        buffer[4..].copy_from_slice(self.attrs);
    }
}

/// What an element of a map maps its key to.
#[derive(Debug, Clone, Copy)]
enum ElemData<'a> {
    Verdict(&'a Verdict),
    Value(&'a [u8]),
}

/// The attributes naming one element of set `set` of table `table`, with `data` when given:
/// table, set, and a list of one element (key, data).
fn element_attrs(table: &str, set: &str, key: &[u8], data: Option<ElemData<'_>>) -> Vec<u8> {
    let mut a = Vec::new();
    attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    attr(&mut a, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nest(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
        nest(l, NFTA_LIST_ELEM, |e| {
            nest(e, NFTA_SET_ELEM_KEY, |k| attr(k, NFTA_DATA_VALUE, key));
            match data {
                Some(ElemData::Verdict(v)) => nest(e, NFTA_SET_ELEM_DATA, |d| {
                    nest(d, NFTA_DATA_VERDICT, |vd| {
                        attr(vd, NFTA_VERDICT_CODE, &v.code().to_be_bytes());
                        if let Some(c) = v.chain() {
                            attr(vd, NFTA_VERDICT_CHAIN, &cstr(c));
                        }
                    })
                }),
                Some(ElemData::Value(v)) => {
                    nest(e, NFTA_SET_ELEM_DATA, |d| attr(d, NFTA_DATA_VALUE, v))
                }
                None => {}
            }
        })
    });
    a
}

/// The (key, verdict) of each element in the payload of a NEWSETELEM message (after the
/// nlmsghdr); elements without a verdict (a plain set) are skipped.
fn parse_verdict_elements(payload: &[u8]) -> Vec<(Vec<u8>, Verdict)> {
    let mut out = Vec::new();
    let Some(top) = payload.get(4..).map(attrs) else {
        return out; // shorter than nfgenmsg
    };
    let Some(list) = find(&top, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return out;
    };
    for (kind, elem) in attrs(list) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let e = attrs(elem);
        let key = find(&e, NFTA_SET_ELEM_KEY)
            .and_then(|k| find(&attrs(k), NFTA_DATA_VALUE).map(<[u8]>::to_vec));
        let verdict = find(&e, NFTA_SET_ELEM_DATA)
            .and_then(|d| find(&attrs(d), NFTA_DATA_VERDICT))
            .and_then(|v| {
                let v = attrs(v);
                let code = be_i32(find(&v, NFTA_VERDICT_CODE)?)?;
                Some(Verdict::from_parts(
                    code,
                    find(&v, NFTA_VERDICT_CHAIN).map(string),
                ))
            });
        if let (Some(k), Some(v)) = (key, verdict) {
            out.push((k, v));
        }
    }
    out
}

/// (name, (packets, bytes)) of a NEWOBJ message's payload (after the nlmsghdr).
fn parse_counter(payload: &[u8]) -> Option<(String, (u64, u64))> {
    let a = attrs(payload.get(4..)?); // after nfgenmsg
    let name = string(find(&a, NFTA_OBJ_NAME)?);
    let data = attrs(find(&a, NFTA_OBJ_DATA)?);
    Some((
        name,
        (
            be_u64(find(&data, NFTA_COUNTER_PACKETS)?)?,
            be_u64(find(&data, NFTA_COUNTER_BYTES)?)?,
        ),
    ))
}

/// An object of table `inet TABLE` whose existence is asked for (table, set or map, chain).
enum Object<'a> {
    Table(&'a str),
    Set(&'a str, &'a str),
    Chain(&'a str, &'a str),
}

/// A netfilter netlink socket. One per thread; opening one is a `socket` and a few
/// `setsockopt`s, no request.
#[derive(Debug)]
pub struct NfSocket {
    socket: Socket,
    batches: u32,
}

impl NfSocket {
    /// Opens a socket in the calling thread's network namespace (errors: wrap them in
    /// [`NfnlError::Open`], or as the caller's layer says).
    pub fn open() -> io::Result<NfSocket> {
        Ok(NfSocket {
            socket: Socket::open(Protocol::Netfilter, None)?,
            batches: 0,
        })
    }

    /// How many change batches this socket has sent (what tests assert "nothing was written"
    /// with).
    pub fn batches_sent(&self) -> u32 {
        self.batches
    }

    /// Sends one request and hands each answering message but the final ACK or error to
    /// `on_msg` (type, payload). `Ok(false)`: the kernel said ENOENT.
    fn request(
        &mut self,
        msg_type: u16,
        attrs: &[u8],
        on_msg: impl FnMut(u16, &[u8]),
    ) -> Result<bool, SocketError> {
        self.request_in(Family::Inet, msg_type, attrs, on_msg)
    }

    /// [`Self::request`] for a table of family `family`.
    fn request_in(
        &mut self,
        family: Family,
        msg_type: u16,
        attrs: &[u8],
        mut on_msg: impl FnMut(u16, &[u8]),
    ) -> Result<bool, SocketError> {
        let msg = NfMessage::nft_in(family, msg_type, attrs);
        match self.socket.request(&msg, 0, &mut |m| {
            on_msg(m.msg_type, m.payload);
            Ok(())
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `msgs` (type, flags, attributes) as one batch, which the kernel commits or aborts
    /// as a whole; each message asks for an ACK. The kernel processes every message of the
    /// batch, then answers each (ACKs for those that passed too, even when another failed and
    /// the batch was aborted). The error is that of the first message that failed (none of
    /// the batch was applied), or of the batch itself.
    fn batch(&mut self, msgs: &[(u16, u16, Vec<u8>)]) -> Result<(), SocketError> {
        let begin = NfMessage::batch_frame(NFNL_MSG_BATCH_BEGIN);
        let end = NfMessage::batch_frame(NFNL_MSG_BATCH_END);
        let bodies: Vec<NfMessage<'_>> =
            msgs.iter().map(|(t, _, a)| NfMessage::nft(*t, a)).collect();
        let mut parts: Vec<(&dyn NetlinkSerializable, u16)> = Vec::with_capacity(msgs.len() + 2);
        parts.push((&begin, 0));
        for (body, (_, flags, _)) in bodies.iter().zip(msgs) {
            parts.push((body, NLM_F_ACK | flags));
        }
        parts.push((&end, 0));
        self.batches += 1;
        self.socket.batch(&parts)
    }

    /// Whether table `inet TABLE` exists (one netlink round trip; no element is read).
    pub fn table_exists(&mut self, table: &str) -> io::Result<bool> {
        Ok(self.exists(Object::Table(table))?)
    }

    /// Whether table `FAMILY TABLE` exists (one netlink round trip; no element is read).
    pub fn table_exists_in(&mut self, family: Family, table: &str) -> io::Result<bool> {
        let mut a = Vec::new();
        attr(&mut a, NFTA_TABLE_NAME, &cstr(table));
        Ok(self.request_in(family, NFT_MSG_GETTABLE, &a, |_, _| {})?)
    }

    /// Whether set or map `set` of table `inet TABLE` exists (its header only, not its elements).
    pub fn set_exists(&mut self, table: &str, set: &str) -> io::Result<bool> {
        Ok(self.exists(Object::Set(table, set))?)
    }

    /// Whether chain `chain` of table `inet TABLE` exists (its header only, not its rules).
    pub fn chain_exists(&mut self, table: &str, chain: &str) -> io::Result<bool> {
        Ok(self.exists(Object::Chain(table, chain))?)
    }

    /// Whether `object` exists: a get of its header, one round trip.
    fn exists(&mut self, object: Object<'_>) -> Result<bool, SocketError> {
        let mut a = Vec::new();
        let msg_type = match object {
            Object::Table(table) => {
                attr(&mut a, NFTA_TABLE_NAME, &cstr(table));
                NFT_MSG_GETTABLE
            }
            Object::Set(table, set) => {
                attr(&mut a, NFTA_SET_TABLE, &cstr(table));
                attr(&mut a, NFTA_SET_NAME, &cstr(set));
                NFT_MSG_GETSET
            }
            Object::Chain(table, chain) => {
                attr(&mut a, NFTA_CHAIN_TABLE, &cstr(table));
                attr(&mut a, NFTA_CHAIN_NAME, &cstr(chain));
                NFT_MSG_GETCHAIN
            }
        };
        self.request(msg_type, &a, |_, _| {})
    }

    /// Feeds what table `FAMILY TABLE` says into `h`: every chain (name, type, hook and
    /// priority, policy, flags), then every rule in the kernel's order (its chain, each
    /// expression's name and data, its comment). Left out: handles, which a reload renumbers;
    /// the values of counters, quotas and `last`, which traffic changes; set elements, which
    /// jobs change. Equal hashes mean the same chains and rules. `Ok(false)`: no such table.
    /// Two dumps, O(chains + rules) and never per element.
    pub fn hash_structure(
        &mut self,
        family: Family,
        table: &str,
        h: &mut impl std::hash::Hasher,
    ) -> io::Result<bool> {
        if !self.table_exists_in(family, table)? {
            return Ok(false);
        }
        let own = cstr(table);
        let mut a = Vec::new();
        attr(&mut a, NFTA_CHAIN_TABLE, &own);
        let chains = self.socket.dump(
            &NfMessage::nft_in(family, NFT_MSG_GETCHAIN, &a),
            |out: &mut Vec<Vec<u8>>, m| {
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN {
                    let at = attrs(m.payload.get(4..).unwrap_or_default());
                    if find(&at, NFTA_CHAIN_TABLE) == Some(own.as_slice()) {
                        let mut c = Vec::new();
                        for k in [
                            NFTA_CHAIN_NAME,
                            NFTA_CHAIN_TYPE,
                            NFTA_CHAIN_HOOK,
                            NFTA_CHAIN_POLICY,
                            NFTA_CHAIN_FLAGS,
                        ] {
                            structure_part(&mut c, k, find(&at, k).unwrap_or_default());
                        }
                        out.push(c);
                    }
                }
                Ok(())
            },
        );
        let mut a = Vec::new();
        attr(&mut a, NFTA_RULE_TABLE, &own);
        let rules = self.socket.dump(
            &NfMessage::nft_in(family, NFT_MSG_GETRULE, &a),
            |out: &mut Vec<Vec<u8>>, m| {
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE {
                    let at = attrs(m.payload.get(4..).unwrap_or_default());
                    if find(&at, NFTA_RULE_TABLE) == Some(own.as_slice()) {
                        out.push(rule_structure(&at));
                    }
                }
                Ok(())
            },
        );
        let (mut chains, rules) = match (chains, rules) {
            (Ok(c), Ok(r)) => (c, r),
            // deleted between the check and a dump: no such table
            (Err(e), _) | (_, Err(e)) if e.errno() == Some(Errno::ENOENT) => return Ok(false),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        // chains come in hash order; rules in each chain's order, which is what they mean
        chains.sort();
        h.write_usize(chains.len());
        for c in chains {
            h.write(&c);
        }
        h.write_usize(rules.len());
        for r in rules {
            h.write(&r);
        }
        Ok(true)
    }

    /// The ruleset generation: every committed transaction increments it.
    pub fn generation(&mut self) -> io::Result<u32> {
        let msg = NfMessage {
            msg_type: (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            family: NFPROTO_UNSPEC,
            res_id: 0,
            attrs: &[],
        };
        let mut gen = None;
        self.socket.request(&msg, 0, &mut |m| {
            if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                gen = m
                    .payload
                    .get(4..)
                    .map(attrs)
                    .and_then(|a| find(&a, NFTA_GEN_ID).and_then(|p| p.get(..4)))
                    .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            }
            Ok(())
        })?;
        gen.ok_or_else(|| io::Error::other("the kernel sent no generation"))
    }

    /// The verdict of element `key` of verdict map `set` (`nft get element`); `None` when the
    /// map has no such element. Reads that one element only, whatever the size of the map.
    pub fn get_verdict(
        &mut self,
        table: &str,
        set: &str,
        key: &[u8],
    ) -> Result<Option<Verdict>, NfnlError> {
        let v = self.lookup(table, set, key)?;
        if v.is_none() {
            // ENOENT: no such element, or no such map or table
            self.diagnose(table, set, None)?;
        }
        Ok(v)
    }

    /// [`Self::get_verdict`] without naming what is missing: `None` also when the map or
    /// table is.
    fn lookup(&mut self, table: &str, set: &str, key: &[u8]) -> Result<Option<Verdict>, NfnlError> {
        let a = element_attrs(table, set, key, None);
        let mut got = None;
        let found = self
            .request(NFT_MSG_GETSETELEM, &a, |t, p| {
                if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                    got = parse_verdict_elements(p)
                        .into_iter()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v);
                }
            })
            .map_err(|source| NfnlError::Kernel {
                op: format!("get element {set} {{ {} }}", hex(key)),
                table: table.into(),
                source,
            })?;
        if !found {
            return Ok(None);
        }
        got.map(Some).ok_or_else(|| NfnlError::Kernel {
            op: format!("get element {set} {{ {} }}", hex(key)),
            table: table.into(),
            source: SocketError::Malformed {
                detail: "the kernel acknowledged without the element's verdict".into(),
            },
        })
    }

    /// Makes element `key` of verdict map `set` carry `verdict`: nothing when it does already,
    /// an add when there is no element, a delete and an add in one transaction when it holds
    /// another verdict (the kernel refuses to overwrite an element's data).
    pub fn set_verdict(
        &mut self,
        table: &str,
        set: &str,
        key: &[u8],
        verdict: &Verdict,
    ) -> Result<Change, NfnlError> {
        // a missing table or map shows as a missing element here, and the add below names it
        let current = self.lookup(table, set, key)?;
        if current.as_ref() == Some(verdict) {
            return Ok(Change::Unchanged);
        }
        let add = (
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            element_attrs(table, set, key, Some(ElemData::Verdict(verdict))),
        );
        let del = (NFT_MSG_DELSETELEM, 0, element_attrs(table, set, key, None));
        let (msgs, change) = match current {
            None => (vec![add], Change::Added),
            Some(old) => (vec![del, add], Change::Replaced(old)),
        };
        let op = match &change {
            Change::Replaced(old) => format!(
                "replace element {set} {{ {} : {old} }} by {{ {} : {verdict} }}",
                hex(key),
                hex(key)
            ),
            _ => format!("add element {set} {{ {} : {verdict} }}", hex(key)),
        };
        match self.batch(&msgs) {
            Ok(()) => Ok(change),
            Err(source) if source.errno() == Some(Errno::ENOENT) => {
                // the table, map or jump target went away (or never was)
                self.diagnose(table, set, Some(verdict))?;
                Err(NfnlError::Kernel {
                    op,
                    table: table.into(),
                    source,
                })
            }
            Err(source) => Err(NfnlError::Kernel {
                op,
                table: table.into(),
                source,
            }),
        }
    }

    /// Adds element `key : value` to map `set` (`nft add element inet TABLE SET { KEY : VALUE }`,
    /// with the key and value as the kernel stores them, e.g. a cgroup id, which `nft` itself
    /// only takes as a path). The same element again is fine; the same key with another value
    /// is refused by the kernel.
    pub fn add_value_element(
        &mut self,
        table: &str,
        set: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), NfnlError> {
        let add = (
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            element_attrs(table, set, key, Some(ElemData::Value(value))),
        );
        self.batch(&[add]).map_err(|source| NfnlError::Kernel {
            op: format!("add element {set} {{ {} : {} }}", hex(key), hex(value)),
            table: table.into(),
            source,
        })
    }

    /// Removes element `key` of set `set` (`nft delete element`); returns whether there was
    /// one. A missing element, map or table counts as done. Closing a socket after this waits
    /// for the kernel to free the element (an RCU grace period): keep it off hot paths.
    pub fn delete_element(
        &mut self,
        table: &str,
        set: &str,
        key: &[u8],
    ) -> Result<bool, NfnlError> {
        let del = (NFT_MSG_DELSETELEM, 0, element_attrs(table, set, key, None));
        match self.batch(&[del]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(source) => Err(NfnlError::Kernel {
                op: format!("delete element {set} {{ {} }}", hex(key)),
                table: table.into(),
                source,
            }),
        }
    }

    /// Deletes table `inet TABLE` with everything in it (`nft delete table`); returns whether it
    /// existed.
    pub fn delete_table(&mut self, table: &str) -> Result<bool, NfnlError> {
        let mut a = Vec::new();
        attr(&mut a, NFTA_TABLE_NAME, &cstr(table));
        match self.batch(&[(NFT_MSG_DELTABLE, 0, a)]) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(source) => Err(NfnlError::Kernel {
                op: "delete the table".into(),
                table: table.into(),
                source,
            }),
        }
    }

    /// Names what is missing after an ENOENT: the table, the map, or the chain `verdict`
    /// jumps to. `Ok(())`: all of them exist (the element itself was missing).
    fn diagnose(
        &mut self,
        table: &str,
        set: &str,
        verdict: Option<&Verdict>,
    ) -> Result<(), NfnlError> {
        let kernel = |op: &str, source| NfnlError::Kernel {
            op: op.into(),
            table: table.into(),
            source,
        };
        if !self
            .exists(Object::Table(table))
            .map_err(|e| kernel("look the table up", e))?
        {
            return Err(NfnlError::TableMissing {
                table: table.into(),
            });
        }
        if !self
            .exists(Object::Set(table, set))
            .map_err(|e| kernel(&format!("look map {set} up"), e))?
        {
            return Err(NfnlError::SetMissing {
                table: table.into(),
                set: set.into(),
            });
        }
        let Some((v, chain)) = verdict.and_then(|v| Some((v, v.chain()?))) else {
            return Ok(());
        };
        if !self
            .exists(Object::Chain(table, chain))
            .map_err(|e| kernel(&format!("look chain {chain} up"), e))?
        {
            return Err(NfnlError::ChainMissing {
                table: table.into(),
                set: set.into(),
                chain: chain.into(),
                verdict: v.clone(),
            });
        }
        Ok(())
    }

    /// (packets, bytes) of counter `name` of table `inet TABLE`, reset to zero when `reset`;
    /// `None` when there is no such counter (or table).
    pub fn counter(
        &mut self,
        table: &str,
        name: &str,
        reset: bool,
    ) -> io::Result<Option<(u64, u64)>> {
        let mut a = Vec::new();
        attr(&mut a, NFTA_OBJ_TABLE, &cstr(table));
        attr(&mut a, NFTA_OBJ_NAME, &cstr(name));
        attr(&mut a, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
        let t = if reset {
            NFT_MSG_GETOBJ_RESET
        } else {
            NFT_MSG_GETOBJ
        };
        let mut got = None;
        let found = self.request(t, &a, |t, p| {
            if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ {
                if let Some((n, v)) = parse_counter(p) {
                    if n == name {
                        got = Some(v);
                    }
                }
            }
        })?;
        if !found {
            return Ok(None);
        }
        got.map(Some)
            .ok_or_else(|| io::Error::other("the kernel acknowledged without the counter"))
    }

    /// Every named counter of table `inet TABLE`: one dump, O(counters) (never per job).
    pub fn all_counters(&mut self, table: &str) -> io::Result<HashMap<String, (u64, u64)>> {
        let mut a = Vec::new();
        attr(&mut a, NFTA_OBJ_TABLE, &cstr(table));
        attr(&mut a, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
        let dumped = self.socket.dump(
            &NfMessage::nft(NFT_MSG_GETOBJ, &a),
            |out: &mut HashMap<String, (u64, u64)>, m| {
                if m.msg_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ {
                    if let Some((n, v)) = parse_counter(m.payload) {
                        out.insert(n, v);
                    }
                }
                Ok(())
            },
        );
        match dumped {
            Ok(out) => Ok(out),
            // no such table: no counters
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(HashMap::new()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A key as nft prints a mark: `0x10003` (4 bytes, host order), else hex bytes.
fn hex(key: &[u8]) -> String {
    match <[u8; 4]>::try_from(key) {
        Ok(b) => format!("0x{:x}", u32::from_ne_bytes(b)),
        Err(_) => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Subscribes a new socket, in the calling thread's network namespace, to nf_tables'
/// notifications: one for every table, chain, rule, set, element, object and flowtable any
/// program makes or deletes in the namespace, and one per committed transaction. Equals `nft
/// monitor`. Needs `CAP_NET_ADMIN`.
pub fn listen() -> io::Result<Listener> {
    Ok(Listener::open(Protocol::Netfilter, &[NFNLGRP_NFTABLES])?)
}

/// What an nf_tables notification says about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    /// What changed: `table`, `chain`, `rule`, `set`, `element`, `object` or `flowtable`.
    pub what: &'static str,
    /// Made or changed (`true`), or deleted.
    pub new: bool,
    /// `None`: a family extnet does not use (`inet`, `arp`, ...).
    pub family: Option<Family>,
    pub table: String,
}

/// What notification `n` says about a table; `None` for one about no table (the generation a
/// transaction committed, a trace, another netfilter subsystem).
pub fn change(n: &Notification<'_>) -> Option<TableChange> {
    if n.msg_type >> 8 != NFNL_SUBSYS_NFTABLES {
        return None;
    }
    let (what, new) = match n.msg_type & 0xff {
        NFT_MSG_NEWTABLE => ("table", true),
        NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => ("table", false),
        NFT_MSG_NEWCHAIN => ("chain", true),
        NFT_MSG_DELCHAIN | NFT_MSG_DESTROYCHAIN => ("chain", false),
        NFT_MSG_NEWRULE => ("rule", true),
        NFT_MSG_DELRULE | NFT_MSG_DESTROYRULE => ("rule", false),
        NFT_MSG_NEWSET => ("set", true),
        NFT_MSG_DELSET | NFT_MSG_DESTROYSET => ("set", false),
        NFT_MSG_NEWSETELEM => ("element", true),
        NFT_MSG_DELSETELEM | NFT_MSG_DESTROYSETELEM => ("element", false),
        NFT_MSG_NEWOBJ => ("object", true),
        NFT_MSG_DELOBJ | NFT_MSG_DESTROYOBJ => ("object", false),
        NFT_MSG_NEWFLOWTABLE => ("flowtable", true),
        NFT_MSG_DELFLOWTABLE | NFT_MSG_DESTROYFLOWTABLE => ("flowtable", false),
        _ => return None,
    };
    let family = *n.payload.first()?;
    let a = attrs(n.payload.get(4..)?); // after nfgenmsg
    Some(TableChange {
        what,
        new,
        family: Family::of(family),
        table: string(find(&a, NFTA_ANY_TABLE)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::socket::encode;
    use netlink_packet_core::NLM_F_REQUEST;

    /// The kernel's answer to a GETSETELEM: a NEWSETELEM message's payload (after nlmsghdr).
    fn newsetelem_payload(key: u32, v: &Verdict) -> Vec<u8> {
        let mut p = vec![NFPROTO_INET, 0, 0, 0];
        p.extend(element_attrs(
            "extnet",
            "slot_profile",
            &key.to_ne_bytes(),
            Some(ElemData::Verdict(v)),
        ));
        p
    }

    #[test]
    fn verdicts_round_trip_through_the_element_encoding() {
        for v in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Return,
            Verdict::Continue,
            Verdict::Jump("dest_web".into()),
            Verdict::Goto("dest_x".into()),
            Verdict::Other(3),
        ] {
            let got = parse_verdict_elements(&newsetelem_payload(0x10003, &v));
            assert_eq!(
                got,
                vec![(0x10003u32.to_ne_bytes().to_vec(), v.clone())],
                "{v}"
            );
        }
    }

    #[test]
    fn an_element_is_encoded_as_nft_encodes_it() {
        // libnftnl's layout: table, set, elements { elem { key { value }, data { verdict {
        // code, chain } } } }, nested attributes flagged NLA_F_NESTED, strings NUL-terminated
        let a = element_attrs(
            "extnet",
            "slot_profile",
            &0x10003u32.to_ne_bytes(),
            Some(ElemData::Verdict(&Verdict::Jump("dest_web".into()))),
        );
        let top = attrs(&a);
        assert_eq!(find(&top, NFTA_SET_ELEM_LIST_TABLE), Some(&b"extnet\0"[..]));
        assert_eq!(
            find(&top, NFTA_SET_ELEM_LIST_SET),
            Some(&b"slot_profile\0"[..])
        );
        // the flags: raw type of the third attribute
        let third = &a[a.len() - top[2].1.len() - 4..];
        assert_eq!(
            u16::from_ne_bytes([third[2], third[3]]),
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED
        );
        let elem = attrs(find(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap());
        assert_eq!(elem.len(), 1);
        let e = attrs(elem[0].1);
        let key = attrs(find(&e, NFTA_SET_ELEM_KEY).unwrap());
        assert_eq!(key, vec![(NFTA_DATA_VALUE, &0x10003u32.to_ne_bytes()[..])]);
        let data = attrs(find(&e, NFTA_SET_ELEM_DATA).unwrap());
        let v = attrs(find(&data, NFTA_DATA_VERDICT).unwrap());
        assert_eq!(
            find(&v, NFTA_VERDICT_CODE),
            Some(&(-3i32).to_be_bytes()[..])
        );
        assert_eq!(find(&v, NFTA_VERDICT_CHAIN), Some(&b"dest_web\0"[..]));
        // accept carries no chain; a key-only element (get, delete) carries no data
        let acc = element_attrs(
            "t",
            "s",
            &[1, 0, 0, 0],
            Some(ElemData::Verdict(&Verdict::Accept)),
        );
        assert!(!acc.windows(9).any(|w| w == b"dest_web\0"));
        let bare = element_attrs("t", "s", &[1, 0, 0, 0], None);
        let e = attrs(attrs(find(&attrs(&bare), NFTA_SET_ELEM_LIST_ELEMENTS).unwrap())[0].1);
        assert!(find(&e, NFTA_SET_ELEM_DATA).is_none());
        assert_eq!(a.len() % 4, 0, "attributes are padded to 4 bytes");
    }

    #[test]
    fn messages_and_batches_carry_the_nfnetlink_headers() {
        let mut m = Vec::new();
        encode(
            &mut m,
            &NfMessage::nft(NFT_MSG_NEWSETELEM, &[1, 2, 3, 4]),
            NLM_F_ACK | NLM_F_CREATE,
            7,
        );
        assert_eq!(m.len(), 24);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 24);
        assert_eq!(
            u16::from_ne_bytes([m[4], m[5]]),
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM
        );
        assert_eq!(
            u16::from_ne_bytes([m[6], m[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        );
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..24], &[NFPROTO_INET, 0, 0, 0, 1, 2, 3, 4]);
        // batch begin: family unspec, resource id = the nftables subsystem, big-endian
        let mut b = Vec::new();
        encode(&mut b, &NfMessage::batch_frame(NFNL_MSG_BATCH_BEGIN), 0, 1);
        assert_eq!(b.len(), 20);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x10);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), NLM_F_REQUEST);
        assert_eq!(&b[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn a_notification_names_its_table_family_and_kind() {
        let note = |msg: u16, family: u8, table: Option<&str>| {
            let mut a = Vec::new();
            if let Some(t) = table {
                attr(&mut a, NFTA_ANY_TABLE, &cstr(t));
            }
            attr(&mut a, 3, &cstr("output_mark"));
            let mut p = vec![family, 0, 0, 0];
            p.extend(a);
            ((NFNL_SUBSYS_NFTABLES << 8) | msg, p)
        };
        let (t, p) = note(NFT_MSG_DELCHAIN, NFPROTO_INET, Some("extnet"));
        let c = change(&Notification {
            msg_type: t,
            payload: &p,
        })
        .unwrap();
        assert_eq!(
            c,
            TableChange {
                what: "chain",
                new: false,
                family: Some(Family::Inet),
                table: "extnet".into()
            }
        );
        let (t, p) = note(NFT_MSG_NEWTABLE, NFPROTO_IPV6, Some("extnet"));
        let c = change(&Notification {
            msg_type: t,
            payload: &p,
        })
        .unwrap();
        assert_eq!(
            (c.what, c.new, c.family),
            ("table", true, Some(Family::Ip6))
        );
        // netdev is a family extnet does not use
        let (t, p) = note(NFT_MSG_NEWRULE, 5, Some("filter"));
        let c = change(&Notification {
            msg_type: t,
            payload: &p,
        })
        .unwrap();
        assert_eq!((c.family, c.table.as_str()), (None, "filter"));
        // a transaction's generation, another subsystem, a message cut short: no table
        for (t, p) in [
            note(NFT_MSG_NEWGEN, NFPROTO_UNSPEC, None),
            (0x0100, vec![2, 0, 0, 0]),
            ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE, vec![2]),
        ] {
            assert_eq!(
                change(&Notification {
                    msg_type: t,
                    payload: &p
                }),
                None
            );
        }
    }

    #[test]
    fn parses_a_counter_object() {
        let mut data = Vec::new();
        attr(&mut data, NFTA_COUNTER_BYTES, &4096u64.to_be_bytes());
        attr(&mut data, NFTA_COUNTER_PACKETS, &3u64.to_be_bytes());
        let mut p = vec![NFPROTO_INET, 0, 0, 0];
        attr(&mut p, NFTA_OBJ_TABLE, &cstr("extnet"));
        attr(&mut p, NFTA_OBJ_NAME, &cstr("slot12_in"));
        attr(&mut p, NFTA_OBJ_TYPE, &1u32.to_be_bytes());
        attr(&mut p, NFTA_OBJ_DATA | NLA_F_NESTED, &data);
        assert_eq!(parse_counter(&p), Some(("slot12_in".into(), (3, 4096))));
        assert_eq!(parse_counter(&p[..p.len() - 12]), None, "truncated");
    }

    #[test]
    fn errors_tell_the_admin_what_to_do() {
        let e = NfnlError::TableMissing {
            table: "extnet".into(),
        };
        assert!(e.to_string().contains("run `extnet node setup`"), "{e}");
        let e = NfnlError::Kernel {
            op: "add element slot_profile { 0x10003 : accept }".into(),
            table: "extnet".into(),
            source: SocketError::Kernel {
                protocol: Protocol::Netfilter,
                errno: Errno::EPERM,
                message: None,
            },
        };
        let s = e.to_string();
        assert!(
            s.starts_with("cannot add element slot_profile { 0x10003 : accept } in nftables table inet extnet: EPERM")
                && s.ends_with("; hint: needs root (CAP_NET_ADMIN in the user namespace that owns the network namespace)"),
            "{s}"
        );
        assert_eq!(hex(&0x10003u32.to_ne_bytes()), "0x10003");
    }
}

//! Connection tracking entries (ctnetlink), over the shared netlink transport
//! ([`crate::kernel::netlink::socket`]).

use crate::kernel::netlink::socket::{Protocol, Socket, SocketError};
use netlink_packet_core::NetlinkSerializable;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const NLA_TYPE_MASK: u16 = 0x3fff;
const AF_INET: u8 = 2;
/// In a dump request: every family.
const AF_UNSPEC: u8 = 0;

/// An `IPCTNL_MSG_CT_DELETE` without a tuple: the kernel deletes every entry its attributes
/// match (a filtered flush).
struct Delete {
    attrs: Vec<u8>,
}

impl NetlinkSerializable for Delete {
    fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
    }

    fn buffer_len(&self) -> usize {
        4 + self.attrs.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // nfgenmsg: family, version 0 (the kernel then matches every family), resource id
        buffer[0] = AF_INET;
        buffer[1] = 0;
        buffer[2..4].copy_from_slice(&0u16.to_be_bytes());
        buffer[4..].copy_from_slice(&self.attrs);
    }
}

/// One netlink attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Deletes every conntrack entry whose mark, masked with `mask`, is `mark`, in the calling
/// thread's network namespace. Equals `conntrack -D --mark MARK/MASK`. Walks the whole
/// conntrack table in the kernel: for an epilog, not for a hot path.
pub fn delete_by_mark(mark: u32, mask: u32) -> Result<(), SocketError> {
    let mut attrs = Vec::with_capacity(16);
    attr(&mut attrs, CTA_MARK, &mark.to_be_bytes());
    attr(&mut attrs, CTA_MARK_MASK, &mask.to_be_bytes());
    let mut socket = Socket::open(Protocol::Netfilter, None)?;
    socket.request(&Delete { attrs }, 0, &mut |_| Ok(()))
}

/// An `IPCTNL_MSG_CT_GET` dump request of the whole table, both families (`AF_UNSPEC`: the
/// kernel filters by family only when one is given).
struct Get;

impl NetlinkSerializable for Get {
    fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    }

    fn buffer_len(&self) -> usize {
        4
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[..4].copy_from_slice(&[AF_UNSPEC, 0, 0, 0]);
    }
}

/// The attributes of `data` as (type without flags, payload); a malformed rest is ignored.
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[len.next_multiple_of(4).min(data.len())..];
        Some((kind, payload))
    })
}

/// A tuple's (source, destination) addresses, IPv4 or IPv6.
fn tuple_addrs(tuple: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let (_, ip) = attrs(tuple).find(|&(k, _)| k == CTA_TUPLE_IP)?;
    let (mut src, mut dst) = (None, None);
    for (k, p) in attrs(ip) {
        let v4 = || {
            <[u8; 4]>::try_from(p)
                .ok()
                .map(|a| Ipv4Addr::from(a).into())
        };
        let v6 = || {
            <[u8; 16]>::try_from(p)
                .ok()
                .map(|a| Ipv6Addr::from(a).into())
        };
        match k {
            CTA_IP_V4_SRC => src = v4(),
            CTA_IP_V4_DST => dst = v4(),
            CTA_IP_V6_SRC => src = v6(),
            CTA_IP_V6_DST => dst = v6(),
            _ => {}
        }
    }
    Some((src?, dst?))
}

/// The address an entry's source was translated to (SNAT, masquerade): the destination of
/// its reply tuple when that is not the original source. `payload`: one ctnetlink entry
/// after its netlink header (nfgenmsg, then attributes).
fn translated_source(payload: &[u8]) -> Option<IpAddr> {
    let (mut orig, mut reply) = (None, None);
    for (k, p) in attrs(payload.get(4..)?) {
        match k {
            CTA_TUPLE_ORIG => orig = tuple_addrs(p),
            CTA_TUPLE_REPLY => reply = tuple_addrs(p),
            _ => {}
        }
    }
    let ((orig_src, _), (_, reply_dst)) = (orig?, reply?);
    (orig_src != reply_dst).then_some(reply_dst)
}

/// The entries of both families whose source was translated, counted by the address they
/// leave as, in the calling thread's network namespace. Equals `conntrack -L -f ipv4
/// --src-nat` and `-f ipv6` grouped by the reply's destination. One dump of the whole table, decoded as it streams (nothing kept
/// per entry): the kernel's walk and the copy of every entry is the cost, linear in the
/// table's size (docs/PERFORMANCE.md).
pub fn count_source_nat() -> Result<BTreeMap<IpAddr, u64>, SocketError> {
    let mut socket = Socket::open(Protocol::Netfilter, None)?;
    let entry = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
    socket.dump(&Get, |counts: &mut BTreeMap<IpAddr, u64>, m| {
        if m.msg_type == entry {
            if let Some(a) = translated_source(m.payload) {
                *counts.entry(a).or_default() += 1;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as the kernel sends it: nfgenmsg, then the two tuples (nested, flagged).
    fn entry(orig: ([u8; 4], [u8; 4]), reply: ([u8; 4], [u8; 4])) -> Vec<u8> {
        let tuple = |(src, dst): ([u8; 4], [u8; 4])| {
            let mut ip = Vec::new();
            attr(&mut ip, CTA_IP_V4_SRC, &src);
            attr(&mut ip, CTA_IP_V4_DST, &dst);
            let mut t = Vec::new();
            attr(&mut t, CTA_TUPLE_IP | 0x8000, &ip);
            t
        };
        let mut p = vec![AF_INET, 0, 0, 0];
        attr(&mut p, CTA_TUPLE_ORIG | 0x8000, &tuple(orig));
        attr(&mut p, CTA_TUPLE_REPLY | 0x8000, &tuple(reply));
        attr(&mut p, CTA_MARK, &7u32.to_be_bytes());
        p
    }

    #[test]
    fn a_translated_entry_counts_for_its_reply_destination() {
        // 10.99.0.11 -> 203.0.113.10, leaving as 203.0.113.101
        let snat = entry(
            ([10, 99, 0, 11], [203, 0, 113, 10]),
            ([203, 0, 113, 10], [203, 0, 113, 101]),
        );
        assert_eq!(
            translated_source(&snat),
            Some(Ipv4Addr::new(203, 0, 113, 101).into())
        );
        // untranslated: the reply goes back to the original source
        let plain = entry(
            ([10, 99, 0, 11], [10, 99, 0, 1]),
            ([10, 99, 0, 1], [10, 99, 0, 11]),
        );
        assert_eq!(translated_source(&plain), None);
        // cut short: no tuple, no count
        assert_eq!(translated_source(&snat[..12]), None);
        assert_eq!(translated_source(&[]), None);
    }

    #[test]
    fn a_translated_ipv6_entry_counts_for_its_reply_destination() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap().octets();
        let tuple = |src: [u8; 16], dst: [u8; 16]| {
            let mut ip = Vec::new();
            attr(&mut ip, CTA_IP_V6_SRC, &src);
            attr(&mut ip, CTA_IP_V6_DST, &dst);
            let mut t = Vec::new();
            attr(&mut t, CTA_TUPLE_IP | 0x8000, &ip);
            t
        };
        // fd00:78e7::11 -> 2001:db8::10, leaving as 2001:db8::101
        let mut p = vec![10, 0, 0, 0];
        attr(
            &mut p,
            CTA_TUPLE_ORIG | 0x8000,
            &tuple(a("fd00:78e7::11"), a("2001:db8::10")),
        );
        attr(
            &mut p,
            CTA_TUPLE_REPLY | 0x8000,
            &tuple(a("2001:db8::10"), a("2001:db8::101")),
        );
        assert_eq!(
            translated_source(&p),
            Some("2001:db8::101".parse::<IpAddr>().unwrap())
        );
    }

    #[test]
    fn the_dump_request_is_a_get_of_both_families() {
        assert_eq!(Get.message_type(), 0x0101);
        let mut buf = vec![0; Get.buffer_len()];
        Get.serialize(&mut buf);
        assert_eq!(buf, [0, 0, 0, 0]);
    }

    #[test]
    fn the_delete_carries_mark_and_mask_big_endian() {
        let mut attrs = Vec::new();
        attr(&mut attrs, CTA_MARK, &0x30002u32.to_be_bytes());
        attr(&mut attrs, CTA_MARK_MASK, &u32::MAX.to_be_bytes());
        let m = Delete { attrs };
        assert_eq!(m.message_type(), 0x0102);
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        assert_eq!(&buf[..4], &[2, 0, 0, 0]);
        assert_eq!(&buf[4..8], &[8, 0, 8, 0], "length 8, type CTA_MARK");
        assert_eq!(&buf[8..12], &[0, 3, 0, 2]);
        assert_eq!(&buf[12..16], &[8, 0, 21, 0]);
        assert_eq!(&buf[16..20], &[0xff; 4]);
    }
}

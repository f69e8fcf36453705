//! Connection tracking entries (ctnetlink), over the shared netlink transport
//! ([`crate::kernel::netlink::socket`]).

use crate::kernel::netlink::socket::{Protocol, Socket, SocketError};
use netlink_packet_core::NetlinkSerializable;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const AF_INET: u8 = 2;

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! IPv4 addresses of links (`ip addr`), the IPv6 addresses of a netns job's veth pair, and
//! the global IPv6 addresses of a link.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::AddressMessageBuilder;

use super::{Netlink, NetlinkError};

impl Netlink {
    /// Adds `addr/prefix_len` to link `index`: `Ok(true)` when added, `Ok(false)` when the link
    /// has it already. Equals `ip addr add ADDR/LEN dev X`.
    pub fn addr_add(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix_len);
        let op = || format!("add address {addr}/{prefix_len} dev with index {index}");
        match self.change(
            RouteNetlinkMessage::NewAddress(msg.build()),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        ) {
            Ok(()) => {
                tracing::debug!(index, %addr, prefix_len, "address added");
                Ok(true)
            }
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds IPv6 `addr/prefix_len` to link `index` without duplicate address detection (the
    /// address is usable at once; extnet gives each one to one link only): `Ok(true)` when
    /// added, `Ok(false)` when the link has it already. Equals `ip -6 addr add ADDR/LEN dev X
    /// nodad`.
    pub fn addr6_add_nodad(
        &mut self,
        index: u32,
        addr: Ipv6Addr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let mut msg = AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(addr, prefix_len)
            .build();
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        let op = || format!("add address {addr}/{prefix_len} dev with index {index} nodad");
        match self.change(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        ) {
            Ok(()) => {
                tracing::debug!(index, %addr, prefix_len, "IPv6 address added");
                Ok(true)
            }
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `addr/prefix_len` from link `index`: `Ok(false)` when it was not there.
    /// Equals `ip addr del ADDR/LEN dev X`.
    pub fn addr_del(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<bool, NetlinkError> {
        let msg = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, prefix_len);
        let op = || format!("delete address {addr}/{prefix_len} dev with index {index}");
        match self.change(RouteNetlinkMessage::DelAddress(msg.build()), 0, &op) {
            Ok(()) => {
                tracing::debug!(index, %addr, prefix_len, "address deleted");
                Ok(true)
            }
            // EADDRNOTAVAIL for an absent address, ENODEV for an absent link.
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses of link `index`, as `(address, prefix length)`, in the kernel's
    /// order. Equals `ip -4 addr show dev X`.
    pub fn addrs_v4(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        // With strict checking the kernel filters on the index; we filter again below for
        // kernels without it.
        req.header.index = index;
        let answers = self.dump(RouteNetlinkMessage::GetAddress(req), &|| {
            format!("show IPv4 addresses of the link with index {index}")
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .filter_map(|a| {
                // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only
                // on point-to-point links, where it is the peer's.
                let local = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let address = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                local.or(address).map(|ip| (ip, a.header.prefix_len))
            })
            .collect())
    }

    /// The IPv6 addresses of link `index` of global scope (global and unique local; not
    /// link-local), not tentative, not failed DAD, in the kernel's order. Equals `ip -6 addr
    /// show dev X scope global -tentative -dadfailed`.
    pub fn addrs_v6_global(&mut self, index: u32) -> Result<Vec<Ipv6Addr>, NetlinkError> {
        // IFA_F_TENTATIVE, IFA_F_DADFAILED
        const UNUSABLE: u32 = 0x40 | 0x08;
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet6;
        req.header.index = index;
        let answers = self.dump(RouteNetlinkMessage::GetAddress(req), &|| {
            format!("show IPv6 addresses of the link with index {index}")
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index
                        && a.header.scope
                            == netlink_packet_route::address::AddressScope::Universe =>
                {
                    Some(a)
                }
                _ => None,
            })
            .filter_map(|a| {
                let flags = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Flags(f) => Some(f.bits()),
                    _ => None,
                });
                if flags.unwrap_or(u32::from(a.header.flags.bits())) & UNUSABLE != 0 {
                    return None;
                }
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V6(ip)) => Some(*ip),
                    _ => None,
                })
            })
            .collect())
    }
}

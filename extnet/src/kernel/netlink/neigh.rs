//! Neighbour entries (`ip neigh`): the permanent IPv6 entries of a netns job's veth pair.

use std::net::{IpAddr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

impl Netlink {
    /// Makes `addr` on link `index` a permanent neighbour at MAC `lladdr`: the kernel never
    /// solicits or probes it. Idempotent. Equals `ip -6 neigh replace ADDR lladdr MAC dev X
    /// nud permanent`.
    pub fn neigh6_permanent(
        &mut self,
        index: u32,
        addr: Ipv6Addr,
        lladdr: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::Permanent;
        msg.header.kind = RouteType::Unspec;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                addr,
            )));
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
        let mac = lladdr.map(|b| format!("{b:02x}")).join(":");
        self.change(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| {
                format!(
                    "replace neighbour {addr} lladdr {mac} dev with index {index} nud permanent"
                )
            },
        )?;
        tracing::debug!(index, addr = %IpAddr::V6(addr), %mac, "permanent neighbour set");
        Ok(())
    }
}

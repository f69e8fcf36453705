//! IPv4 routes in numbered tables (`ip route ... table N`), and the IPv6 routes extnet makes
//! (`ip -6 route ... table N`): a table's `unreachable default`, and with `node.gateway6`
//! the external table's and the hold table's routes ([`Route6`]).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError};

/// One IPv4 route: its key is `(table, dst)` (metric 0, no TOS), as for `ip route replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub table: u32,
    pub dst: Ipv4Net,
    pub kind: RouteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// Forward: `via GATEWAY`, `dev X` (interface index), or both.
    Unicast {
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
    },
    /// Leave this table and go on with the next `ip rule` (`ip route add throw DST`).
    Throw,
    /// Drop with ICMP host unreachable (`ip route add unreachable DST`): a fail-closed default.
    Unreachable,
    /// Drop silently (`ip route add blackhole DST`).
    Blackhole,
    /// Drop with ICMP administratively prohibited (`ip route add prohibit DST`).
    Prohibit,
}

/// Written as `ip route` would take it: `default via 10.99.0.254 table 7700`,
/// `throw 10.0.0.0/8 table 7700`, `10.99.0.2 dev if#12 table 7700`.
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RouteKind::Unicast { .. } => "",
            RouteKind::Throw => "throw ",
            RouteKind::Unreachable => "unreachable ",
            RouteKind::Blackhole => "blackhole ",
            RouteKind::Prohibit => "prohibit ",
        };
        write!(f, "{kind}")?;
        if self.dst.prefix_len() == 0 {
            write!(f, "default")?;
        } else if self.dst.prefix_len() == 32 {
            write!(f, "{}", self.dst.addr())?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let RouteKind::Unicast { gateway, oif } = self.kind {
            if let Some(gw) = gateway {
                write!(f, " via {gw}")?;
            }
            if let Some(oif) = oif {
                write!(f, " dev if#{oif}")?;
            }
        }
        write!(f, " table {}", self.table)
    }
}

impl Route {
    /// Whether `actual`, as [`Netlink::routes`] read it, is this route: same table, destination
    /// and kind, and the same gateway and interface where this one names them. The kernel
    /// fills in the interface of a route given only a gateway, so `oif: None` matches any.
    pub fn matches(&self, actual: &Route) -> bool {
        if (self.table, self.dst) != (actual.table, actual.dst) {
            return false;
        }
        match (self.kind, actual.kind) {
            (
                RouteKind::Unicast { gateway, oif },
                RouteKind::Unicast {
                    gateway: actual_gateway,
                    oif: actual_oif,
                },
            ) => {
                gateway.is_none_or(|g| Some(g) == actual_gateway)
                    && oif.is_none_or(|o| Some(o) == actual_oif)
            }
            (wanted, actual) => wanted == actual,
        }
    }
}

impl RouteKind {
    fn route_type(self) -> RouteType {
        match self {
            RouteKind::Unicast { .. } => RouteType::Unicast,
            RouteKind::Throw => RouteType::Throw,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Prohibit => RouteType::Prohibit,
        }
    }
}

/// The request message shared by replace and delete.
fn message(route: &Route) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .table_id(route.table)
        .kind(route.kind.route_type());
    if let RouteKind::Unicast { gateway, oif } = route.kind {
        if let Some(gw) = gateway {
            b = b.gateway(gw);
        }
        if let Some(oif) = oif {
            b = b.output_interface(oif);
        }
        // Like `ip route`: a route without a gateway reaches its destination directly on the
        // link, so its scope is link.
        if gateway.is_none() {
            b = b.scope(RouteScope::Link);
        }
    }
    let mut msg = b.build();
    if route.table > 255 {
        // The builder sent the table in RTA_TABLE; the 8-bit header field says "see
        // attribute" like iproute2 does, instead of the builder's "main".
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    }
    msg
}

impl Netlink {
    /// Creates `route`, or replaces the route with the same table and destination. Idempotent.
    /// Equals `ip route replace ...` (`NLM_F_CREATE|NLM_F_REPLACE`).
    pub fn route_replace(&mut self, route: &Route) -> Result<(), NetlinkError> {
        self.change(
            RouteNetlinkMessage::NewRoute(message(route)),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("replace route {route}"),
        )?;
        tracing::debug!(%route, "route replaced");
        Ok(())
    }

    /// Deletes `route`: `Ok(false)` when no route matches. A gateway or interface left `None`
    /// matches any. Equals `ip route del ...`.
    pub fn route_del(&mut self, route: &Route) -> Result<bool, NetlinkError> {
        let mut msg = message(route);
        // Like `ip route del`: match any scope and protocol.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        match self.change(RouteNetlinkMessage::DelRoute(msg), 0, &|| {
            format!("delete route {route}")
        }) {
            Ok(()) => {
                tracing::debug!(%route, "route deleted");
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The interface the kernel would send an unmarked packet for `dst` out of, if it has a
    /// route for it (`None`: unreachable). Equals `ip route get DST` (its `dev`).
    pub fn route_get_oif(&mut self, dst: Ipv4Addr) -> Result<Option<u32>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        req.header.destination_prefix_length = 32;
        req.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let answers = match self.get(RouteNetlinkMessage::GetRoute(req), &|| {
            format!("get route {dst}")
        }) {
            Ok(a) => a,
            Err(e)
                if matches!(
                    e.errno(),
                    Some(nix::errno::Errno::ENETUNREACH | nix::errno::Errno::EHOSTUNREACH)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(answers.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// The IPv4 routes of table `table`; empty when the table does not exist. Route types other
    /// than those of [`RouteKind`] (local, broadcast, ...: never in extnet's tables) are left
    /// out. Equals `ip route show table N`.
    pub fn routes(&mut self, table: u32) -> Result<Vec<Route>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        // With strict checking the kernel dumps this one table only (and says ENOENT when it
        // does not exist); we filter again below for kernels without it.
        req.attributes.push(RouteAttribute::Table(table));
        let answers = match self.dump(RouteNetlinkMessage::GetRoute(req), &|| {
            format!("show routes of table {table}")
        }) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse(&r),
                _ => None,
            })
            .filter(|r| r.table == table)
            .collect())
    }
}

impl Netlink {
    /// Makes table `table`'s IPv6 default route `unreachable`: a packet routed by that table
    /// is refused at its route lookup (`connect` and `sendto` fail with `EHOSTUNREACH`).
    /// Idempotent. Equals `ip -6 route replace unreachable default table T`.
    pub fn route6_unreachable_default(&mut self, table: u32) -> Result<(), NetlinkError> {
        let mut msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .table_id(table)
            .kind(RouteType::Unreachable)
            .build();
        if table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        self.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("replace IPv6 route unreachable default table {table}"),
        )?;
        tracing::debug!(table, "IPv6 unreachable default route replaced");
        Ok(())
    }

    /// Deletes table `table`'s IPv6 default route, of any kind: `Ok(false)` when there is
    /// none. Equals `ip -6 route del default table T`.
    pub fn route6_del_default(&mut self, table: u32) -> Result<bool, NetlinkError> {
        let mut msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .table_id(table)
            .build();
        if table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        match self.change(RouteNetlinkMessage::DelRoute(msg), 0, &|| {
            format!("delete IPv6 default route of table {table}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether table `table` has an IPv6 `unreachable default` route. Equals looking for it
    /// in `ip -6 route show table T`.
    pub fn has_route6_unreachable_default(&mut self, table: u32) -> Result<bool, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet6;
        req.attributes.push(RouteAttribute::Table(table));
        let answers = match self.dump(RouteNetlinkMessage::GetRoute(req), &|| {
            format!("show IPv6 routes of table {table}")
        }) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(answers.iter().any(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => {
                let t = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                r.header.address_family == AddressFamily::Inet6
                    && r.header.kind == RouteType::Unreachable
                    && r.header.destination_prefix_length == 0
                    && t.unwrap_or(u32::from(r.header.table)) == table
            }
            _ => false,
        }))
    }
}

/// One IPv6 route of a numbered table: `default via GW dev X`, `default dev X` or `throw
/// NET` (metric 0, as `ip -6 route replace` makes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route6 {
    pub table: u32,
    pub dst: Ipv6Net,
    /// `None`: a `throw` route.
    pub via: Option<(Option<Ipv6Addr>, u32)>,
}

impl fmt::Display for Route6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dst = if self.dst.prefix_len() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        match self.via {
            None => write!(f, "throw {dst}")?,
            Some((gw, oif)) => {
                write!(f, "{dst}")?;
                if let Some(gw) = gw {
                    write!(f, " via {gw}")?;
                }
                write!(f, " dev if#{oif}")?;
            }
        }
        write!(f, " table {}", self.table)
    }
}

impl Netlink {
    /// Creates `route`, or replaces the IPv6 route with the same table and destination.
    /// Equals `ip -6 route replace ...`.
    pub fn route6_replace(&mut self, route: &Route6) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .table_id(route.table);
        match route.via {
            None => b = b.kind(RouteType::Throw),
            Some((gw, oif)) => {
                b = b.kind(RouteType::Unicast).output_interface(oif);
                if let Some(gw) = gw {
                    b = b.gateway(gw);
                }
            }
        }
        let mut msg = b.build();
        if route.table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        self.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &|| format!("replace IPv6 route {route}"),
        )?;
        tracing::debug!(%route, "IPv6 route replaced");
        Ok(())
    }

    /// Deletes the IPv6 route of `route`'s table and destination, of any kind: `Ok(false)`
    /// when there is none. Equals `ip -6 route del DST table T`.
    pub fn route6_del(&mut self, route: &Route6) -> Result<bool, NetlinkError> {
        let mut msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .table_id(route.table)
            .build();
        if route.table > 255 {
            msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        match self.change(RouteNetlinkMessage::DelRoute(msg), 0, &|| {
            format!("delete IPv6 route {route}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv6 unicast and throw routes of table `table` (others are left out). Equals `ip
    /// -6 route show table T`.
    pub fn routes6(&mut self, table: u32) -> Result<Vec<Route6>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet6;
        req.attributes.push(RouteAttribute::Table(table));
        let answers = match self.dump(RouteNetlinkMessage::GetRoute(req), &|| {
            format!("show IPv6 routes of table {table}")
        }) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse6(r),
                _ => None,
            })
            .filter(|r| r.table == table)
            .collect())
    }
}

/// A dumped route as a [`Route6`], when it is IPv6 unicast or throw.
fn parse6(msg: &RouteMessage) -> Option<Route6> {
    if msg.header.address_family != AddressFamily::Inet6 {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = Ipv6Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let via = match msg.header.kind {
        RouteType::Unicast => Some((gateway, oif?)),
        RouteType::Throw => None,
        _ => return None,
    };
    let dst = Ipv6Net::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(Route6 { table, dst, via })
}

/// A dumped route as a [`Route`], when it is IPv4 and of a kind we know.
fn parse(msg: &RouteMessage) -> Option<Route> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let kind = match msg.header.kind {
        RouteType::Unicast => RouteKind::Unicast { gateway, oif },
        RouteType::Throw => RouteKind::Throw,
        RouteType::Unreachable => RouteKind::Unreachable,
        RouteType::BlackHole => RouteKind::Blackhole,
        RouteType::Prohibit => RouteKind::Prohibit,
        _ => return None,
    };
    let dst = Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(Route { table, dst, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_like_ip_route() {
        let r = |dst: &str, kind| Route {
            table: 7700,
            dst: dst.parse().unwrap(),
            kind,
        };
        let gw = Some(Ipv4Addr::new(10, 99, 0, 254));
        assert_eq!(
            r(
                "0.0.0.0/0",
                RouteKind::Unicast {
                    gateway: gw,
                    oif: None
                }
            )
            .to_string(),
            "default via 10.99.0.254 table 7700"
        );
        assert_eq!(
            r("10.0.0.0/8", RouteKind::Throw).to_string(),
            "throw 10.0.0.0/8 table 7700"
        );
        assert_eq!(
            r(
                "10.99.0.2/32",
                RouteKind::Unicast {
                    gateway: None,
                    oif: Some(12)
                }
            )
            .to_string(),
            "10.99.0.2 dev if#12 table 7700"
        );
    }

    #[test]
    fn a_route_without_interface_matches_the_one_the_kernel_resolved() {
        let gw = Some(Ipv4Addr::new(10, 99, 0, 1));
        let wanted = Route {
            table: 254,
            dst: "0.0.0.0/0".parse().unwrap(),
            kind: RouteKind::Unicast {
                gateway: gw,
                oif: None,
            },
        };
        let dumped = Route {
            kind: RouteKind::Unicast {
                gateway: gw,
                oif: Some(2),
            },
            ..wanted
        };
        assert!(wanted.matches(&dumped));
        assert!(!dumped.matches(&Route {
            kind: RouteKind::Unicast {
                gateway: gw,
                oif: Some(3)
            },
            ..wanted
        }));
        assert!(!wanted.matches(&Route {
            kind: RouteKind::Unicast {
                gateway: None,
                oif: Some(2)
            },
            ..wanted
        }));
        assert!(!wanted.matches(&Route {
            table: 7700,
            ..dumped
        }));
        assert!(!wanted.matches(&Route {
            kind: RouteKind::Throw,
            ..wanted
        }));
    }

    #[test]
    fn built_messages_round_trip_through_parse() {
        let routes = [
            Route {
                table: 7700,
                dst: "0.0.0.0/0".parse().unwrap(),
                kind: RouteKind::Unicast {
                    gateway: Some(Ipv4Addr::new(10, 99, 0, 254)),
                    oif: None,
                },
            },
            Route {
                table: 100,
                dst: "10.99.0.2/32".parse().unwrap(),
                kind: RouteKind::Unicast {
                    gateway: None,
                    oif: Some(3),
                },
            },
            Route {
                table: 7700,
                dst: "10.0.0.0/8".parse().unwrap(),
                kind: RouteKind::Throw,
            },
        ];
        for route in routes {
            let msg = message(&route);
            assert_eq!(parse(&msg), Some(route));
            let expect_header_table = if route.table > 255 {
                0
            } else {
                route.table as u8
            };
            assert_eq!(msg.header.table, expect_header_table);
        }
    }
}

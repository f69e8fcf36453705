//! `[node]`: how job traffic leaves the node. The interface must be a name the kernel
//! accepts; the internal networks of each family must not overlap and must hold that
//! family's gateway, which the node reaches directly; the routing table must be one the kernel does not keep for itself; the
//! packet mark must leave its low 16 bits to the job's slot; and the netns link range must
//! hold at least one /30 and be clear of every internal network, or job links would shadow
//! real hosts.

use super::{span, Span, Validator};
use crate::raw::RawNode;
use crate::{Mode, NodeConfig};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::Ipv6Addr;
use std::path::PathBuf;

/// `node.route_table` when the file gives none.
const DEFAULT_TABLE: u32 = 7700;
/// `node.fwmark` when the file gives none.
const DEFAULT_FWMARK: u32 = 0x0001_0000;
/// `node.checked_fwmark` when the file gives none.
const DEFAULT_CHECKED_FWMARK: u32 = 0x0002_0000;
/// The MTUs `node.netns_mtu` may name: IPv6's minimum link MTU up to the largest IPv4 packet.
const NETNS_MTU: std::ops::RangeInclusive<u32> = 1280..=65535;
/// The most nameservers glibc's resolver reads from `resolv.conf` (`MAXNS`).
const MAX_NAMESERVERS: usize = 3;
/// The bits of the packet mark that carry the job's slot.
pub(super) const SLOT_MASK: u32 = 0xffff;
/// The routing tables the kernel keeps for itself, as messages name them.
pub(super) const RESERVED_TABLES: &str = "0, 253 default, 254 main, 255 local";

/// True for a routing table the kernel keeps for itself ([`RESERVED_TABLES`]).
pub(super) fn reserved_table(table: u32) -> bool {
    table == 0 || (253..=255).contains(&table)
}

impl Validator<'_> {
    /// The node settings, and where `netns_subnet` and `netns_subnet6` are written (or the
    /// `[node]` header when the default is used or the key missing), for the cross-checks
    /// with the pools and profiles.
    pub(super) fn node(&mut self, raw: RawNode) -> (Option<NodeConfig>, Span, Span) {
        let start = self.errors.len();
        let iface = raw.interface.get_ref();
        if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
            self.err_at(
                "node.interface",
                span(&raw.interface),
                format!("{iface:?} is not a network interface name"),
                "name the node's cluster interface, as `ip link` shows it (e.g. \"ib0\")",
            );
        }
        let gateway = self.gateway(
            "node.gateway",
            &raw.gateway,
            raw.gateway.get_ref(),
            "10.20.3.227",
        );
        let mut internal: Vec<(Ipv4Net, Span)> = Vec::new();
        for s in &raw.internal {
            if let Some(n) = self.ipv4_net(
                "node.internal",
                s,
                "internal networks",
                "10.20.0.0/16",
                "node.internal6",
            ) {
                internal.push((n, span(s)));
            }
        }
        let internal: Vec<Ipv4Net> = self
            .disjoint(
                "node.internal",
                internal.into_iter().map(|(n, at)| (n.into(), at)),
            )
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect();
        if let Some(gw) = gateway {
            self.gateway_is_internal(
                "node.internal",
                &raw.gateway,
                gw,
                &internal,
                "list the cluster network that holds the gateway's address in `internal`",
            );
        }
        let (gateway6, internal6) = self.node_ipv6(&raw);
        let route_table = raw
            .route_table
            .as_ref()
            .map_or(DEFAULT_TABLE, |t| *t.get_ref());
        if reserved_table(route_table) {
            self.err_at(
                "node.route_table",
                raw.route_table.as_ref().and_then(span),
                format!("table {route_table} is reserved ({RESERVED_TABLES})"),
                "pick a free table number, e.g. 7700",
            );
        }
        let fwmark = raw.fwmark.as_ref().map_or(DEFAULT_FWMARK, |m| *m.get_ref());
        if fwmark == 0 || fwmark & SLOT_MASK != 0 {
            self.err_at(
                "node.fwmark",
                raw.fwmark.as_ref().and_then(span),
                format!("0x{fwmark:x} overlaps the low 16 bits, which carry the job's slot"),
                "use a flag above bit 15, e.g. 0x10000",
            );
        }
        let checked_fwmark = raw
            .checked_fwmark
            .as_ref()
            .map_or(DEFAULT_CHECKED_FWMARK, |m| *m.get_ref());
        if checked_fwmark == 0 || checked_fwmark & (SLOT_MASK | fwmark) != 0 {
            self.err_at(
                "node.checked_fwmark",
                raw.checked_fwmark.as_ref().and_then(span),
                format!(
                    "0x{checked_fwmark:x} is 0 or overlaps the low 16 bits (the job's slot) or node.fwmark (0x{fwmark:x})"
                ),
                "use a bit above bit 15 that node.fwmark does not use, e.g. 0x20000",
            );
        }
        // the hold table's rule goes just after the main one
        let rule_priority = raw.rule_priority.unwrap_or(route_table);
        if rule_priority == u32::MAX {
            self.err_at(
                "node.rule_priority",
                self.offset_of("rule_priority").map(|o| o..o),
                format!("{rule_priority} leaves no room for the hold table's rule just after it"),
                "pick a lower priority (default: node.route_table)",
            );
        }
        let hold_table = raw
            .hold_table
            .as_ref()
            .map_or(route_table.wrapping_sub(1), |t| *t.get_ref());
        let hold_problem = if reserved_table(hold_table) {
            Some(format!(
                "table {hold_table} is reserved ({RESERVED_TABLES})"
            ))
        } else if hold_table == route_table {
            Some(format!("table {hold_table} is node.route_table"))
        } else {
            None
        };
        if let Some(problem) = hold_problem {
            self.err_at(
                "node.hold_table",
                raw.hold_table.as_ref().and_then(span),
                problem,
                "pick a free table number other than node.route_table and its pools' (default: node.route_table - 1)",
            );
        }
        let subnet_text = raw
            .netns_subnet
            .as_ref()
            .map_or("100.64.0.0/16", |s| s.get_ref().as_str());
        let subnet_span = raw
            .netns_subnet
            .as_ref()
            .and_then(span)
            .or_else(|| self.offset_of("[node]").map(|o| o..o));
        let netns_subnet = match subnet_text.parse::<Ipv4Net>() {
            Ok(n) if n.prefix_len() <= 30 => Some(n.trunc()),
            _ => {
                self.err_at(
                    "node.netns_subnet",
                    subnet_span.clone(),
                    format!("{subnet_text:?} is not an IPv4 network of /30 or larger"),
                    "use a node-private range that no real network uses, e.g. \"100.64.0.0/16\"",
                );
                None
            }
        };
        if let Some(ns) = netns_subnet {
            for n in &internal {
                if n.contains(&ns.network()) || ns.contains(&n.network()) {
                    self.err_at(
                        "node.netns_subnet",
                        subnet_span.clone(),
                        format!("{ns} overlaps the internal network {n}"),
                        "pick a range that no real network uses",
                    );
                }
            }
        }
        let (netns_subnet6, subnet6_span) = self.netns_subnet6(&raw, &internal6);
        let netns_mtu = raw.netns_mtu.as_ref().map(|m| *m.get_ref());
        if let Some(mtu) = netns_mtu.filter(|m| !NETNS_MTU.contains(m)) {
            self.err_at(
                "node.netns_mtu",
                raw.netns_mtu.as_ref().and_then(span),
                format!(
                    "{mtu} is outside {}..={} (IPv6's minimum MTU up to the largest IPv4 packet)",
                    NETNS_MTU.start(),
                    NETNS_MTU.end()
                ),
                "leave netns_mtu out to follow node.interface's MTU, or give that of the link towards the gateway (e.g. 1500, 2044 for IPoIB, 9000)",
            );
        }
        let mut netns_nameservers = Vec::new();
        for ns in &raw.netns_nameservers {
            let text = ns.get_ref();
            let problem = match text.parse::<std::net::Ipv4Addr>() {
                Err(_) => Some(format!("{text:?} is not an IPv4 address")),
                Ok(a) if a.is_loopback() || a.is_unspecified() => Some(format!(
                    "{a} is not reachable from a job's network namespace"
                )),
                Ok(a) => {
                    netns_nameservers.push(a);
                    None
                }
            };
            if let Some(problem) = problem {
                self.err_at(
                    "node.netns_nameservers",
                    span(ns),
                    problem,
                    "name resolvers that the job reaches over its path out or the cluster network, e.g. [\"10.20.0.53\"]",
                );
            }
        }
        if netns_nameservers.len() > MAX_NAMESERVERS {
            self.err_at(
                "node.netns_nameservers",
                raw.netns_nameservers.get(MAX_NAMESERVERS).and_then(span),
                format!(
                    "{} nameservers, but the C library uses only the first {MAX_NAMESERVERS}",
                    netns_nameservers.len()
                ),
                "list at most 3",
            );
        }
        if self.errors.len() > start {
            return (None, subnet_span, subnet6_span);
        }
        let node = (|| {
            Some(NodeConfig {
                mode: raw.mode.unwrap_or(Mode::Cgroup),
                interface: raw.interface.into_inner(),
                gateway: gateway?,
                internal,
                gateway6,
                internal6,
                route_table,
                rule_priority,
                fwmark,
                checked_fwmark,
                hold_table,
                state_dir: raw.state_dir.unwrap_or_else(|| "/run/extnet".into()),
                cgroup_root: raw.cgroup_root,
                netns_subnet: netns_subnet?,
                netns_subnet6,
                netns_dir: PathBuf::from(raw.netns_dir.unwrap_or_else(|| "/run/netns".into())),
                netns_mtu,
                netns_nameservers,
            })
        })();
        (node, subnet_span, subnet6_span)
    }

    /// `node.netns_subnet6`, when given: a unique local IPv6 network (`fc00::/7`) of /126 or
    /// larger, written as its network address and clear of every `internal6` network, or
    /// job links would shadow real hosts. Returns it with where it is written (or the
    /// `[node]` header, where a missing one belongs).
    fn netns_subnet6(&mut self, raw: &RawNode, internal6: &[Ipv6Net]) -> (Option<Ipv6Net>, Span) {
        let header = || self.offset_of("[node]").map(|o| o..o);
        let Some(s) = raw.netns_subnet6.as_ref() else {
            return (None, header());
        };
        let at = span(s).or_else(header);
        let key = "node.netns_subnet6";
        let example = "fd00:78e7:ffff::/112";
        let Some(net) = self.ipv6_net(key, s, "netns job links", example, "node.netns_subnet")
        else {
            return (None, at);
        };
        let ula: Ipv6Net = "fc00::/7".parse().expect("a network");
        let problem = if net.prefix_len() > 126 {
            Some(format!("{net} is smaller than one /126 job link"))
        } else if !ula.contains(&net) {
            Some(format!("{net} is not a unique local network (fc00::/7)"))
        } else {
            internal6
                .iter()
                .find(|n| n.contains(&net.network()) || net.contains(&n.network()))
                .map(|n| format!("{net} overlaps the internal IPv6 network {n}"))
        };
        if let Some(problem) = problem {
            self.err_at(
                key,
                at.clone(),
                problem,
                &format!("use a unique local range that no real network uses, e.g. {example:?} (a /112 holds 16384 job links)"),
            );
            return (None, at);
        }
        (Some(net), at)
    }

    /// The networks of `key`, each reported where it overlaps an earlier one.
    fn disjoint(&mut self, key: &str, nets: impl Iterator<Item = (IpNet, Span)>) -> Vec<IpNet> {
        let nets: Vec<(IpNet, Span)> = nets.collect();
        for (i, (a, at)) in nets.iter().enumerate() {
            for (b, _) in &nets[..i] {
                if a.contains(b) || b.contains(a) {
                    self.err_at(
                        key,
                        at.clone(),
                        format!("{a} and {b} overlap"),
                        "list each internal network once; keep the larger one",
                    );
                }
            }
        }
        nets.into_iter().map(|(n, _)| n).collect()
    }

    /// `node.gateway6` and `node.internal6`: IPv6 networks that never go to the gateway, not
    /// overlapping, and the gateways' IPv6 virtual address, which must lie inside one of them
    /// (the node reaches it directly, as `node.gateway`).
    fn node_ipv6(&mut self, raw: &RawNode) -> (Option<Ipv6Addr>, Vec<Ipv6Net>) {
        let mut internal6: Vec<(Ipv6Net, Span)> = Vec::new();
        for s in &raw.internal6 {
            if let Some(n) = self.ipv6_net(
                "node.internal6",
                s,
                "internal IPv6 networks",
                "fd00:78e7::/48",
                "node.internal",
            ) {
                internal6.push((n, span(s)));
            }
        }
        let internal6: Vec<Ipv6Net> = self
            .disjoint(
                "node.internal6",
                internal6.into_iter().map(|(n, at)| (n.into(), at)),
            )
            .into_iter()
            .filter_map(|n| match n {
                IpNet::V6(n) => Some(n),
                IpNet::V4(_) => None,
            })
            .collect();
        let gateway6 = raw
            .gateway6
            .as_ref()
            .and_then(|g| Some((g, self.gateway6("node.gateway6", g, "fd00:78e7::1")?)));
        if let Some((s, gw)) = gateway6 {
            if !internal6.iter().any(|n| n.contains(&gw)) {
                self.err_at(
                    "node.gateway6",
                    span(s),
                    format!("the IPv6 gateway {gw} is not inside any network of node.internal6"),
                    "list the cluster's IPv6 network that holds it in node.internal6, e.g. internal6 = [\"fd00:78e7::/48\"]",
                );
            }
        }
        (gateway6.map(|(_, g)| g), internal6)
    }
}

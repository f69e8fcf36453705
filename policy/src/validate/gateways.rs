//! `[gateways]`: the gateway hosts, their virtual addresses, the nodes behind each, and the
//! public port range cut into one slice per node (see `crate::gateways` for the mapping).
//! Checked here: every name, address and number on its own; that names and addresses are
//! unique; that every pool fits one node's slice; that every virtual address has the public
//! addresses its nodes need; that the nodes' gateways (`node.gateway`, a profile's
//! `gateway`) are virtual addresses of the section and list the nodes they carry. IPv6
//! (`address6`, `public6`, `cluster_address6`, `public_address6`, `first_address6`) is
//! checked as its IPv4 twin, and for consistency: a virtual address with `address6` has
//! `public6` enough for its nodes, holders with IPv6 on both links and nodes with IPv6
//! addresses.

use super::pools::PoolDraft;
use super::{span, Span, Validator};
use crate::gateways::{GatewayHost, Gateways, Vip};
use crate::hostlist;
use crate::raw::{RawGatewayHost, RawGateways, RawVip, S};
use crate::{NodeConfig, Pool};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

impl Validator<'_> {
    /// The whole section; `None` when anything in it is invalid (errors recorded).
    pub(super) fn gateways(
        &mut self,
        raw: S<RawGateways>,
        node: Option<&NodeConfig>,
        pools: Option<&[Pool]>,
        drafts: &[PoolDraft],
    ) -> Option<Gateways> {
        let start = self.errors.len();
        let section = span(&raw);
        let raw = raw.into_inner();
        let range = self.port_range("gateways.ports", &raw.ports);
        let per_node = *raw.ports_per_node.get_ref();
        if let Some((first, last)) = range {
            let len = u32::from(last) - u32::from(first) + 1;
            if per_node == 0 || per_node > len {
                self.err_at(
                    "gateways.ports_per_node",
                    span(&raw.ports_per_node),
                    format!("{per_node} ports per node does not fit the public range {first}-{last} ({len} ports)"),
                    "give each node a slice between 1 and the range's length; the node's pools as written must fit in it",
                );
            } else {
                self.pools_fit_slice(first, per_node, drafts);
            }
        }
        let check = raw.check.as_ref().and_then(|c| {
            let text = c.get_ref().trim();
            let a = match text.split_once(':') {
                None => text.parse::<Ipv4Addr>().ok().map(|a| (a, None)),
                Some((a, p)) => a
                    .parse::<Ipv4Addr>()
                    .ok()
                    .zip(p.parse::<u16>().ok().filter(|&p| p > 0))
                    .map(|(a, p)| (a, Some(p))),
            };
            if a.is_none() {
                self.err_at(
                    "gateways.check",
                    span(c),
                    format!("{:?} is not an IPv4 address or ADDRESS:PORT", c.get_ref()),
                    "give an outside address each gateway must reach through its public interface (pinged), e.g. the upstream router, or ADDRESS:PORT of a TCP service there",
                );
            }
            a
        });
        let fill = raw.conntrack_max_fill.as_ref().map_or(90, |f| *f.get_ref());
        if !(1..=100).contains(&fill) {
            self.err_at(
                "gateways.conntrack_max_fill",
                raw.conntrack_max_fill.as_ref().and_then(span),
                format!("{fill} is not a percentage 1..=100"),
                "90 gives a peer an address before the table is full",
            );
        }
        let advert = match (&raw.advert_secs, &raw.advert_ms) {
            (Some(_), Some(ms)) => {
                self.err_at(
                    "gateways.advert_ms",
                    span(ms),
                    "advert_secs and advert_ms both set".to_owned(),
                    "keep one: advert_ms = 500 (VRRPv3, sub-second) or advert_secs = 1",
                );
                1000
            }
            (Some(raw_secs), None) => {
                let secs = *raw_secs.get_ref();
                if !(1..=255).contains(&secs) {
                    self.err_at(
                        "gateways.advert_secs",
                        span(raw_secs),
                        format!("{secs} s is outside 1..=255"),
                        "1 lets a backup take over within about 3.5 s; advert_ms for less",
                    );
                }
                secs.saturating_mul(1000)
            }
            (None, Some(ms)) => {
                let v = *ms.get_ref();
                // VRRPv3 counts the interval in centiseconds, 12 bits of them
                if !(10..=40_950).contains(&v) || v % 10 != 0 {
                    self.err_at(
                        "gateways.advert_ms",
                        span(ms),
                        format!("{v} ms is not a multiple of 10 ms within 10..=40950 (VRRPv3's centiseconds)"),
                        "500 lets a backup take over within about 2 s; below 200 a loaded gateway may fail over when busy, not dead",
                    );
                }
                v
            }
            (None, None) => 1000,
        };
        let hosts: Vec<GatewayHost> = raw
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| self.gateway_host(i, h))
            .collect();
        self.unique(
            "gateways.host",
            raw.hosts
                .iter()
                .map(|h| (h.get_ref().name.get_ref().clone(), span(&h.get_ref().name))),
            "host name",
        );
        if raw.hosts.is_empty() {
            self.err_at(
                "gateways.host",
                section.clone(),
                "[gateways] has no [[gateways.host]]".into(),
                "describe each gateway machine: name, cluster_interface, cluster_address, public_interface, public_address",
            );
        }
        let node_addresses = self.node_addresses(&raw);
        let node_addresses6 = self.node_addresses6(&raw);
        let host_names: HashSet<&str> = raw
            .hosts
            .iter()
            .map(|h| h.get_ref().name.get_ref().as_str())
            .collect();
        let public_of_hosts: HashSet<Ipv4Addr> =
            hosts.iter().map(|h| h.public_address.addr()).collect();
        let public6_of_hosts: HashSet<Ipv6Addr> = hosts
            .iter()
            .filter_map(|h| h.public_address6.map(|a| a.addr()))
            .collect();
        let mut vips = Vec::new();
        for (i, v) in raw.vips.iter().enumerate() {
            let own_publics = (&public_of_hosts, &public6_of_hosts);
            if let Some(v) = self.vip(i, v, &host_names, &node_addresses, own_publics, node) {
                vips.push(v);
            }
        }
        if raw.vips.is_empty() {
            self.err_at(
                "gateways.vip",
                section,
                "[gateways] has no [[gateways.vip]]".into(),
                "give at least one virtual address with its public addresses, holders and nodes",
            );
        }
        self.unique(
            "gateways.vip",
            raw.vips
                .iter()
                .map(|v| (v.get_ref().name.get_ref().clone(), span(&v.get_ref().name))),
            "virtual address name",
        );
        self.unique(
            "gateways.vip",
            raw.vips.iter().map(|v| {
                (
                    v.get_ref().address.get_ref().trim().to_owned(),
                    span(&v.get_ref().address),
                )
            }),
            "virtual address",
        );
        self.unique(
            "gateways.vip",
            raw.vips.iter().map(|v| {
                (
                    v.get_ref().vrid.get_ref().to_string(),
                    span(&v.get_ref().vrid),
                )
            }),
            "vrid",
        );
        self.unique(
            "gateways.vip",
            raw.vips.iter().flat_map(|v| {
                v.get_ref()
                    .public
                    .iter()
                    .map(|p| (p.get_ref().trim().to_owned(), span(p)))
            }),
            "public address",
        );
        // IPv6 addresses compared as addresses: one address has many spellings
        let canonical = |s: &S<String>| {
            let t = s.get_ref().trim();
            t.parse::<Ipv6Addr>()
                .map_or(t.to_owned(), |a| a.to_string())
        };
        self.unique(
            "gateways.vip",
            raw.vips.iter().filter_map(|v| {
                let a = v.get_ref().address6.as_ref()?;
                Some((canonical(a), span(a)))
            }),
            "IPv6 virtual address",
        );
        self.unique(
            "gateways.vip",
            raw.vips
                .iter()
                .flat_map(|v| v.get_ref().public6.iter().map(|p| (canonical(p), span(p)))),
            "public IPv6 address",
        );
        if self.errors.len() != start || vips.len() != raw.vips.len() {
            return None;
        }
        let (first_port, last_port) = range?;
        let g = Gateways {
            first_port,
            last_port,
            ports_per_node: per_node,
            check,
            conntrack_max_fill: fill,
            advert_ms: advert,
            hosts,
            vips,
            node_addresses,
            node_addresses6,
        };
        self.capacity(&g, &raw.vips);
        self.ipv6_consistency(&g, &raw.vips);
        if let (Some(node), Some(pools)) = (node, pools) {
            self.pool_vips(&g, node, pools, drafts, &raw.vips);
        }
        (self.errors.len() == start).then_some(g)
    }

    /// `FIRST-LAST` with 1024 <= FIRST <= LAST.
    fn port_range(&mut self, key: &str, s: &S<String>) -> Option<(u16, u16)> {
        let parsed = s.get_ref().split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        match parsed {
            Some((a, b)) if a >= 1024 && a <= b => Some((a, b)),
            _ => {
                self.err_at(
                    key,
                    span(s),
                    format!(
                        "{:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535",
                        s.get_ref()
                    ),
                    "e.g. \"20000-65535\": the public ports the gateways translate to",
                );
                None
            }
        }
    }

    /// Every pool as written must lie in slice 0, `first .. first + per_node`.
    fn pools_fit_slice(&mut self, first: u16, per_node: u32, drafts: &[PoolDraft]) {
        let end = u32::from(first) + per_node - 1;
        for d in drafts {
            let Some(p) = d.checked.ports else { continue };
            if p.first < first || u32::from(p.last) > end {
                self.err_at(
                    &format!("{}.range", d.checked.key),
                    d.checked.range_span.clone(),
                    format!("ports {}-{} are outside the first node slice {first}-{end} ([gateways] ports starts at {first}, ports_per_node = {per_node}); with [gateways], the pools as written are node slice 0 and other nodes use them shifted by a multiple of ports_per_node", p.first, p.last),
                    "move every pool's range into the first slice, or raise ports_per_node",
                );
            }
        }
    }

    /// Records an error for every value seen before (same text).
    fn unique(&mut self, key: &str, values: impl Iterator<Item = (String, Span)>, what: &str) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for (v, at) in values {
            if let Some(first) = seen.get(&v) {
                let line = self.line(first);
                self.err_at(
                    key,
                    at,
                    format!(
                        "{what} {v:?} is given twice{}",
                        line.map_or(String::new(), |l| format!(" (first on line {l})"))
                    ),
                    &format!("each {what} must be unique"),
                );
            } else {
                seen.insert(v, at);
            }
        }
    }

    fn iface(&mut self, key: &str, s: &S<String>) -> String {
        let name = s.get_ref().trim();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            self.err_at(
                key,
                span(s),
                format!("{name:?} is not an interface name"),
                "an interface name has 1 to 15 characters, no '/' or space, e.g. \"eth0\"",
            );
        }
        name.to_owned()
    }

    /// `ADDRESS/PREFIX` of an interface (host bits set, unlike a network).
    fn iface_address(&mut self, key: &str, s: &S<String>) -> Option<Ipv4Net> {
        let n = s.get_ref().trim().parse::<Ipv4Net>().ok();
        if n.is_none() {
            self.err_at(
                key,
                span(s),
                format!("{:?} is not an IPv4 address with its prefix", s.get_ref()),
                "write ADDRESS/PREFIX, e.g. \"10.99.0.251/24\"",
            );
        }
        n
    }

    /// IPv6 `ADDRESS/PREFIX` of an interface; `Err` (recorded) when it is not one.
    fn iface_address6(&mut self, key: &str, s: &S<String>, example: &str) -> Result<Ipv6Net, ()> {
        let text = s.get_ref().trim();
        match text.parse::<Ipv6Net>() {
            Ok(n) if usable6(n.addr()) => Ok(n),
            Ok(n) => {
                self.err_at(
                    key,
                    span(s),
                    format!(
                        "{} is not a unicast address an interface can hold",
                        n.addr()
                    ),
                    &format!("give the link's own IPv6 address with its prefix, e.g. {example:?}"),
                );
                Err(())
            }
            Err(_) => {
                let problem = if text.parse::<Ipv4Net>().is_ok() {
                    format!("{text:?} is an IPv4 address; this key is the IPv6 one")
                } else {
                    format!("{text:?} is not an IPv6 address with its prefix")
                };
                self.err_at(
                    key,
                    span(s),
                    problem,
                    &format!("write ADDRESS/PREFIX, e.g. {example:?}"),
                );
                Err(())
            }
        }
    }

    /// One IPv6 unicast address (a virtual or public address); `None` (recorded) otherwise.
    fn address6(&mut self, key: &str, s: &S<String>, hint: &str) -> Option<Ipv6Addr> {
        let text = s.get_ref().trim();
        match text.parse::<Ipv6Addr>() {
            Ok(a) if usable6(a) => Some(a),
            Ok(a) => {
                self.err_at(
                    key,
                    span(s),
                    format!("{a} is not a unicast address a gateway can hold (unspecified, loopback, multicast, link-local or IPv4-mapped)"),
                    hint,
                );
                None
            }
            Err(_) => {
                let problem = if text.parse::<Ipv4Addr>().is_ok() {
                    format!("{text:?} is an IPv4 address; this key is the IPv6 one")
                } else if text.contains('/') {
                    format!("{text:?} has a prefix; this key is a single address")
                } else {
                    format!("{text:?} is not an IPv6 address")
                };
                self.err_at(key, span(s), problem, hint);
                None
            }
        }
    }

    fn gateway_host(&mut self, i: usize, h: &S<RawGatewayHost>) -> Option<GatewayHost> {
        let h = h.get_ref();
        let key = format!("gateways.host[{}]", i + 1);
        let name = h.name.get_ref().trim().to_owned();
        if !valid_name(&name) {
            self.err_at(
                &format!("{key}.name"),
                span(&h.name),
                format!("{name:?} is not a host name"),
                "letters, digits, '-', '_', '.', as the gateway's hostname",
            );
        }
        let cluster_interface =
            self.iface(&format!("{key}.cluster_interface"), &h.cluster_interface);
        let public_interface = self.iface(&format!("{key}.public_interface"), &h.public_interface);
        let sync_interface = match &h.sync_interface {
            Some(s) => self.iface(&format!("{key}.sync_interface"), s),
            None => cluster_interface.clone(),
        };
        let cluster_address =
            self.iface_address(&format!("{key}.cluster_address"), &h.cluster_address);
        let public_address =
            self.iface_address(&format!("{key}.public_address"), &h.public_address);
        let sync_address = match &h.sync_address {
            Some(s) => self.iface_address(&format!("{key}.sync_address"), s),
            None => cluster_address,
        };
        let cluster_address6 = h.cluster_address6.as_ref().map(|s| {
            self.iface_address6(&format!("{key}.cluster_address6"), s, "fd00:78e7::251/64")
        });
        let public_address6 = h
            .public_address6
            .as_ref()
            .map(|s| self.iface_address6(&format!("{key}.public_address6"), s, "2001:db8::1/64"));
        match (&h.cluster_address6, &h.public_address6) {
            (Some(c), None) => self.err_at(
                &format!("{key}.public_address6"),
                span(c),
                "cluster_address6 without public_address6".into(),
                "a gateway translates IPv6 only with IPv6 on both links: give public_address6 (ADDRESS/PREFIX) too, or remove cluster_address6",
            ),
            (None, Some(p)) => self.err_at(
                &format!("{key}.cluster_address6"),
                span(p),
                "public_address6 without cluster_address6".into(),
                "a gateway translates IPv6 only with IPv6 on both links: give cluster_address6 (ADDRESS/PREFIX) too, or remove public_address6",
            ),
            _ => {}
        }
        Some(GatewayHost {
            name,
            cluster_interface,
            cluster_address: cluster_address?,
            public_interface,
            public_address: public_address?,
            sync_interface,
            sync_address: sync_address?,
            cluster_address6: cluster_address6.transpose().ok()?,
            public_address6: public_address6.transpose().ok()?,
        })
    }

    /// `[[gateways.nodes]]`: names to consecutive addresses; names and addresses unique.
    fn node_addresses(&mut self, raw: &RawGateways) -> BTreeMap<String, Ipv4Addr> {
        let mut out = BTreeMap::new();
        let mut by_addr: HashMap<Ipv4Addr, String> = HashMap::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let n = n.get_ref();
            let key = format!("gateways.nodes[{}]", i + 1);
            let names = match hostlist::expand(n.names.get_ref().trim()) {
                Ok(v) => v,
                Err(e) => {
                    self.err_at(&format!("{key}.names"), span(&n.names), e.0, "write node names as Slurm does, e.g. \"n[1-512]\" or \"gpu[01-16],login1\"");
                    continue;
                }
            };
            let Ok(first) = n.first_address.get_ref().trim().parse::<Ipv4Addr>() else {
                self.err_at(
                    &format!("{key}.first_address"),
                    span(&n.first_address),
                    format!("{:?} is not an IPv4 address", n.first_address.get_ref()),
                    "give the first node's cluster address, e.g. \"10.99.0.11\"",
                );
                continue;
            };
            if u64::from(u32::from(first)) + names.len() as u64 > u64::from(u32::MAX) {
                self.err_at(
                    &format!("{key}.first_address"),
                    span(&n.first_address),
                    "the list runs past 255.255.255.255".into(),
                    "lower first_address",
                );
                continue;
            }
            for (j, name) in names.into_iter().enumerate() {
                let addr = Ipv4Addr::from(u32::from(first) + j as u32);
                if let Some(other) = by_addr.get(&addr) {
                    self.err_at(
                        &format!("{key}.first_address"),
                        span(&n.first_address),
                        format!("node {name:?} would get {addr}, which node {other:?} has already"),
                        "give each node its own address",
                    );
                    break;
                }
                if out.contains_key(&name) {
                    self.err_at(
                        &format!("{key}.names"),
                        span(&n.names),
                        format!("node {name:?} is listed twice in [[gateways.nodes]]"),
                        "list each node once",
                    );
                    break;
                }
                by_addr.insert(addr, name.clone());
                out.insert(name, addr);
            }
        }
        out
    }

    /// `[[gateways.nodes]] first_address6`: names to consecutive IPv6 addresses (lists
    /// without it: no IPv6); addresses unique. The names were checked by `node_addresses`.
    fn node_addresses6(&mut self, raw: &RawGateways) -> BTreeMap<String, Ipv6Addr> {
        let mut out = BTreeMap::new();
        let mut by_addr: HashMap<Ipv6Addr, String> = HashMap::new();
        for (i, n) in raw.nodes.iter().enumerate() {
            let n = n.get_ref();
            let Some(first6) = &n.first_address6 else {
                continue;
            };
            let key = format!("gateways.nodes[{}].first_address6", i + 1);
            let Some(first) = self.address6(
                &key,
                first6,
                "give the first node's IPv6 cluster address (its unique local address), e.g. \"fd00:78e7::11\"",
            ) else {
                continue;
            };
            let Ok(names) = hostlist::expand(n.names.get_ref().trim()) else {
                continue;
            };
            let last = u128::from(first)
                .checked_add(names.len().saturating_sub(1) as u128)
                .map(Ipv6Addr::from);
            if !last.is_some_and(usable6) {
                self.err_at(
                    &key,
                    span(first6),
                    format!("the list of {} nodes runs past the unicast addresses (into multicast or past the last IPv6 address)", names.len()),
                    "lower first_address6, e.g. to an address of your unique local prefix such as \"fd00:78e7::11\"",
                );
                continue;
            }
            for (j, name) in names.into_iter().enumerate() {
                let addr = Ipv6Addr::from(u128::from(first) + j as u128);
                if let Some(other) = by_addr.get(&addr) {
                    self.err_at(
                        &key,
                        span(first6),
                        format!("node {name:?} would get {addr}, which node {other:?} has already"),
                        "give each node its own IPv6 address",
                    );
                    break;
                }
                by_addr.insert(addr, name.clone());
                out.insert(name, addr);
            }
        }
        out
    }

    fn vip(
        &mut self,
        i: usize,
        v: &S<RawVip>,
        hosts: &HashSet<&str>,
        addresses: &BTreeMap<String, Ipv4Addr>,
        (host_publics, host_publics6): (&HashSet<Ipv4Addr>, &HashSet<Ipv6Addr>),
        node: Option<&NodeConfig>,
    ) -> Option<Vip> {
        let start = self.errors.len();
        let v = v.get_ref();
        let key = format!("gateways.vip[{}]", i + 1);
        let name = v.name.get_ref().trim().to_owned();
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.err_at(
                &format!("{key}.name"),
                span(&v.name),
                format!("{name:?} is not a VRRP instance name"),
                "1 to 32 letters, digits, '_' or '-', e.g. \"vip1\"",
            );
        }
        let address = self.gateway(
            &format!("{key}.address"),
            &v.address,
            v.address.get_ref().trim(),
            "10.99.0.254",
        );
        if let (Some(a), Some(n)) = (address, node) {
            self.gateway_is_internal(&format!("{key}.address"), &v.address, a, &n.internal, "the nodes reach a virtual address directly on node.interface: list the cluster network that holds it in node.internal");
        }
        let vrid = *v.vrid.get_ref();
        if !(1..=255).contains(&vrid) {
            self.err_at(
                &format!("{key}.vrid"),
                span(&v.vrid),
                format!("{vrid} is outside 1..=255"),
                "pick a VRRP router id no other VRRP group on the cluster network uses",
            );
        }
        let mut public = Vec::new();
        for p in &v.public {
            match p.get_ref().trim().parse::<Ipv4Addr>() {
                Ok(a) if host_publics.contains(&a) => self.err_at(&format!("{key}.public"), span(p), format!("{a} is a gateway's own public_address; the addresses that move with a virtual address must be others"), "give addresses no host holds of its own"),
                Ok(a) => public.push(a),
                Err(_) => self.err_at(&format!("{key}.public"), span(p), format!("{:?} is not an IPv4 address", p.get_ref()), "list the public addresses that move with this virtual address, e.g. [\"203.0.113.1\"]"),
            }
        }
        if v.public.is_empty() {
            self.err_at(
                &format!("{key}.public"),
                span(&v.name),
                "no public address".into(),
                "list at least one public address that moves with this virtual address",
            );
        }
        let address6 = v.address6.as_ref().and_then(|a| {
            self.address6(
                &format!("{key}.address6"),
                a,
                "give the nodes' IPv6 next hop, a unicast address on the cluster network, e.g. \"fd00:78e7::254\"",
            )
        });
        let mut public6 = Vec::new();
        for p in &v.public6 {
            let hint = "list the public IPv6 addresses that move with this virtual address, e.g. [\"2001:db8::101\"]";
            match self.address6(&format!("{key}.public6"), p, hint) {
                Some(a) if host_publics6.contains(&a) => self.err_at(&format!("{key}.public6"), span(p), format!("{a} is a gateway's own public_address6; the addresses that move with a virtual address must be others"), "give addresses no host holds of its own"),
                Some(a) => public6.push(a),
                None => {}
            }
        }
        match (&v.address6, v.public6.first()) {
            (Some(a), None) => self.err_at(
                &format!("{key}.public6"),
                span(a),
                "address6 without public6: the nodes' IPv6 would have no public address to leave as".into(),
                "list the public IPv6 addresses that move with this virtual address, e.g. public6 = [\"2001:db8::101\"], or remove address6",
            ),
            (None, Some(p)) => self.err_at(
                &format!("{key}.address6"),
                span(p),
                "public6 without address6: no node routes IPv6 to this virtual address".into(),
                "give the cluster-side IPv6 virtual address, e.g. address6 = \"fd00:78e7::254\", or remove public6",
            ),
            _ => {}
        }
        let mut holders = Vec::new();
        let mut prios = HashSet::new();
        for h in &v.holders {
            let h = h.get_ref();
            let host = h.host.get_ref().trim();
            if !hosts.contains(host) {
                self.err_at(
                    &format!("{key}.holders"),
                    span(&h.host),
                    format!("{host:?} is no [[gateways.host]] name"),
                    "name a host of [[gateways.host]]",
                );
            }
            if holders.iter().any(|(n, _): &(String, u8)| n == host) {
                self.err_at(
                    &format!("{key}.holders"),
                    span(&h.host),
                    format!("{host:?} holds this address twice"),
                    "list each holder once",
                );
            }
            let p = *h.priority.get_ref();
            if !(1..=254).contains(&p) {
                self.err_at(
                    &format!("{key}.holders"),
                    span(&h.priority),
                    format!("priority {p} is outside 1..=254"),
                    "VRRP priorities are 1..=254; the highest holder is master",
                );
            } else if !prios.insert(p) {
                self.err_at(&format!("{key}.holders"), span(&h.priority), format!("priority {p} is given to two holders"), "give each holder its own priority, so which one is master is decided by the policy");
            }
            holders.push((host.to_owned(), p.min(254) as u8));
        }
        if v.holders.is_empty() {
            self.err_at(&format!("{key}.holders"), span(&v.name), "no holder".into(), "e.g. holders = [{ host = \"gw1\", priority = 150 }, { host = \"gw2\", priority = 100 }]");
        }
        let mut nodes = Vec::new();
        let mut seen = HashSet::new();
        for n in &v.nodes {
            match hostlist::expand(n.get_ref().trim()) {
                Ok(names) => {
                    for name in names {
                        if !addresses.contains_key(&name) {
                            self.err_at(
                                &format!("{key}.nodes"),
                                span(n),
                                format!("node {name:?} has no address in [[gateways.nodes]]"),
                                "add it to a [[gateways.nodes]] names list with its address",
                            );
                            break;
                        }
                        if !seen.insert(name.clone()) {
                            self.err_at(
                                &format!("{key}.nodes"),
                                span(n),
                                format!("node {name:?} is listed twice"),
                                "list each node once per virtual address",
                            );
                            break;
                        }
                        nodes.push(name);
                    }
                }
                Err(e) => self.err_at(
                    &format!("{key}.nodes"),
                    span(n),
                    e.0,
                    "write node names as Slurm does, e.g. \"n[1-512]\"",
                ),
            }
        }
        (self.errors.len() == start).then(|| Vip {
            name,
            address: address.expect("checked"),
            vrid: vrid as u8,
            public,
            address6,
            public6,
            holders,
            nodes_written: v
                .nodes
                .iter()
                .map(|n| n.get_ref().trim().to_owned())
                .collect(),
            nodes,
        })
    }

    /// Every virtual address has the public addresses its nodes need.
    fn capacity(&mut self, g: &Gateways, raw: &[S<RawVip>]) {
        let spa = g.slices_per_address() as usize;
        for (i, v) in g.vips.iter().enumerate() {
            let needed = g.addresses_needed(i);
            if needed > v.public.len() {
                self.err_at(
                    &format!("gateways.vip[{}].public", i + 1),
                    span(raw[i].get_ref().public.first().unwrap_or(&raw[i].get_ref().name)),
                    format!("virtual address {:?} has {} nodes but its {} public addresses hold {} ({spa} node slices of {} ports per address in {}-{})", v.name, v.nodes.len(), v.public.len(), v.public.len() * spa, g.ports_per_node, g.first_port, g.last_port),
                    &format!("add {} public addresses at the end of public, or lower ports_per_node (smaller pools)", needed - v.public.len()),
                );
            }
        }
    }

    /// A virtual address with IPv6: public6 holds its nodes, every holder has IPv6 on both
    /// links (the virtual address inside its cluster network), every node an IPv6 address.
    fn ipv6_consistency(&mut self, g: &Gateways, raw: &[S<RawVip>]) {
        let spa = g.slices_per_address() as usize;
        for (i, v) in g.vips.iter().enumerate() {
            let Some(a6) = v.address6 else { continue };
            let key = format!("gateways.vip[{}]", i + 1);
            let r = raw[i].get_ref();
            let a6_span = r.address6.as_ref().and_then(span);
            let needed = g.addresses_needed(i);
            if needed > v.public6.len() {
                self.err_at(
                    &format!("{key}.public6"),
                    r.public6.first().and_then(span).or(a6_span.clone()),
                    format!("virtual address {:?} has {} nodes but its {} public IPv6 addresses hold {} ({spa} node slices per address, as for public)", v.name, v.nodes.len(), v.public6.len(), v.public6.len() * spa),
                    &format!("add {} public IPv6 addresses at the end of public6 (nodes fill public6 as they fill public)", needed - v.public6.len()),
                );
            }
            for (h, raw_h) in v.holders.iter().zip(&r.holders) {
                let Some(host) = g.host(&h.0) else { continue };
                match (host.cluster_address6, host.public_address6) {
                    (Some(c), Some(_)) if !c.contains(&a6) => self.err_at(
                        &format!("{key}.address6"),
                        a6_span.clone(),
                        format!("{a6} is not in holder {:?}'s IPv6 cluster network {}", h.0, c.trunc()),
                        "the IPv6 virtual address must lie in the cluster network of every holder's cluster_address6 (keepalived adds it with that prefix)",
                    ),
                    (Some(_), Some(_)) => {}
                    _ => self.err_at(
                        &format!("{key}.holders"),
                        span(&raw_h.get_ref().host),
                        format!("{:?} holds {:?}, which has address6, but has no cluster_address6 and public_address6", h.0, v.name),
                        "give that [[gateways.host]] its IPv6 addresses (cluster_address6, public_address6, ADDRESS/PREFIX), or remove address6 and public6 from the virtual address",
                    ),
                }
            }
            let missing: Vec<&str> = v
                .nodes
                .iter()
                .filter(|n| !g.node_addresses6.contains_key(*n))
                .map(String::as_str)
                .collect();
            if let Some(first) = missing.first() {
                self.err_at(
                    &format!("{key}.nodes"),
                    r.nodes.first().and_then(span).or(a6_span.clone()),
                    format!("virtual address {:?} has address6 but {} of its nodes have no IPv6 address (first: {first:?})", v.name, missing.len()),
                    "give their [[gateways.nodes]] list a first_address6 (the first node's unique local address; the next nodes get the next addresses)",
                );
            }
        }
    }

    /// `node.gateway` and every profile pool's gateway are virtual addresses; a profile
    /// pool's virtual address lists every node of the section (each node has every pool).
    fn pool_vips(
        &mut self,
        g: &Gateways,
        node: &NodeConfig,
        pools: &[Pool],
        drafts: &[PoolDraft],
        raw: &[S<RawVip>],
    ) {
        if g.vip_by_address(node.gateway).is_none() {
            let at = self.offset_of("gateway").map(|o| o..o + 7);
            self.err_at("node.gateway", at, format!("{} is no [[gateways.vip]] address", node.gateway), "with [gateways], node.gateway must be one of the virtual addresses (each node routes to the one whose nodes list it)");
        }
        let all: HashSet<&str> = g
            .vips
            .iter()
            .flat_map(|v| v.nodes.iter().map(String::as_str))
            .collect();
        // IPv6 follows IPv4: a node's IPv6 goes to the `address6` of the virtual address its
        // IPv4 goes to, for each pool (`Policy::for_node`), so every virtual address needs one
        if let Some(g6) = node.gateway6 {
            if g.vip_by_address6(g6).is_none() {
                let at = self.offset_of("gateway6").map(|o| o..o + 8);
                self.err_at("node.gateway6", at, format!("{g6} is no [[gateways.vip]] address6"), "with [gateways], node.gateway6 must be one of the virtual addresses' address6 (each node's IPv6 goes to that of the address its IPv4 goes to)");
            }
            for (i, v) in g
                .vips
                .iter()
                .enumerate()
                .filter(|(_, v)| v.address6.is_none())
            {
                self.err_at(
                    &format!("gateways.vip[{}].address6", i + 1),
                    span(&raw[i].get_ref().name),
                    format!("node.gateway6 is set (the nodes send IPv6 out), but virtual address {:?} has no address6: the IPv6 of the nodes and pools behind it would have no gateway", v.name),
                    "give it address6 and public6, or remove node.gateway6 to keep the site IPv4 only",
                );
            }
        }
        for d in drafts.iter().filter(|d| d.gateway6_span.is_some()) {
            self.err_at(
                &format!("{}.gateway6", d.checked.key.trim_end_matches(".ports")),
                d.gateway6_span.clone(),
                "with [gateways], a pool's IPv6 gateway is the address6 of the virtual address its gateway names".into(),
                "remove gateway6 (and give that [[gateways.vip]] an address6)",
            );
        }
        for (pool, d) in pools.iter().zip(drafts) {
            if pool.route_table == node.route_table {
                continue;
            }
            let Some(vi) = g.vip_by_address(pool.gateway) else {
                self.err_at(
                    &format!("{}.gateway", d.checked.key.trim_end_matches(".ports")),
                    d.gateway_span.clone(),
                    format!("{} is no [[gateways.vip]] address", pool.gateway),
                    "with [gateways], a profile's gateway must be one of the virtual addresses",
                );
                continue;
            };
            let listed: HashSet<&str> = g.vips[vi].nodes.iter().map(String::as_str).collect();
            let mut missing: Vec<&str> = all.difference(&listed).copied().collect();
            missing.sort_unstable();
            if let Some(first) = missing.first() {
                self.err_at(
                    &format!("gateways.vip[{}].nodes", vi + 1),
                    span(&raw[vi].get_ref().name),
                    format!("profile {:?}'s pool leaves through {:?}, but {} node(s) of the section are not in its nodes list (first: {first:?}); every node has every pool, so this address must carry them all", pool.name(), g.vips[vi].name, missing.len()),
                    "append the missing nodes to its nodes list (at the end, so nobody moves)",
                );
            }
        }
    }
}

/// A unicast address a gateway or node can hold and route: not unspecified, loopback,
/// multicast, link-local (`fe80::/10`, only on one link) or IPv4-mapped.
fn usable6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (a.segments()[0] & 0xffc0) == 0xfe80
        || a.to_ipv4_mapped().is_some())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

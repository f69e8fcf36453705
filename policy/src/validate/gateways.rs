//! `[gateways]`: the gateway hosts, their virtual addresses, the nodes behind each, and the
//! public port range cut into one slice per node (see `crate::gateways` for the mapping).
//! Checked here: every name, address and number on its own; that names and addresses are
//! unique; that every pool fits one node's slice; that every virtual address has the public
//! addresses its nodes need; that the nodes' gateways (`node.gateway`, a profile's
//! `gateway`) are virtual addresses of the section and list the nodes they carry.

use super::pools::PoolDraft;
use super::{span, Span, Validator};
use crate::gateways::{GatewayHost, Gateways, Vip};
use crate::hostlist;
use crate::raw::{RawGatewayHost, RawGateways, RawVip, S};
use crate::{NodeConfig, Pool};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

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
        let host_names: HashSet<&str> = raw
            .hosts
            .iter()
            .map(|h| h.get_ref().name.get_ref().as_str())
            .collect();
        let public_of_hosts: HashSet<Ipv4Addr> =
            hosts.iter().map(|h| h.public_address.addr()).collect();
        let mut vips = Vec::new();
        for (i, v) in raw.vips.iter().enumerate() {
            if let Some(v) = self.vip(i, v, &host_names, &node_addresses, &public_of_hosts, node) {
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
        };
        self.capacity(&g, &raw.vips);
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
        Some(GatewayHost {
            name,
            cluster_interface,
            cluster_address: cluster_address?,
            public_interface,
            public_address: public_address?,
            sync_interface,
            sync_address: sync_address?,
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

    fn vip(
        &mut self,
        i: usize,
        v: &S<RawVip>,
        hosts: &HashSet<&str>,
        addresses: &BTreeMap<String, Ipv4Addr>,
        host_publics: &HashSet<Ipv4Addr>,
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

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

//! The gateway's nftables ruleset: one table `inet extnet_gw` for both families, loaded in
//! one transaction (`table …; delete table …; table … { … }`: created if missing, so the
//! delete never fails, then replaced as a whole). The same transaction deletes the IPv4-only
//! `ip extnet_gw` of earlier versions (created first likewise), so an upgrade never has both
//! tables, or neither, loaded.
//!
//! - `forward` (policy drop): replies and related packets of known connections pass; from the
//!   cluster interface to the public one TCP, UDP and ICMP pass on to `postrouting`;
//!   everything else from the cluster side is counted in `untranslated_drop` and dropped,
//!   everything else at all in `other_drop`.
//! - `postrouting` (the first packet of each connection): a packet forwarded from the cluster
//!   side is translated by `snat ip to ip saddr . th sport map @node_public` (TCP, UDP) or
//!   `snat ip to ip saddr map @node_icmp_public` (ICMP: echo ids are the node's), and an IPv6
//!   packet by the same rules over `node_public6` and `node_icmp_public6` (keyed by the
//!   node's IPv6 address, the same ports: NAT66), one map lookup per new connection whatever
//!   the number of nodes, or, when its key is in no map (a node's port outside its slice, a
//!   non-node source, IPv6 of a node or through an address without IPv6), counted in
//!   `untranslated_drop` and dropped: nothing forwarded of either family leaves
//!   untranslated. The node's SNAT already gave the
//!   connection a port of its own slice and slices of one public address are disjoint, so the
//!   tuple is unique and nf_nat keeps the port (it remaps only on a clash). The gateway's own
//!   traffic (its path check, its package updates) leaves from its own address untouched.

use super::{fnv1a, SnatElement};
use extnet_policy::gateways::{GatewayHost, Gateways};
use extnet_policy::Policy;
use std::collections::BTreeMap;
use std::fmt::{Display, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The gateway's table (family [`GW_FAMILY`]).
pub const GW_TABLE: &str = "extnet_gw";
/// The table's family: both IPv4 and IPv6.
pub const GW_FAMILY: &str = "inet";
/// The family of the table of versions before IPv6, which a load deletes.
pub const OLD_FAMILY: &str = "ip";

/// What the gateway's table holds, as the policy plans it (or as read back from the kernel by
/// `extnet gateway render --check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayModel {
    pub host: String,
    pub cluster_interface: String,
    pub public_interface: String,
    /// Sorted by node address, then port; adjacent ranges of one node and address merged.
    pub snat: Vec<SnatElement>,
    /// Node address ranges (first, last) → the public address of their ICMP, sorted;
    /// consecutive node addresses with one public address in one element (a few hundred
    /// elements for tens of thousands of nodes).
    pub icmp: Vec<(Ipv4Addr, Ipv4Addr, Ipv4Addr)>,
    /// The same for IPv6: node IPv6 address and ports → public IPv6 address.
    pub snat6: Vec<SnatElement<Ipv6Addr>>,
    pub icmp6: Vec<(Ipv6Addr, Ipv6Addr, Ipv6Addr)>,
}

impl GatewayModel {
    /// The public addresses this gateway translates to (the ones that move), sorted.
    pub fn public_addresses(&self) -> Vec<Ipv4Addr> {
        publics(&self.snat, &self.icmp)
    }

    /// The public IPv6 addresses this gateway translates to, sorted.
    pub fn public_addresses6(&self) -> Vec<Ipv6Addr> {
        publics(&self.snat6, &self.icmp6)
    }

    /// The table of host `h`: every node pool that leaves through a virtual address `h` may
    /// hold (as master or backup: the ruleset does not change at a failover).
    pub fn of(policy: &Policy, g: &Gateways, h: &GatewayHost) -> GatewayModel {
        let held: Vec<bool> = g
            .vips
            .iter()
            .map(|v| v.priority_of(&h.name).is_some())
            .collect();
        let entries: Vec<_> = policy
            .all_nat_entries()
            .into_iter()
            .filter(|e| held[e.vip])
            .collect();
        let (snat, icmp) = translations(
            entries
                .iter()
                .map(|e| (e.node_addr, e.ports, e.public))
                .collect(),
        );
        // IPv6: the entries through a virtual address with IPv6, the same ports
        let (snat6, icmp6) = translations(
            entries
                .iter()
                .filter_map(|e| Some((e.node_addr6?, e.ports, e.public6?)))
                .collect(),
        );
        GatewayModel {
            host: h.name.clone(),
            cluster_interface: h.cluster_interface.clone(),
            public_interface: h.public_interface.clone(),
            snat,
            icmp,
            snat6,
            icmp6,
        }
    }
}

/// An address family's address as the maps hold it: ordered, with a successor (for the
/// ranges of consecutive node addresses).
trait MapAddr: Copy + Ord + Display + FromStr {
    fn next(self) -> Option<Self>;
}

impl MapAddr for Ipv4Addr {
    fn next(self) -> Option<Self> {
        u32::from(self).checked_add(1).map(Self::from)
    }
}

impl MapAddr for Ipv6Addr {
    fn next(self) -> Option<Self> {
        u128::from(self).checked_add(1).map(Self::from)
    }
}

/// One family's port map and ICMP map elements.
type Maps<A> = (Vec<SnatElement<A>>, Vec<(A, A, A)>);

/// The map elements of one family from its (node address, node ports, public address)
/// entries in the policy's order: the port map sorted by node address, then port, adjacent
/// ranges of one node and address merged; the ICMP map with runs of consecutive node
/// addresses with the same public address as ranges (a node's ICMP leaves as the address of
/// its first pool this host carries: its default pool when the host holds its home address).
fn translations<A: MapAddr>(mut entries: Vec<(A, (u16, u16), A)>) -> Maps<A> {
    let mut icmp: BTreeMap<A, A> = BTreeMap::new();
    for &(node, _, public) in &entries {
        icmp.entry(node).or_insert(public);
    }
    entries.sort_by_key(|&(node, ports, _)| (node, ports.0));
    let mut snat: Vec<SnatElement<A>> = Vec::new();
    for (node, ports, public) in entries {
        match snat.last_mut() {
            Some(l)
                if l.node == node
                    && l.public == public
                    && u32::from(l.last) + 1 == u32::from(ports.0) =>
            {
                l.last = ports.1
            }
            _ => snat.push(SnatElement {
                node,
                first: ports.0,
                last: ports.1,
                public,
            }),
        }
    }
    let mut runs: Vec<(A, A, A)> = Vec::new();
    for (n, a) in icmp {
        match runs.last_mut() {
            Some(l) if l.2 == a && l.1.next() == Some(n) => l.1 = n,
            _ => runs.push((n, n, a)),
        }
    }
    (snat, runs)
}

/// The public addresses of one family's maps, sorted, each once.
fn publics<A: MapAddr>(snat: &[SnatElement<A>], icmp: &[(A, A, A)]) -> Vec<A> {
    let mut a: Vec<A> = snat.iter().map(|e| e.public).collect();
    a.extend(icmp.iter().map(|&(_, _, p)| p));
    a.sort();
    a.dedup();
    a
}

/// The ruleset text. Its stamp (a hash of the text without it) is the comment of the first
/// forward rule, so that `--check` can tell which rendering is loaded.
pub fn render(m: &GatewayModel) -> String {
    let body = body(m, "@STAMP@");
    let stamp = stamp_of(&body);
    body.replace("@STAMP@", &stamp)
}

/// The stamp of a rendered ruleset: `extnet-gw HOST HASH`.
fn stamp_of(body: &str) -> String {
    let host = body
        .lines()
        .find_map(|l| l.strip_prefix("# host "))
        .unwrap_or("");
    format!("extnet-gw {host} {:016x}", fnv1a(body))
}

/// The stamp `render` put into `text` (`None`: not a rendering).
pub fn stamp(text: &str) -> Option<String> {
    let i = text.find("comment \"extnet-gw ")?;
    let rest = &text[i + "comment \"".len()..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn body(m: &GatewayModel, stamp: &str) -> String {
    let (c, p) = (&m.cluster_interface, &m.public_interface);
    let mut s = String::with_capacity(
        128 + (m.snat.len() + m.snat6.len()) * 64 + (m.icmp.len() + m.icmp6.len()) * 48,
    );
    let _ = writeln!(
        s,
        "#!/usr/sbin/nft -f\n# extnet NAT gateway, rendered by `extnet gateway render` from the policy; do not edit\n# host {}\n# the IPv4-only table of earlier versions goes in the same transaction\ntable {OLD_FAMILY} {GW_TABLE}\ndelete table {OLD_FAMILY} {GW_TABLE}\ntable {GW_FAMILY} {GW_TABLE}\ndelete table {GW_FAMILY} {GW_TABLE}\n\ntable {GW_FAMILY} {GW_TABLE} {{",
        m.host
    );
    maps(
        &mut s,
        "",
        "ipv4_addr",
        &m.snat,
        &m.icmp,
        &m.public_addresses(),
    );
    s.push('\n');
    maps(
        &mut s,
        "6",
        "ipv6_addr",
        &m.snat6,
        &m.icmp6,
        &m.public_addresses6(),
    );
    let _ = write!(
        s,
        r#"
    counter untranslated_drop {{
    }}

    counter unknown_connection_drop {{
    }}

    counter other_drop {{
    }}

    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept comment "{stamp}"
        iifname "{c}" oifname "{p}" meta l4proto {{ tcp, udp, icmp, icmpv6 }} accept
        iifname "{c}" counter name untranslated_drop drop
        counter name other_drop drop
    }}

    # the first packet of every connection forwarded out: translated by the maps of its family
    # (a node's address and a port of its slice), or dropped; a connection whose first packet
    # was dropped is never confirmed, so its next packet comes here again. (The check is not a
    # lookup of the maps in `forward`: kernels before 6.6, Debian 12's 6.1 among them, refuse a
    # map used as a set.)
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        iifname "{c}" oifname "{p}" meta l4proto {{ tcp, udp }} snat ip to ip saddr . th sport map @node_public
        iifname "{c}" oifname "{p}" meta l4proto icmp snat ip to ip saddr map @node_icmp_public
        iifname "{c}" oifname "{p}" meta l4proto {{ tcp, udp }} snat ip6 to ip6 saddr . th sport map @node_public6
        iifname "{c}" oifname "{p}" meta l4proto icmpv6 snat ip6 to ip6 saddr map @node_icmp_public6
        iifname "{c}" oifname "{p}" counter name untranslated_drop drop
    }}

    # a packet to a public address of a connection this gateway does not know (yet: after a
    # failover, before conntrackd has committed the peer's states) is dropped, not answered
    # with a reset, so that the connection waits for its state instead of breaking (neighbour
    # discovery is untracked, not new: it passes)
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{p}" ip daddr @public_addresses ct state new,invalid counter name unknown_connection_drop drop
        iifname "{p}" ip6 daddr @public_addresses6 ct state new,invalid counter name unknown_connection_drop drop
    }}
}}
"#
    );
    s
}

/// One family's maps and set: `node_publicF` (node address . ports → public address),
/// `node_icmp_publicF` (node address range → public address), `public_addressesF`.
fn maps<A: MapAddr>(
    s: &mut String,
    suffix: &str,
    ty: &str,
    snat: &[SnatElement<A>],
    icmp: &[(A, A, A)],
    publics: &[A],
) {
    let _ = write!(
        s,
        "    map node_public{suffix} {{\n        type {ty} . inet_service : {ty}\n        flags interval\n"
    );
    elements(s, snat.iter(), |s, e| {
        let _ = write!(s, "{} . {}-{} : {}", e.node, e.first, e.last, e.public);
    });
    let _ = write!(
        s,
        "    }}\n\n    map node_icmp_public{suffix} {{\n        type {ty} : {ty}\n        flags interval\n"
    );
    elements(s, icmp.iter(), |s, (f, l, a)| {
        if f == l {
            let _ = write!(s, "{f} : {a}");
        } else {
            let _ = write!(s, "{f}-{l} : {a}");
        }
    });
    let _ = write!(
        s,
        "    }}\n\n    set public_addresses{suffix} {{\n        type {ty}\n"
    );
    elements(s, publics.iter(), |s, a| {
        let _ = write!(s, "{a}");
    });
    s.push_str("    }\n");
}

/// `elements = { a, b, … }` one per line, or nothing for an empty set (nft refuses `{ }`).
fn elements<T>(s: &mut String, items: impl Iterator<Item = T>, item: impl Fn(&mut String, T)) {
    let mut first = true;
    for i in items {
        s.push_str(if first {
            "        elements = {\n            "
        } else {
            ",\n            "
        });
        first = false;
        item(s, i);
    }
    if !first {
        s.push_str("\n        }\n");
    }
}

/// Why a running table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `nft -j list table {GW_FAMILY} {GW_TABLE}` output: {0}")]
pub struct ReadError(String);

/// The elements of a port map (`node_public`, `node_public6`) as `nft -j` prints them.
fn port_elements<A: MapAddr>(
    elems: Vec<serde_json::Value>,
    name: &str,
) -> Result<Vec<SnatElement<A>>, ReadError> {
    let addr = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<A>().ok());
    let mut out = Vec::with_capacity(elems.len());
    for e in elems {
        let key = &e[0]["concat"];
        let (lo, hi) = match &key[1] {
            serde_json::Value::Number(n) => (n.as_u64(), n.as_u64()),
            r => (r["range"][0].as_u64(), r["range"][1].as_u64()),
        };
        match (addr(&key[0]), lo, hi, addr(&e[1])) {
            (Some(node), Some(lo), Some(hi), Some(public)) => out.push(SnatElement {
                node,
                first: lo as u16,
                last: hi as u16,
                public,
            }),
            _ => return Err(ReadError(format!("an element of {name} reads {e}"))),
        }
    }
    out.sort();
    Ok(out)
}

/// The elements of an ICMP map (`node_icmp_public`, `node_icmp_public6`).
fn icmp_elements<A: MapAddr>(
    elems: Vec<serde_json::Value>,
    name: &str,
) -> Result<Vec<(A, A, A)>, ReadError> {
    let addr = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<A>().ok());
    let mut out = Vec::with_capacity(elems.len());
    for e in elems {
        let (f, l) = match &e[0] {
            serde_json::Value::String(_) => (addr(&e[0]), addr(&e[0])),
            r => (addr(&r["range"][0]), addr(&r["range"][1])),
        };
        match (f, l, addr(&e[1])) {
            (Some(f), Some(l), Some(a)) => out.push((f, l, a)),
            _ => return Err(ReadError(format!("an element of {name} reads {e}"))),
        }
    }
    out.sort();
    Ok(out)
}

/// The running table as `nft -j list table inet extnet_gw` prints it, in the model's terms,
/// and the stamp it was loaded with.
pub fn from_json(
    json: &str,
    host: &str,
) -> Result<(GatewayModel, Option<String>, Vec<String>), ReadError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| ReadError(e.to_string()))?;
    let items = v["nftables"]
        .as_array()
        .ok_or_else(|| ReadError("no \"nftables\" array".into()))?;
    let mut m = GatewayModel {
        host: host.to_owned(),
        cluster_interface: String::new(),
        public_interface: String::new(),
        snat: Vec::new(),
        icmp: Vec::new(),
        snat6: Vec::new(),
        icmp6: Vec::new(),
    };
    let mut stamp = None;
    let mut rules = Vec::new();
    for it in items {
        if let Some(map) = it.get("map") {
            let elems = map["elem"].as_array().cloned().unwrap_or_default();
            match map["name"].as_str() {
                Some(n @ "node_public") => m.snat = port_elements(elems, n)?,
                Some(n @ "node_icmp_public") => m.icmp = icmp_elements(elems, n)?,
                Some(n @ "node_public6") => m.snat6 = port_elements(elems, n)?,
                Some(n @ "node_icmp_public6") => m.icmp6 = icmp_elements(elems, n)?,
                _ => {}
            }
        }
        if let Some(rule) = it.get("rule") {
            if let Some(c) = rule["comment"].as_str() {
                if c.starts_with("extnet-gw ") {
                    stamp = Some(c.to_owned());
                }
            }
            for e in rule["expr"].as_array().into_iter().flatten() {
                let m_ = &e["match"];
                match m_["left"]["meta"]["key"].as_str() {
                    Some("iifname") if m.cluster_interface.is_empty() => {
                        m.cluster_interface = m_["right"].as_str().unwrap_or("").to_owned()
                    }
                    Some("oifname") if m.public_interface.is_empty() => {
                        m.public_interface = m_["right"].as_str().unwrap_or("").to_owned()
                    }
                    _ => {}
                }
            }
            rules.push(format!(
                "{}: {}",
                rule["chain"].as_str().unwrap_or(""),
                rule["expr"]
            ));
        }
    }
    Ok((m, stamp, rules))
}

/// What differs between the planned table `want` (with its stamp) and the running one: one
/// line per difference, empty when they match.
pub fn differences(
    want: &GatewayModel,
    want_stamp: &str,
    have: &GatewayModel,
    have_stamp: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if have_stamp != Some(want_stamp) {
        out.push(format!(
            "nft table {GW_FAMILY} {GW_TABLE}: loaded from {}, the policy renders {want_stamp}",
            have_stamp.map_or("no extnet rendering (no stamp)".to_owned(), |s| format!(
                "rendering {s:?}"
            ))
        ));
    }
    if have.cluster_interface != want.cluster_interface
        || have.public_interface != want.public_interface
    {
        out.push(format!(
            "interfaces: running {:?} -> {:?}, rendered {:?} -> {:?}",
            have.cluster_interface,
            have.public_interface,
            want.cluster_interface,
            want.public_interface
        ));
    }
    diff_sorted(&mut out, "node_public", &want.snat, &have.snat, |e| {
        format!("{} . {}-{} : {}", e.node, e.first, e.last, e.public)
    });
    diff_sorted(
        &mut out,
        "node_icmp_public",
        &want.icmp,
        &have.icmp,
        |(f, l, a)| format!("{f}-{l} : {a}"),
    );
    diff_sorted(&mut out, "node_public6", &want.snat6, &have.snat6, |e| {
        format!("{} . {}-{} : {}", e.node, e.first, e.last, e.public)
    });
    diff_sorted(
        &mut out,
        "node_icmp_public6",
        &want.icmp6,
        &have.icmp6,
        |(f, l, a)| format!("{f}-{l} : {a}"),
    );
    out
}

/// Elements in `want` but not `have` (missing) and the other way (extra), at most 10 each
/// and a count.
fn diff_sorted<T: Ord>(
    out: &mut Vec<String>,
    name: &str,
    want: &[T],
    have: &[T],
    show: impl Fn(&T) -> String,
) {
    let missing: Vec<&T> = want
        .iter()
        .filter(|e| have.binary_search(e).is_err())
        .collect();
    let extra: Vec<&T> = have
        .iter()
        .filter(|e| want.binary_search(e).is_err())
        .collect();
    for (what, list) in [("missing", missing), ("not in the policy", extra)] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<String> = list.iter().take(10).map(|e| show(e)).collect();
        out.push(format!(
            "map {name}: {} element(s) {what}: {}{}",
            list.len(),
            shown.join(", "),
            if list.len() > 10 { ", …" } else { "" }
        ));
    }
}

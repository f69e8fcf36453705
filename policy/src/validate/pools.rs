//! Port pools: `[ports]` (the default pool) and a profile's own `[profile.ports]` with its
//! `gateway`. Each pool's range and block size must give at least one block; pools must not
//! share a port, because the port a connection leaves from tells its job (and so the lease
//! and the accounting) apart. The pools' slots are numbered one after the other and must fit
//! the 16 slot bits of the packet mark. A pool whose gateway is not `node.gateway` gets a
//! routing table of its own, which must be free, and `ip rule`s just before the main one,
//! which need room for a priority.

use super::node::{reserved_table, RESERVED_TABLES, SLOT_MASK};
use super::profile::ProfileContext;
use super::{span, Span, Validator};
use crate::raw::{RawPorts, S};
use crate::{NodeConfig, Pool, PortPool};
use std::net::{Ipv4Addr, Ipv6Addr};

/// `[ports] range` when the file gives none.
pub(super) const DEFAULT_RANGE: &str = "20000-59999";

/// One pool's geometry as checked, and where its keys are written.
pub(super) struct CheckedPorts {
    /// `ports` or `profile[N].ports`.
    pub(super) key: String,
    /// `None` when invalid (errors recorded).
    pub(super) ports: Option<PortPool>,
    pub(super) range_span: Span,
    block_span: Span,
}

/// A pool before its slots and routing table are placed.
pub(super) struct PoolDraft {
    /// The profile (0-based index and name) that owns it; `None` for the default pool.
    pub(super) profile: Option<(usize, String)>,
    pub(super) checked: CheckedPorts,
    /// `None` when invalid (errors recorded).
    pub(super) gateway: Option<Ipv4Addr>,
    pub(super) gateway_span: Span,
    /// The pool's IPv6 gateway: the profile's `gateway6`, else `node.gateway6`.
    pub(super) gateway6: Option<Ipv6Addr>,
    /// Where the profile wrote `gateway6` (`None`: not written).
    pub(super) gateway6_span: Span,
}

impl Validator<'_> {
    /// One port pool's geometry (`[ports]`, or `[profile.ports]` with `key`
    /// `profile[N].ports`). `default_range`: the range when none is written (`None`: required,
    /// checked by the caller); `inherit`: the default pool, whose block size and quarantine a
    /// profile's pool takes when it does not give its own.
    pub(super) fn port_pool(
        &mut self,
        key: &str,
        raw: RawPorts,
        default_range: Option<&str>,
        inherit: Option<&PortPool>,
    ) -> CheckedPorts {
        let range_span = raw.range.as_ref().and_then(span);
        let range = raw
            .range
            .map(|r| r.into_inner())
            .or(default_range.map(str::to_owned))
            .unwrap_or_default();
        let parsed = range.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        let block_span = raw.block_size.as_ref().and_then(span);
        let block_size = raw.block_size.map_or_else(
            || inherit.map_or(256, |p| u32::from(p.block_size)),
            |b| b.into_inner(),
        );
        let start = self.errors.len();
        let (first, last) = match parsed {
            Some((a, b)) if a >= 1024 && a <= b => (a, b),
            _ => {
                self.err_at(
                    &format!("{key}.range"),
                    range_span.clone(),
                    format!("{range:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535"),
                    "e.g. \"20000-59999\"; keep it clear of the node's ephemeral ports (net.ipv4.ip_local_port_range)",
                );
                (0, 0)
            }
        };
        if !(16..=32768).contains(&block_size) {
            self.err_at(
                &format!("{key}.block_size"),
                block_span.clone(),
                format!("{block_size} ports per job is outside 16..=32768"),
                "256 suits most jobs; a job holds one port per open connection",
            );
        } else if self.errors.len() == start && u32::from(last) - u32::from(first) + 1 < block_size
        {
            let inherited = if block_span.is_none() && inherit.is_some() {
                " (the block size of [ports], as this table gives none)"
            } else {
                ""
            };
            self.err_at(
                &format!("{key}.block_size"),
                block_span.clone().or(range_span.clone()),
                format!(
                    "the range {range} is smaller than one block of {block_size} ports{inherited}"
                ),
                &format!("widen {key}.range or lower {key}.block_size"),
            );
        }
        let q_span = raw.quarantine_secs.as_ref().and_then(span);
        let quarantine_secs = raw.quarantine_secs.map_or_else(
            || inherit.map_or(120, |p| p.quarantine_secs),
            |q| q.into_inner(),
        );
        if quarantine_secs > 86_400 {
            self.err_at(
                &format!("{key}.quarantine_secs"),
                q_span,
                format!("{quarantine_secs} s is more than a day"),
                "RFC 6888 recommends 120",
            );
        }
        let ports = (self.errors.len() == start).then_some(PortPool {
            first,
            last,
            block_size: block_size as u16,
            quarantine_secs,
        });
        CheckedPorts {
            key: key.to_owned(),
            ports,
            range_span,
            block_span,
        }
    }

    /// A profile's `[profile.ports]` and `gateway`: its own pool, or `None` for the default
    /// pool (errors recorded).
    pub(super) fn own_pool(
        &mut self,
        i: usize,
        name: &str,
        raw_ports: Option<S<RawPorts>>,
        raw_gateway: Option<&S<String>>,
        raw_gateway6: Option<&S<String>>,
        ctx: &ProfileContext,
    ) -> Option<PoolDraft> {
        let key = &format!("profile[{}]", i + 1);
        let gateway6 = raw_gateway6.and_then(|g| self.profile_gateway6(key, g, ctx));
        let gateway = raw_gateway.and_then(|g| {
            let a = self.gateway(
                &format!("{key}.gateway"),
                g,
                g.get_ref().trim(),
                "10.20.3.228",
            )?;
            if ctx.node_gateway.is_some() {
                self.gateway_is_internal(
                    &format!("{key}.gateway"),
                    g,
                    a,
                    ctx.internal,
                    "the node reaches a gateway directly on node.interface: list the cluster network that holds it in node.internal",
                );
            }
            Some(a)
        });
        let Some(raw_ports) = raw_ports else {
            if let (Some(gw), Some(node_gw), Some(g)) = (gateway, ctx.node_gateway, raw_gateway) {
                if gw != node_gw {
                    self.err_at(
                        &format!("{key}.gateway"),
                        span(g),
                        format!("profile {name:?} names gateway {gw}, but it has no port pool of its own: a gateway belongs to a pool, and the default pool ([ports]) goes through node.gateway {node_gw}"),
                        "give the profile its own pool: a [profile.ports] table with a range outside [ports] range (and block_size if it differs), or remove gateway",
                    );
                }
            }
            if let (Some(gw), Some(g)) = (gateway6, raw_gateway6) {
                if Some(gw) != ctx.node_gateway6 {
                    self.err_at(
                        &format!("{key}.gateway6"),
                        span(g),
                        format!("profile {name:?} names gateway6 {gw}, but it has no port pool of its own: a gateway belongs to a pool, and the default pool ([ports]) sends its IPv6 through node.gateway6"),
                        "give the profile its own pool: a [profile.ports] table with a range outside [ports] range, or remove gateway6",
                    );
                }
            }
            return None;
        };
        let ports_span = span(&raw_ports);
        let raw_ports = raw_ports.into_inner();
        if raw_ports.range.is_none() {
            let (k, at) = match &raw_ports.block_size {
                Some(b) => (format!("{key}.ports.block_size"), span(b)),
                None => (format!("{key}.ports"), ports_span),
            };
            self.err_at(
                &k,
                at,
                format!("[profile.ports] of profile {name:?} has no range: without a range of its own the profile shares the default pool ([ports]) and its block size"),
                "give the profile its own range: range = \"FIRST-LAST\" in [profile.ports], outside [ports] range; or remove [profile.ports] to share the default pool",
            );
            return None;
        }
        let checked = self.port_pool(
            &format!("{key}.ports"),
            raw_ports,
            None,
            ctx.default_pool.as_ref(),
        );
        Some(PoolDraft {
            profile: Some((i, name.to_owned())),
            checked,
            gateway: gateway.or(ctx.node_gateway),
            gateway_span: raw_gateway.and_then(span),
            gateway6: gateway6.or(ctx.node_gateway6),
            gateway6_span: raw_gateway6.and_then(span),
        })
    }

    /// A profile's `gateway6`: an IPv6 gateway address inside `node.internal6`, on a node
    /// with `node.gateway6` (without it no job's IPv6 leaves, so a pool's IPv6 gateway would
    /// be a promise the node does not keep). `None` when invalid (errors recorded).
    fn profile_gateway6(
        &mut self,
        key: &str,
        g: &S<String>,
        ctx: &ProfileContext,
    ) -> Option<Ipv6Addr> {
        let k = format!("{key}.gateway6");
        let a = self.gateway6(&k, g, "fd00:78e7::253")?;
        if ctx.node_gateway6.is_none() {
            self.err_at(
                &k,
                span(g),
                format!("gateway6 {a} is set, but node.gateway6 is not: without it no job's IPv6 leaves the node"),
                "set node.gateway6 (the IPv6 address of the default gateways), or remove this gateway6",
            );
            return None;
        }
        if !ctx.internal6.iter().any(|n| n.contains(&a)) {
            self.err_at(
                &k,
                span(g),
                format!("the IPv6 gateway {a} is not inside any network of node.internal6"),
                "the node reaches a gateway directly on node.interface: list the cluster's IPv6 network that holds it in node.internal6",
            );
        }
        Some(a)
    }

    /// Places the pools' slots one after the other (default pool first), checks that no two
    /// pools share a port, that all slots fit the packet mark, and gives each pool whose
    /// gateway is not `node.gateway` a routing table of its own. `None` when a pool is invalid
    /// (its errors are recorded already) or one of these checks failed.
    pub(super) fn pools(
        &mut self,
        node: Option<&NodeConfig>,
        drafts: &[PoolDraft],
    ) -> Option<Vec<Pool>> {
        let start = self.errors.len();
        for (j, b) in drafts.iter().enumerate() {
            let Some(bp) = b.checked.ports else { continue };
            for a in &drafts[..j] {
                let Some(ap) = a.checked.ports else { continue };
                if ap.first <= bp.last && bp.first <= ap.last {
                    let (where_a, hint) = match (&a.profile, self.line(&a.checked.range_span)) {
                        (None, None) => (
                            format!("the default pool's ports {}-{} ([ports] range is {DEFAULT_RANGE} when not given)", ap.first, ap.last),
                            "pools must not share a port: write a [ports] range that leaves this one out, or move this range outside it",
                        ),
                        (None, Some(line)) => (
                            format!("the default pool's ports {}-{} ([ports] range, line {line})", ap.first, ap.last),
                            "pools must not share a port: narrow [ports] range, or move this range outside it",
                        ),
                        (Some((_, name)), line) => (
                            format!("the ports {}-{} of profile {name:?}'s own pool{}", ap.first, ap.last, line.map_or(String::new(), |l| format!(" (line {l})"))),
                            "pools must not share a port: give each profile a range of its own",
                        ),
                    };
                    self.err_at(
                        &format!("{}.range", b.checked.key),
                        b.checked.range_span.clone(),
                        format!("ports {}-{} overlap {where_a}", bp.first, bp.last),
                        hint,
                    );
                }
            }
        }
        let node = node?;
        let mut pools = Vec::new();
        let mut next_slot: u32 = 0;
        for (index, d) in drafts.iter().enumerate() {
            let (Some(ports), Some(gateway)) = (d.checked.ports, d.gateway) else {
                continue;
            };
            let first_slot = next_slot;
            next_slot += ports.blocks();
            if next_slot > SLOT_MASK + 1 {
                // unreachable while pools share no port (64512 ports / 16 = 4032 blocks at
                // most), kept as the invariant the packet mark needs
                self.err_at(
                    &format!("{}.block_size", d.checked.key),
                    d.checked.block_span.clone().or(d.checked.range_span.clone()),
                    format!("the pools have {next_slot} slots up to this one, more than the 65536 a packet mark can carry"),
                    "use a larger block_size or a smaller range",
                );
            }
            let route_table = if gateway == node.gateway && d.gateway6 == node.gateway6 {
                node.route_table
            } else {
                self.route_table(node, index, d)
            };
            pools.push(Pool {
                profile: d.profile.as_ref().map(|(_, n)| n.clone()),
                ports,
                first_slot,
                gateway,
                route_table,
                gateway6: d.gateway6,
            });
        }
        (self.errors.len() == start && pools.len() == drafts.len()).then_some(pools)
    }

    /// The routing table of pool `index` (`d`), whose gateway is not `node.gateway`:
    /// `node.route_table + index`, which must be free; its `ip rule`s go just before the
    /// main one, so `node.rule_priority` must leave room (0 when invalid, errors recorded).
    fn route_table(&mut self, node: &NodeConfig, index: usize, d: &PoolDraft) -> u32 {
        let key = match &d.profile {
            Some((i, _)) => format!("profile[{}].gateway", i + 1),
            None => "node.gateway".into(),
        };
        match node.route_table.checked_add(index as u32) {
            Some(t) if t == node.hold_table => {
                self.err_at(
                    &key,
                    d.gateway_span.clone(),
                    format!("this pool's routing table would be node.route_table + {index} = {t}, which is node.hold_table"),
                    "set node.hold_table to a table no pool uses (default: node.route_table - 1)",
                );
                0
            }
            Some(t) if !reserved_table(t) => {
                if node.rule_priority == 0 {
                    self.err_at(
                        &key,
                        d.gateway_span.clone(),
                        "the pool's `ip rule`s go just before the main one, but node.rule_priority is 0".into(),
                        "set node.rule_priority to 1 or more (default: node.route_table)",
                    );
                }
                t
            }
            _ => {
                self.err_at(
                    &key,
                    d.gateway_span.clone(),
                    format!(
                        "this pool's routing table would be node.route_table + {index} = {}, which is reserved ({RESERVED_TABLES}) or out of range",
                        u64::from(node.route_table) + index as u64
                    ),
                    "pick a node.route_table whose next numbers are free, e.g. 7700 (pool N gets route_table + N)",
                );
                0
            }
        }
    }
}

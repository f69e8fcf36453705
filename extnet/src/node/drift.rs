//! What of the node's base is not as the policy plans it: the check the node agent
//! ([`crate::node::watch`]) makes when the kernel reports a change, before it repairs anything,
//! and again after a repair.
//!
//! It looks at what [`crate::node::ensure`] makes and nothing else: the node interface, the
//! base record and the nft tables it stands for, the job cgroup root, extnet's rules, the hold
//! link, the routes of extnet's tables, forwarding for netns jobs. Everything it reports,
//! `ensure` or [`crate::node::reload`] puts right, except a node interface that is down (it
//! takes its routes back only once it is up). The tables are compared by their chains and
//! rules with what the last load left (a hash in the base record), so an edit inside them is
//! drift too. It only reads (netlink dumps and gets, `stat`s,
//! one sysctl file), so a check causes no notification of its own.

use crate::kernel::netlink::route::Route6;
use crate::kernel::netlink::rule::SourceRule;
use crate::kernel::netlink::{FwmarkRule, Netlink, Route};
use crate::kernel::nftables::{self as nft, netlink::Family};
use crate::node::{inputs_key, BaseRecord, NodeError};
use crate::plan::{self, layout::Layout};
use extnet_policy::Policy;
use std::fmt;
use std::net::Ipv4Addr;

/// One way in which the node's base differs from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// `node.interface` is administratively down: the kernel removed the routes through it and
    /// takes them back only once it is up.
    InterfaceDown {
        iface: String,
    },
    /// No base record (`<state_dir>/base.json`), or one that does not read: never loaded.
    NoBaseRecord,
    /// The record is of other inputs: the policy, the node's address or extnet changed since
    /// the load.
    OtherInputs,
    /// The record is of another network namespace.
    OtherNetns,
    /// An nft table of the base is gone (`nft flush ruleset`, a firewall reload).
    NftTable {
        family: Family,
    },
    /// A table `ip extnet` or `ip6 extnet` of an earlier version is still there (the load
    /// deletes them).
    OldNftTable {
        family: Family,
    },
    /// The chains or rules of the base's nft tables are not those extnet loaded: someone
    /// deleted, added or replaced one (`nft delete rule ...`, `nft flush chain ...`).
    TableEdited,
    /// The directory of the job cgroups (`node.cgroup_root`) is gone.
    CgroupRoot {
        path: std::path::PathBuf,
    },
    MissingRule(FwmarkRule),
    /// A rule of extnet's at its priorities that the policy does not plan.
    StaleRule(FwmarkRule),
    /// The hold link `extnet0` is gone (and with it the hold table's default route).
    HoldLink,
    HoldLinkDown,
    MissingRoute(Route),
    /// The IPv6 hold rule is missing (`ip -6 rule`): a job's IPv6 would follow the node's
    /// IPv6 routes once the nft tables are gone.
    MissingRule6(FwmarkRule),
    /// An IPv6 rule of extnet's at its priorities that the policy does not plan.
    StaleRule6(FwmarkRule),
    /// The hold table's IPv6 `unreachable default` is missing.
    Ipv6HoldRoute {
        table: u32,
    },
    /// An IPv6 route of extnet's tables that the plan has ([`plan::routes6`]) is missing.
    MissingRoute6(Route6),
    /// An IPv6 route of extnet's tables that the plan does not have.
    StaleRoute6(Route6),
    /// A route of a pool's table that the policy does not plan.
    StaleRoute(Route),
    /// A netns hold rule is missing ([`plan::netns_hold_rules`]): with the nft table gone, a
    /// netns job's packets would follow the node's own routes.
    MissingSourceRule(SourceRule),
    /// A netns hold rule of extnet's that the policy does not plan.
    StaleSourceRule(SourceRule),
    /// Forwarding is off on `node.interface`, which netns jobs need.
    Forwarding {
        iface: String,
    },
}

impl Drift {
    /// Whether [`crate::node::ensure`] or [`crate::node::reload`] can put it right now.
    pub fn repairable(&self) -> bool {
        !matches!(self, Drift::InterfaceDown { .. })
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::InterfaceDown { iface } => write!(f, "node interface {iface} is down"),
            Drift::NoBaseRecord => f.write_str("no base record"),
            Drift::OtherInputs => {
                f.write_str("base loaded for another policy, node address or extnet version")
            }
            Drift::OtherNetns => f.write_str("base record of another network namespace"),
            Drift::TableEdited => {
                f.write_str("chains or rules of extnet's nft tables changed since it loaded them")
            }
            Drift::NftTable { family } => {
                write!(f, "nft table {family} {} missing", plan::TABLE)
            }
            Drift::OldNftTable { family } => {
                write!(
                    f,
                    "nft table {family} {} of an earlier version present",
                    plan::TABLE
                )
            }
            Drift::MissingRoute6(r) => write!(f, "IPv6 route {r} missing"),
            Drift::StaleRoute6(r) => write!(f, "stale IPv6 route {r}"),
            Drift::CgroupRoot { path } => {
                write!(f, "job cgroup directory {} missing", path.display())
            }
            Drift::MissingRule(r) => write!(f, "rule {r} missing"),
            Drift::StaleRule(r) => write!(f, "stale rule {r}"),
            Drift::HoldLink => write!(f, "hold link {} missing", plan::HOLD_LINK),
            Drift::HoldLinkDown => write!(f, "hold link {} down", plan::HOLD_LINK),
            Drift::MissingRoute(r) => write!(f, "route {r} missing"),
            Drift::StaleRoute(r) => write!(f, "stale route {r}"),
            Drift::MissingRule6(r) => write!(f, "IPv6 rule {r} missing"),
            Drift::StaleRule6(r) => write!(f, "stale IPv6 rule {r}"),
            Drift::Ipv6HoldRoute { table } => {
                write!(f, "IPv6 route unreachable default table {table} missing")
            }
            Drift::MissingSourceRule(r) => write!(f, "netns hold rule {r} missing"),
            Drift::StaleSourceRule(r) => write!(f, "stale netns hold rule {r}"),
            Drift::Forwarding { iface } => write!(f, "forwarding off on {iface}"),
        }
    }
}

/// `drift` as one line: its items joined with "; ".
pub fn describe(drift: &[Drift]) -> String {
    let items: Vec<String> = drift.iter().map(Drift::to_string).collect();
    items.join("; ")
}

/// What of the base differs from the plan of `policy` on this node (`iface_index` and
/// `node_addr`: `node.interface`'s, from [`crate::node::node_addr`]); empty when nothing.
/// Costs a rule dump per family, a route dump per table (and the hold table's IPv6 one), two nft table gets, a chain and a rule dump of each nft table, a `stat` of the cgroup root and
/// two link ioctls.
pub fn check(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    iface_index: u32,
    node_addr: Ipv4Addr,
) -> Result<Vec<Drift>, NodeError> {
    let n = &policy.node;
    let mut drift = Vec::new();
    let node_addr6 = crate::node::node_addr6(policy, nl, iface_index)?;
    if nl.is_up(&n.interface)? == Some(false) {
        drift.push(Drift::InterfaceDown {
            iface: n.interface.clone(),
        });
    }

    // the nft tables, as the base record says they were loaded, and the job cgroup root
    let record = BaseRecord::read(layout);
    match &record {
        None => drift.push(Drift::NoBaseRecord),
        Some(m) => {
            let inputs = inputs_key(policy, layout, node_addr, node_addr6);
            if m.inputs.as_deref() != Some(inputs.as_str()) {
                drift.push(Drift::OtherInputs);
            }
            if m.netns != crate::node::current_netns() {
                drift.push(Drift::OtherNetns);
            }
        }
    }
    if !layout.cgroup_root.is_dir() {
        drift.push(Drift::CgroupRoot {
            path: layout.cgroup_root.clone(),
        });
    }
    let mut tables = true;
    if !nft::table_exists_in(Family::Inet, plan::TABLE)? {
        drift.push(Drift::NftTable {
            family: Family::Inet,
        });
        tables = false;
    }
    for family in [Family::Ip, Family::Ip6] {
        if nft::table_exists_in(family, plan::TABLE)? {
            drift.push(Drift::OldNftTable { family });
        }
    }
    // with both tables there, their chains and rules as loaded (a record of an earlier
    // version has no structure to compare with)
    if let Some(loaded) = record.as_ref().and_then(|m| m.structure.as_deref()) {
        if tables && crate::node::table_structure()? != loaded {
            drift.push(Drift::TableEdited);
        }
    }

    // rules: the main and hold rule, the pools' rules, and no other of extnet's
    let have = nl.rules_v4()?;
    let main_hold = [plan::main_rule(policy), plan::hold_rule(policy)];
    let pools = plan::pool_rules(policy);
    for rule in main_hold.iter().chain(&pools) {
        if !have.contains(rule) {
            drift.push(Drift::MissingRule(*rule));
        }
    }
    for rule in &have {
        let stale = (crate::node::is_main_or_hold_rule(policy, rule) && !main_hold.contains(rule))
            || (crate::node::is_pool_rule(policy, rule) && !pools.contains(rule));
        if stale {
            drift.push(Drift::StaleRule(*rule));
        }
    }

    // the hold link, then the routes of every table of extnet's
    let mut planned = plan::main_routes(policy, iface_index);
    let hold_index = nl.index(plan::HOLD_LINK)?;
    match hold_index {
        None => drift.push(Drift::HoldLink),
        Some(hold) => {
            if nl.is_up(plan::HOLD_LINK)? != Some(true) {
                drift.push(Drift::HoldLinkDown);
            }
            planned.extend(plan::hold_routes(policy, hold));
        }
    }
    let pool_routes = plan::pool_routes(policy, iface_index);
    planned.extend(pool_routes.iter().copied());
    let mut tables: Vec<u32> = planned.iter().map(|r| r.table).collect();
    tables.sort_unstable();
    tables.dedup();
    for table in tables {
        let actual = nl.routes(table)?;
        for r in planned.iter().filter(|r| r.table == table) {
            if !actual.iter().any(|a| r.matches(a)) {
                drift.push(Drift::MissingRoute(*r));
            }
        }
        // only the pools' tables are reconciled by ensure (`ensure_pool_routing`)
        if pool_routes.iter().any(|r| r.table == table) {
            for a in actual
                .iter()
                .filter(|a| !pool_routes.iter().any(|r| r.matches(a)))
            {
                drift.push(Drift::StaleRoute(*a));
            }
        }
    }

    if crate::kernel::sysctl::ipv6_available() {
        let ipv6 = n.gateway6.is_some() && node_addr6.is_some();
        let want = plan::rules6(policy, ipv6);
        let pools6 = plan::pool_rules6(policy, ipv6);
        let have = nl.rules_v6()?;
        for rule in want.iter().chain(&pools6).filter(|r| !have.contains(r)) {
            drift.push(Drift::MissingRule6(*rule));
        }
        for rule in have.iter().filter(|r| {
            (crate::node::is_main_or_hold_rule(policy, r) && !want.contains(r))
                || (crate::node::is_pool_rule(policy, r) && !pools6.contains(r))
        }) {
            drift.push(Drift::StaleRule6(*rule));
        }
        if !ipv6 && !nl.has_route6_unreachable_default(n.hold_table)? {
            drift.push(Drift::Ipv6HoldRoute {
                table: n.hold_table,
            });
        }
        // without the hold link its routes are gone too (reported above)
        if let Some(hold) = hold_index {
            let mut want = plan::routes6(policy, iface_index, hold, ipv6);
            want.extend(plan::pool_routes6(policy, iface_index, ipv6));
            let mut tables = vec![n.route_table, n.hold_table];
            tables.extend(pools.iter().map(|r| r.table));
            tables.sort_unstable();
            tables.dedup();
            let mut have = Vec::new();
            for table in tables {
                have.extend(nl.routes6(table)?);
            }
            for r in want.iter().filter(|r| !have.contains(r)) {
                drift.push(Drift::MissingRoute6(*r));
            }
            for r in have.iter().filter(|r| !want.contains(r)) {
                drift.push(Drift::StaleRoute6(*r));
            }
        }
    }

    let want = plan::netns_hold_rules(policy, crate::kernel::sysctl::ipv6_available());
    let have = crate::node::netns_hold_rules_now(nl)?;
    for r in want.iter().filter(|r| !have.contains(r)) {
        drift.push(Drift::MissingSourceRule(*r));
    }
    for r in have
        .iter()
        .filter(|r| crate::node::is_netns_hold_rule(policy, r) && !want.contains(r))
    {
        drift.push(Drift::StaleSourceRule(*r));
    }

    if policy.uses_netns() {
        let path = format!("/proc/sys/net/ipv4/conf/{}/forwarding", n.interface);
        if std::fs::read_to_string(path).map_or(true, |v| v.trim() != "1") {
            drift.push(Drift::Forwarding {
                iface: n.interface.clone(),
            });
        }
    }
    Ok(drift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    #[test]
    fn drift_reads_as_one_line_an_admin_understands() {
        let rule = FwmarkRule {
            fwmark: 0x30000,
            mask: 0x30000,
            table: 7700,
            priority: 7700,
        };
        let route = Route {
            table: 7700,
            dst: Ipv4Net::default(),
            kind: crate::kernel::netlink::RouteKind::Unicast {
                gateway: Some(Ipv4Addr::new(10, 99, 0, 254)),
                oif: Some(2),
            },
        };
        let d = [
            Drift::NftTable {
                family: Family::Inet,
            },
            Drift::MissingRule(rule),
            Drift::MissingRoute(route),
            Drift::CgroupRoot {
                path: "/sys/fs/cgroup/extnet/n1".into(),
            },
        ];
        let text = describe(&d);
        assert!(
            text.starts_with("nft table inet extnet missing; rule "),
            "{text}"
        );
        assert!(text.contains("; route default via 10.99.0.254"), "{text}");
        assert!(
            text.ends_with("job cgroup directory /sys/fs/cgroup/extnet/n1 missing"),
            "{text}"
        );
        assert!(d.iter().all(Drift::repairable));
        assert!(!Drift::InterfaceDown {
            iface: "eth0".into()
        }
        .repairable());
    }
}

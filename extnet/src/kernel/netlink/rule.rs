//! Policy routing rules that send marked packets to a table (`ip rule ... fwmark`), IPv4
//! and IPv6 (`ip -6 rule`: the same rule in the IPv6 rule list, which is separate).

use std::fmt;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::RouteHeader;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NetlinkError};

/// `fwmark MARK/MASK lookup TABLE priority PRIORITY`: packets whose mark, masked, equals
/// `fwmark` are routed by `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FwmarkRule {
    pub fwmark: u32,
    pub mask: u32,
    pub table: u32,
    pub priority: u32,
}

/// Written as `ip rule add` takes it.
impl fmt::Display for FwmarkRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fwmark {:#x}/{:#x} lookup {} priority {}",
            self.fwmark, self.mask, self.table, self.priority
        )
    }
}

impl FwmarkRule {
    fn message(&self, family: AddressFamily) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = family;
        msg.header.action = RuleAction::ToTable;
        msg.header.table = header_table(self.table);
        msg.attributes = vec![
            RuleAttribute::Priority(self.priority),
            RuleAttribute::FwMark(self.fwmark),
            RuleAttribute::FwMask(self.mask),
            RuleAttribute::Table(self.table),
        ];
        msg
    }

    /// A dumped rule as a [`FwmarkRule`], when it is exactly one: of `family`, "lookup", a
    /// mark and no other selector (no `not`, prefixes, interfaces, uid range, ports, ...).
    fn parse(msg: &RuleMessage, family: AddressFamily) -> Option<FwmarkRule> {
        let h = &msg.header;
        if h.family != family
            || h.action != RuleAction::ToTable
            || !h.flags.is_empty()
            || h.dst_len != 0
            || h.src_len != 0
            || h.tos != 0
        {
            return None;
        }
        let mut table = u32::from(h.table);
        let (mut fwmark, mut mask, mut priority) = (None, None, 0);
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::FwMark(m) => fwmark = Some(*m),
                RuleAttribute::FwMask(m) => mask = Some(*m),
                RuleAttribute::Priority(p) => priority = *p,
                // Who added it does not change what it does.
                RuleAttribute::Protocol(_) => {}
                // The kernel reports these always; all ones (-1) means "not set".
                RuleAttribute::SuppressPrefixLen(u32::MAX)
                | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
                // Any other attribute is one more selector (or one this crate does not know):
                // not the plain rule we manage.
                _ => return None,
            }
        }
        // The kernel's default mask for a mark without one is all ones.
        let fwmark = fwmark?;
        Some(FwmarkRule {
            fwmark,
            mask: mask.unwrap_or(u32::MAX),
            table,
            priority,
        })
    }
}

impl Netlink {
    /// Adds `rule` unless an identical one is there: `Ok(true)` when added. Reads the rules
    /// first; the add itself is `NLM_F_EXCL`, so two prologs racing here still leave one rule
    /// (the loser gets `EEXIST`, reported as `Ok(false)`).
    /// Equals `ip rule add fwmark M/MASK lookup T priority P`, guarded by `ip rule show`.
    pub fn rule_ensure(&mut self, rule: &FwmarkRule) -> Result<bool, NetlinkError> {
        self.rule_ensure_in(AddressFamily::Inet, rule)
    }

    /// [`Netlink::rule_ensure`] in the IPv6 rule list: `ip -6 rule add ...`.
    pub fn rule6_ensure(&mut self, rule: &FwmarkRule) -> Result<bool, NetlinkError> {
        self.rule_ensure_in(AddressFamily::Inet6, rule)
    }

    fn rule_ensure_in(
        &mut self,
        family: AddressFamily,
        rule: &FwmarkRule,
    ) -> Result<bool, NetlinkError> {
        if self.rules_in(family)?.contains(rule) {
            return Ok(false);
        }
        match self.change(
            RouteNetlinkMessage::NewRule(rule.message(family)),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add {} rule {rule}", name(family)),
        ) {
            Ok(()) => {
                tracing::debug!(%rule, family = name(family), "rule added");
                Ok(true)
            }
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `rule`: `Ok(false)` when there is no such rule. Deletes one copy per call.
    /// Equals `ip rule del fwmark M/MASK lookup T priority P`.
    pub fn rule_del(&mut self, rule: &FwmarkRule) -> Result<bool, NetlinkError> {
        self.rule_del_in(AddressFamily::Inet, rule)
    }

    /// [`Netlink::rule_del`] in the IPv6 rule list: `ip -6 rule del ...`.
    pub fn rule6_del(&mut self, rule: &FwmarkRule) -> Result<bool, NetlinkError> {
        self.rule_del_in(AddressFamily::Inet6, rule)
    }

    fn rule_del_in(
        &mut self,
        family: AddressFamily,
        rule: &FwmarkRule,
    ) -> Result<bool, NetlinkError> {
        match self.change(
            RouteNetlinkMessage::DelRule(rule.message(family)),
            0,
            &|| format!("delete {} rule {rule}", name(family)),
        ) {
            Ok(()) => {
                tracing::debug!(%rule, family = name(family), "rule deleted");
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 rules that are plain `fwmark ... lookup ...` rules, in priority order; other
    /// rules (the default `local`, `main`, `default` ones, and rules with more selectors) are
    /// left out. Equals `ip -4 rule show`, filtered.
    pub fn rules_v4(&mut self) -> Result<Vec<FwmarkRule>, NetlinkError> {
        self.rules_in(AddressFamily::Inet)
    }

    /// The same of the IPv6 rules: `ip -6 rule show`, filtered.
    pub fn rules_v6(&mut self) -> Result<Vec<FwmarkRule>, NetlinkError> {
        self.rules_in(AddressFamily::Inet6)
    }

    fn rules_in(&mut self, family: AddressFamily) -> Result<Vec<FwmarkRule>, NetlinkError> {
        Ok(self
            .rule_dump(family)?
            .iter()
            .filter_map(|r| FwmarkRule::parse(r, family))
            .collect())
    }

    /// Every rule of `family`: `ip rule show`.
    fn rule_dump(&mut self, family: AddressFamily) -> Result<Vec<RuleMessage>, NetlinkError> {
        let mut req = RuleMessage::default();
        req.header.family = family;
        let answers = self.dump(RouteNetlinkMessage::GetRule(req), &|| {
            format!("show {} rules", name(family))
        })?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) if r.header.family == family => Some(r),
                _ => None,
            })
            .collect())
    }
}

/// `from PREFIX lookup TABLE priority PRIORITY`: packets whose source address is in `src`
/// are routed by `table`. Its family is the prefix's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRule {
    pub src: ipnet::IpNet,
    pub table: u32,
    pub priority: u32,
}

/// Written as `ip rule add` takes it.
impl fmt::Display for SourceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "from {} lookup {} priority {}",
            self.src, self.table, self.priority
        )
    }
}

impl SourceRule {
    fn family(&self) -> AddressFamily {
        match self.src {
            ipnet::IpNet::V4(_) => AddressFamily::Inet,
            ipnet::IpNet::V6(_) => AddressFamily::Inet6,
        }
    }

    fn message(&self) -> RuleMessage {
        let mut msg = RuleMessage::default();
        msg.header.family = self.family();
        msg.header.action = RuleAction::ToTable;
        msg.header.src_len = self.src.prefix_len();
        msg.header.table = header_table(self.table);
        msg.attributes = vec![
            RuleAttribute::Priority(self.priority),
            RuleAttribute::Source(self.src.network()),
            RuleAttribute::Table(self.table),
        ];
        msg
    }

    /// A dumped rule as a [`SourceRule`], when it is exactly one: "lookup", a source prefix
    /// and no other selector.
    fn parse(msg: &RuleMessage) -> Option<SourceRule> {
        let h = &msg.header;
        if h.action != RuleAction::ToTable
            || !h.flags.is_empty()
            || h.dst_len != 0
            || h.src_len == 0
            || h.tos != 0
        {
            return None;
        }
        let mut table = u32::from(h.table);
        let (mut src, mut priority) = (None, 0);
        for attr in &msg.attributes {
            match attr {
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Source(a) => src = Some(*a),
                RuleAttribute::Priority(p) => priority = *p,
                RuleAttribute::Protocol(_) => {}
                RuleAttribute::SuppressPrefixLen(u32::MAX)
                | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
                _ => return None,
            }
        }
        let src = ipnet::IpNet::new(src?, h.src_len).ok()?;
        Some(SourceRule {
            src,
            table,
            priority,
        })
    }
}

impl Netlink {
    /// Adds `rule` unless an identical one is there (`Ok(true)`: added). Equals `ip rule add
    /// from PREFIX lookup T priority P`, guarded by `ip rule show`.
    pub fn source_rule_ensure(&mut self, rule: &SourceRule) -> Result<bool, NetlinkError> {
        let family = rule.family();
        if self
            .source_rules(family == AddressFamily::Inet6)?
            .contains(rule)
        {
            return Ok(false);
        }
        match self.change(
            RouteNetlinkMessage::NewRule(rule.message()),
            NLM_F_CREATE | NLM_F_EXCL,
            &|| format!("add {} rule {rule}", name(family)),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `rule`: `Ok(false)` when there is no such rule. Equals `ip rule del from PREFIX
    /// lookup T priority P`.
    pub fn source_rule_del(&mut self, rule: &SourceRule) -> Result<bool, NetlinkError> {
        let family = rule.family();
        match self.change(RouteNetlinkMessage::DelRule(rule.message()), 0, &|| {
            format!("delete {} rule {rule}", name(family))
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The plain `from PREFIX lookup TABLE` rules of IPv4 (or of IPv6, `ipv6`). Equals `ip
    /// rule show`, filtered.
    pub fn source_rules(&mut self, ipv6: bool) -> Result<Vec<SourceRule>, NetlinkError> {
        let family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        Ok(self
            .rule_dump(family)?
            .iter()
            .filter_map(SourceRule::parse)
            .collect())
    }
}

/// A rule header's 8-bit table field for `table`. Like iproute2: tables above 255 only in
/// FRA_TABLE, the 8-bit field says "unspec".
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

/// The family as errors and logs name it.
fn name(family: AddressFamily) -> &'static str {
    if family == AddressFamily::Inet6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::route::RouteProtocol;

    #[test]
    fn built_rules_parse_back_and_read_like_ip_rule() {
        let rule = FwmarkRule {
            fwmark: 0x10000,
            mask: 0x10000,
            table: 7700,
            priority: 100,
        };
        assert_eq!(
            FwmarkRule::parse(&rule.message(AddressFamily::Inet), AddressFamily::Inet),
            Some(rule)
        );
        assert_eq!(
            rule.to_string(),
            "fwmark 0x10000/0x10000 lookup 7700 priority 100"
        );
        let small = FwmarkRule { table: 200, ..rule };
        assert_eq!(small.message(AddressFamily::Inet).header.table, 200);
        assert_eq!(
            FwmarkRule::parse(&small.message(AddressFamily::Inet), AddressFamily::Inet),
            Some(small)
        );
    }

    #[test]
    fn source_rules_parse_back_and_are_not_fwmark_rules() {
        for src in ["100.64.0.0/16", "fd00:78e7:ffff::/112"] {
            let rule = SourceRule {
                src: src.parse().unwrap(),
                table: 7698,
                priority: 7702,
            };
            let msg = rule.message();
            assert_eq!(SourceRule::parse(&msg), Some(rule), "{src}");
            assert_eq!(FwmarkRule::parse(&msg, msg.header.family), None, "{src}");
            assert_eq!(
                rule.to_string(),
                format!("from {src} lookup 7698 priority 7702")
            );
        }
        let fw = FwmarkRule {
            fwmark: 1,
            mask: 1,
            table: 7700,
            priority: 100,
        };
        assert_eq!(SourceRule::parse(&fw.message(AddressFamily::Inet)), None);
    }

    #[test]
    fn rules_with_more_selectors_are_not_ours() {
        let rule = FwmarkRule {
            fwmark: 1,
            mask: 1,
            table: 7700,
            priority: 100,
        };
        let mut inverted = rule.message(AddressFamily::Inet);
        inverted.header.flags = netlink_packet_route::rule::RuleFlags::Invert;
        assert_eq!(FwmarkRule::parse(&inverted, AddressFamily::Inet), None);
        // As the kernel dumps it: with the unset suppressors and the protocol.
        let mut dumped = rule.message(AddressFamily::Inet);
        dumped
            .attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::MAX));
        dumped
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Unspec));
        assert_eq!(FwmarkRule::parse(&dumped, AddressFamily::Inet), Some(rule));
        let mut suppressing = rule.message(AddressFamily::Inet);
        suppressing
            .attributes
            .push(RuleAttribute::SuppressPrefixLen(0));
        assert_eq!(FwmarkRule::parse(&suppressing, AddressFamily::Inet), None);
        let mut with_iif = rule.message(AddressFamily::Inet);
        with_iif
            .attributes
            .push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(FwmarkRule::parse(&with_iif, AddressFamily::Inet), None);
    }

    #[test]
    fn a_rule_of_one_family_is_not_read_as_the_others() {
        let rule = FwmarkRule {
            fwmark: 0x10000,
            mask: 0x10000,
            table: 7699,
            priority: 7701,
        };
        let v6 = rule.message(AddressFamily::Inet6);
        assert_eq!(FwmarkRule::parse(&v6, AddressFamily::Inet6), Some(rule));
        assert_eq!(FwmarkRule::parse(&v6, AddressFamily::Inet), None);
        assert_eq!(
            FwmarkRule::parse(&rule.message(AddressFamily::Inet), AddressFamily::Inet6),
            None
        );
    }
}

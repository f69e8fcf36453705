//! Addresses and networks as the file writes them, checked the same way wherever they stand
//! (`node.internal`, a destination's `net`, `node.gateway` and a profile's `gateway`). Only
//! IPv4: the path through the gateway carries no IPv6. A network must be written as its
//! network address, so that what the admin reads is what the node matches. A gateway must lie
//! in an internal network, because the node reaches it directly on its cluster interface.

use super::{span, Validator};
use crate::raw::S;
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};

impl Validator<'_> {
    /// Checks one IPv4 network written as `a.b.c.d/len` (or a bare address, = /32).
    pub(super) fn ipv4_net(
        &mut self,
        key: &str,
        s: &S<String>,
        what: &str,
        example: &str,
    ) -> Option<Ipv4Net> {
        let text = s.get_ref().trim();
        let parsed: Option<IpNet> = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(IpNet::V4(n)) if n != n.trunc() => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text} has host bits set"),
                    &format!("write the network address, {}", n.trunc()),
                );
                None
            }
            Some(IpNet::V4(n)) => Some(n),
            Some(IpNet::V6(_)) => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text} is an IPv6 network; extnet's path through the gateway is IPv4 only for now, so {what} cannot be IPv6"),
                    "remove it; IPv6 traffic of jobs never goes through the gateway",
                );
                None
            }
            None => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text:?} is not an IPv4 network"),
                    &format!("write networks as address/prefix, e.g. {example:?}"),
                );
                None
            }
        }
    }

    /// Checks a gateway's address, `text` being the value of `s` as the caller reads it
    /// (`node.gateway` as written, a profile's `gateway` trimmed). `example` is shown in the
    /// hint.
    pub(super) fn gateway(
        &mut self,
        key: &str,
        s: &S<String>,
        text: &str,
        example: &str,
    ) -> Option<Ipv4Addr> {
        let gateway = text.parse::<Ipv4Addr>().ok();
        if gateway.is_none() {
            self.err_at(
                key,
                span(s),
                format!("{text:?} is not an IPv4 address"),
                &format!("give the gateway's virtual (VRRP) address, e.g. {example:?}"),
            );
        }
        gateway
    }

    /// Checks that an internal network holds gateway `gw` (written at `s`), the error being
    /// about `key`.
    pub(super) fn gateway_is_internal(
        &mut self,
        key: &str,
        s: &S<String>,
        gw: Ipv4Addr,
        internal: &[Ipv4Net],
        hint: &str,
    ) {
        if !internal.iter().any(|n| n.contains(&gw)) {
            self.err_at(
                key,
                span(s),
                format!("the gateway {gw} is not inside any internal network"),
                hint,
            );
        }
    }
}

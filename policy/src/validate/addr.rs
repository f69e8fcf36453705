//! Addresses and networks as the file writes them, checked the same way wherever they stand
//! (`node.internal`, `node.internal6`, a destination's `net`, `node.gateway`,
//! `node.gateway6` and a profile's `gateway`). A key holds one family, but for a
//! destination's `net`, which takes either. A network must be written as its
//! network address, so that what the admin reads is what the node matches. A gateway must lie
//! in an internal network, because the node reaches it directly on its cluster interface.

use super::{span, Validator};
use crate::raw::S;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Validator<'_> {
    /// Checks one network of either family written as `address/len` (or a bare address, =
    /// /32 or /128), with its host bits clear.
    pub(super) fn ip_net(&mut self, key: &str, s: &S<String>, example: &str) -> Option<IpNet> {
        let text = s.get_ref().trim();
        let parsed: Option<IpNet> = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(n) if n != n.trunc() => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text} has host bits set"),
                    &format!("write the network address, {}", n.trunc()),
                );
                None
            }
            Some(n) => Some(n),
            None => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text:?} is not an IPv4 or IPv6 network"),
                    &format!("write networks as address/prefix, e.g. {example:?}"),
                );
                None
            }
        }
    }

    /// Checks one IPv4 network written as `a.b.c.d/len` (or a bare address, = /32). `what`
    /// names the key's kind in the message; an IPv6 network is refused with a hint to
    /// `v6_key`, where IPv6 networks of that kind go.
    pub(super) fn ipv4_net(
        &mut self,
        key: &str,
        s: &S<String>,
        what: &str,
        example: &str,
        v6_key: &str,
    ) -> Option<Ipv4Net> {
        match self.ip_net(key, s, example)? {
            IpNet::V4(n) => Some(n),
            IpNet::V6(n) => {
                self.err_at(
                    key,
                    span(s),
                    format!("{n} is an IPv6 network, but {key} holds IPv4 networks ({what})"),
                    &format!("move it to {v6_key}"),
                );
                None
            }
        }
    }

    /// Checks one IPv6 network written as `addr/len` (or a bare address, = /128); an IPv4
    /// network is refused with a hint to `v4_key`.
    pub(super) fn ipv6_net(
        &mut self,
        key: &str,
        s: &S<String>,
        what: &str,
        example: &str,
        v4_key: &str,
    ) -> Option<Ipv6Net> {
        match self.ip_net(key, s, example)? {
            IpNet::V6(n) => Some(n),
            IpNet::V4(n) => {
                self.err_at(
                    key,
                    span(s),
                    format!("{n} is an IPv4 network, but {key} holds IPv6 networks ({what})"),
                    &format!("move it to {v4_key}"),
                );
                None
            }
        }
    }

    /// Checks an IPv6 gateway address (`node.gateway6`): a unicast address, not link-local
    /// (a route via a link-local next hop would need the interface's scope, which extnet
    /// does not plan).
    pub(super) fn gateway6(&mut self, key: &str, s: &S<String>, example: &str) -> Option<Ipv6Addr> {
        let text = s.get_ref().trim();
        let problem = match text.parse::<Ipv6Addr>() {
            Err(_) => format!("{text:?} is not an IPv6 address"),
            Ok(a) if a.is_unspecified() || a.is_loopback() || a.is_multicast() => {
                format!("{a} is not a unicast address another host can hold")
            }
            Ok(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => {
                format!("{a} is link-local")
            }
            Ok(a) => return Some(a),
        };
        self.err_at(
            key,
            span(s),
            problem,
            &format!("give the gateways' IPv6 virtual (VRRP) address, a global or unique local address, e.g. {example:?}"),
        );
        None
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

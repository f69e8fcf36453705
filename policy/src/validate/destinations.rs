//! A profile's `destinations`: the external places its jobs may reach. An empty list would
//! allow nothing, so it is refused in favour of leaving the key out (everything). An entry
//! inside an internal network would be a no-op (internal traffic never goes through the
//! gateway). ICMP has no ports, and a port is listed once. Port lists become sorted ranges
//! that do not touch, which lets the check for redundant entries compare range by range; an
//! entry another entry already covers is reported, since it hints at a mistake in one of the
//! two.

use super::{span, Span, Validator};
use crate::raw::{RawDestination, RawPortList, S};
use crate::{port_range_text, Destination, Proto};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

impl Validator<'_> {
    /// A profile's destination allowlist. `None` when an entry is invalid (errors recorded).
    pub(super) fn destinations(
        &mut self,
        key: &str,
        raw: &S<Vec<S<RawDestination>>>,
        internal: &[Ipv4Net],
        internal6: &[Ipv6Net],
    ) -> Option<Vec<Destination>> {
        let start = self.errors.len();
        if raw.get_ref().is_empty() {
            self.err_at(
                key,
                span(raw),
                "an empty destinations list lets the job reach nothing outside".into(),
                "remove the key to allow every external destination, or list the allowed ones",
            );
            return None;
        }
        let mut out: Vec<(Destination, Span)> = Vec::new();
        for (j, e) in raw.get_ref().iter().enumerate() {
            let ekey = format!("{key}[{}]", j + 1);
            let e_span = span(e);
            let e = e.get_ref();
            let net = self.ip_net(&format!("{ekey}.net"), &e.net, "203.0.113.0/24");
            let inside = match net {
                Some(IpNet::V4(n)) => internal
                    .iter()
                    .find(|i| i.contains(&n))
                    .map(|i| (i.to_string(), "node.internal")),
                Some(IpNet::V6(n)) => internal6
                    .iter()
                    .find(|i| i.contains(&n))
                    .map(|i| (i.to_string(), "node.internal6")),
                None => None,
            };
            if let (Some(n), Some((i, ikey))) = (net, inside) {
                self.err_at(
                    &format!("{ekey}.net"),
                    span(&e.net),
                    format!("{n} is inside the internal network {i}: internal destinations never go through the gateway and are always reachable"),
                    &format!("remove the entry; {ikey} decides what stays on the cluster network"),
                );
            }
            let proto = e.proto.as_ref().map_or(Proto::Any, |p| *p.get_ref());
            let ports = match &e.ports {
                None => Some(Vec::new()),
                Some(p) if proto == Proto::Icmp => {
                    self.err_at(
                        &format!("{ekey}.ports"),
                        span(p),
                        "ICMP has no ports".into(),
                        "remove ports, or use proto = \"tcp\" or \"udp\"",
                    );
                    None
                }
                Some(p) => self.port_list(&format!("{ekey}.ports"), p),
            };
            if let (Some(net), Some(ports)) = (net, ports) {
                out.push((Destination { net, proto, ports }, e_span));
            }
        }
        for (a, (da, at)) in out.iter().enumerate() {
            for (b, (db, _)) in out.iter().enumerate() {
                // report each redundant entry once; of two equal entries, the later one
                if a != b && da.covered_by(db) && !(db.covered_by(da) && b > a) {
                    self.err_at(
                        &format!("{key}[{}]", a + 1),
                        at.clone(),
                        format!("{da} is already allowed by entry {} ({db})", b + 1),
                        "remove the redundant entry, or narrow the wider one",
                    );
                    break;
                }
            }
        }
        if self.errors.len() > start {
            return None;
        }
        Some(out.into_iter().map(|(d, _)| d).collect())
    }

    /// `443` or `"80,443,8000-8100"`: sorted, merged port ranges.
    fn port_list(&mut self, key: &str, raw: &S<RawPortList>) -> Option<Vec<(u16, u16)>> {
        let hint = "write one number (443) or a string of ports and ranges between 1 and 65535, e.g. \"80,443,8000-8100\"";
        let text = match raw.get_ref() {
            RawPortList::One(n) => n.to_string(),
            RawPortList::List(s) => s.clone(),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|&p| p > 0);
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for item in text.split(',') {
            let r = match item.split_once('-') {
                Some((a, b)) => port(a).zip(port(b)).filter(|(a, b)| a <= b),
                None => port(item).map(|p| (p, p)),
            };
            match r {
                Some(r) => ranges.push(r),
                None => {
                    self.err_at(
                        key,
                        span(raw),
                        format!(
                            "{:?} is not a port (1-65535) or a range FIRST-LAST",
                            item.trim()
                        ),
                        hint,
                    );
                    return None;
                }
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => {
                    self.err_at(
                        key,
                        span(raw),
                        format!(
                            "ports {} and {} overlap",
                            port_range_text(*last),
                            port_range_text((lo, hi))
                        ),
                        "list every port once",
                    );
                    return None;
                }
                Some(last) if u32::from(lo) == u32::from(last.1) + 1 => last.1 = hi,
                _ => merged.push((lo, hi)),
            }
        }
        Some(merged)
    }
}

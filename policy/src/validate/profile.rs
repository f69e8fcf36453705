//! `[[profile]]`: one named grant. Its name must be unique and typeable after
//! `--external-net=`; its principals, destinations and pool are checked by their own modules;
//! its job limits must be able to grant something and to be reached: a limit of 0, a limit
//! the profile's pool cannot hold, or a per-user limit above the per-node one would mislead
//! the admin who reads it.

use super::pools::PoolDraft;
use super::{span, Span, Validator};
use crate::raw::{RawPrincipals, RawProfile, S};
use crate::{Mode, PortPool, Profile};
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// What checking a profile needs from the rest of the file.
pub(super) struct ProfileContext<'a> {
    pub(super) default_mode: Mode,
    /// The default pool (`None` when `[ports]` is invalid).
    pub(super) default_pool: Option<PortPool>,
    /// `node.gateway` (`None` when `[node]` is invalid).
    pub(super) node_gateway: Option<Ipv4Addr>,
    /// `node.gateway6` (`None` when not set or `[node]` is invalid).
    pub(super) node_gateway6: Option<Ipv6Addr>,
    pub(super) internal: &'a [Ipv4Net],
    pub(super) internal6: &'a [Ipv6Net],
}

/// The pool a profile's jobs take blocks from, as its limits are checked against.
struct PoolRoom {
    /// Its blocks per node (`None` when the pool is invalid).
    blocks: Option<u32>,
    /// `ports` or `profile[N].ports`.
    key: String,
    /// The pool as messages name it.
    name: &'static str,
}

impl Validator<'_> {
    /// Every profile that is valid, in file order, each with its `pool` set. A profile's own
    /// pool is added to `drafts`.
    pub(super) fn profiles(
        &mut self,
        raw: Vec<S<RawProfile>>,
        ctx: &ProfileContext,
        drafts: &mut Vec<PoolDraft>,
    ) -> Vec<Profile> {
        let mut profiles = Vec::new();
        let mut names: Vec<(String, Span)> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let name = (p.get_ref().name.get_ref().clone(), span(&p.get_ref().name));
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name.0) {
                let first_line = self
                    .line(first)
                    .map_or(String::new(), |l| format!(" (first on line {l})"));
                self.err_at(
                    &format!("profile[{}].name", i + 1),
                    name.1.clone(),
                    format!("profile name {:?} is used twice{first_line}", name.0),
                    "give every [[profile]] its own name",
                );
            }
            names.push(name);
            let (profile, own) = self.profile(i, p, ctx);
            let pool = match own {
                Some(d) => {
                    drafts.push(d);
                    drafts.len() - 1
                }
                None => 0,
            };
            if let Some(mut p) = profile {
                p.pool = pool;
                profiles.push(p);
            }
        }
        profiles
    }

    /// One profile, and its own pool when it has one. The profile is `None` when invalid
    /// (errors recorded); its `pool` is set by the caller.
    fn profile(
        &mut self,
        i: usize,
        raw: S<RawProfile>,
        ctx: &ProfileContext,
    ) -> (Option<Profile>, Option<PoolDraft>) {
        let key = format!("profile[{}]", i + 1);
        let header = span(&raw);
        let mut raw = raw.into_inner();
        let start = self.errors.len();
        let own = self.own_pool(
            i,
            raw.name.get_ref(),
            raw.ports.take(),
            raw.gateway.as_ref(),
            raw.gateway6.as_ref(),
            ctx,
        );
        let room = match &own {
            Some(d) => PoolRoom {
                blocks: d.checked.ports.map(|p| p.blocks()),
                key: d.checked.key.clone(),
                name: "its own port pool ([profile.ports])",
            },
            None => PoolRoom {
                blocks: ctx.default_pool.map(|p| p.blocks()),
                key: "ports".to_owned(),
                name: "its port pool (the default pool, [ports])",
            },
        };
        let name = raw.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.err_at(
                &format!("{key}.name"),
                span(&raw.name),
                format!("{name:?} is not a valid profile name"),
                "use 1 to 32 letters, digits, '-' or '_' (users type it after --external-net=)",
            );
        }
        let allow = self.principals(
            &key,
            &RawPrincipals {
                users: raw.users,
                groups: raw.groups,
                accounts: raw.accounts,
            },
        );
        let none = S::new(0..0, RawPrincipals::default());
        let deny_raw = raw.deny.as_ref().unwrap_or(&none);
        let auto_raw = raw.auto.as_ref().unwrap_or(&none);
        let deny = self.principals(&format!("{key}.deny"), deny_raw.get_ref());
        let auto = self.principals(&format!("{key}.auto"), auto_raw.get_ref());
        let partitions = self.names(&format!("{key}.partitions"), &raw.partitions, false);
        let qos = self.names(&format!("{key}.qos"), &raw.qos, false);
        self.can_match(&key, name, header, &allow, &deny, span(deny_raw));
        self.auto_is_allowed(&key, &allow, &deny, &auto, auto_raw.get_ref());
        let ipv6 = raw.ipv6.as_ref().is_none_or(|v| *v.get_ref());
        let destinations = raw.destinations.as_ref().map(|d| {
            let dkey = format!("{key}.destinations");
            let dests = self.destinations(&dkey, d, ctx.internal, ctx.internal6);
            if let (Some(v), false, Some(ds)) = (&raw.ipv6, ipv6, &dests) {
                if let Some(j) = ds.iter().position(|d| d.net.addr().is_ipv6()) {
                    self.err_at(
                        &format!("{dkey}[{}].net", j + 1),
                        span(v),
                        format!(
                            "{} is an IPv6 destination, but the profile says ipv6 = false, so its jobs send no IPv6",
                            ds[j].net
                        ),
                        "remove the IPv6 entries, or remove `ipv6 = false`",
                    );
                }
            }
            dests
        });
        let max_node = raw.max_jobs_per_node.as_ref().map(|m| *m.get_ref());
        let limits = [
            ("max_jobs_per_node", raw.max_jobs_per_node.as_ref(), None),
            (
                "max_jobs_per_user",
                raw.max_jobs_per_user.as_ref(),
                max_node,
            ),
        ];
        for (what, limit, per_node) in limits {
            if let Some(limit) = limit {
                self.job_limit(&format!("{key}.{what}"), limit, per_node, &room);
            }
        }
        if self.errors.len() > start {
            return (None, own);
        }
        let profile = Profile {
            name: raw.name.into_inner(),
            allow,
            deny,
            auto,
            partitions,
            qos,
            mode: raw.mode.unwrap_or(ctx.default_mode),
            ipv6,
            destinations: destinations.flatten(),
            max_jobs_per_node: max_node,
            max_jobs_per_user: raw.max_jobs_per_user.map(|m| m.into_inner()),
            pool: 0,
        };
        (Some(profile), own)
    }

    /// Checks one job limit (`key` is `max_jobs_per_node` or `max_jobs_per_user`): 0 grants
    /// nothing; a per-user limit must not exceed `per_node` (`max_jobs_per_node`, when
    /// given); any other limit must fit the blocks of the pool.
    fn job_limit(&mut self, key: &str, limit: &S<u32>, per_node: Option<u32>, room: &PoolRoom) {
        let m = *limit.get_ref();
        if m == 0 {
            self.err_at(
                key,
                span(limit),
                "a limit of 0 jobs grants nothing".into(),
                "remove the profile to grant nothing, or remove the key for no own limit",
            );
        } else if let Some(n) = per_node {
            if n > 0 && m > n {
                self.err_at(
                    key,
                    span(limit),
                    format!("{m} jobs per user can never be reached: max_jobs_per_node is {n}"),
                    &format!("lower it to {n} or less, or remove it"),
                );
            }
        } else if let Some(b) = room.blocks.filter(|&b| m > b) {
            let (pool_key, pool_name) = (&room.key, room.name);
            self.err_at(
                key,
                span(limit),
                format!("{m} jobs at once cannot fit: {pool_name} holds {b} blocks per node ({pool_key}.range / {pool_key}.block_size)"),
                &format!("lower it to {b} or less, or widen {pool_key}.range / lower {pool_key}.block_size"),
            );
        }
    }
}

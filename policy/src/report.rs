//! Words for admins: the summary `extnet policy check` prints and the paragraph
//! `extnet policy explain` prints. Pure functions of the checked policy (and a job identity).

use crate::decide::{decide, Decision, JobIdentity, Request};
use crate::{Mode, Policy, Principals, Profile};
use std::fmt::Write;

/// `users a, b; groups g; accounts x`, or `nobody`.
pub fn principals(p: &Principals) -> String {
    let mut v = Vec::new();
    if p.users.iter().any(|u| u == "*") {
        v.push("everyone".to_owned());
    } else if !p.users.is_empty() {
        v.push(format!("users {}", p.users.join(", ")));
    }
    if !p.groups.is_empty() {
        v.push(format!("groups {}", p.groups.join(", ")));
    }
    if !p.accounts.is_empty() {
        v.push(format!("accounts {}", p.accounts.join(", ")));
    }
    if v.is_empty() {
        "nobody".into()
    } else {
        v.join("; ")
    }
}

/// Where a job of `p` may go, as a clause: `every external destination` or `only ...`.
pub fn destinations(p: &Profile) -> String {
    match &p.destinations {
        None => "every external destination".into(),
        Some(d) => format!(
            "only {}; anything else outside is dropped on the node and counted in dest_{}_drop",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            p.name
        ),
    }
}

/// How many jobs of `p` one node holds at once, and per user, as a clause.
pub fn limits(policy: &Policy, p: &Profile) -> String {
    let pool = policy.pool_of(p);
    let blocks = pool.ports.blocks();
    let mut s = match p.max_jobs_per_node {
        Some(m) => format!("at most {m} job(s) at once per node (max_jobs_per_node)"),
        None if pool.profile.is_some() => {
            format!("up to {blocks} job(s) at once per node (the port pool of its own)")
        }
        None => {
            let sharing = policy.profiles_of_pool(p.pool);
            if sharing.len() > 1 {
                format!(
                    "up to {blocks} job(s) at once per node (the port pool [ports], shared by profiles {})",
                    sharing.join(", ")
                )
            } else {
                format!("up to {blocks} job(s) at once per node (the port pool [ports])")
            }
        }
    };
    if let Some(u) = p.max_jobs_per_user {
        let _ = write!(s, ", {u} per user (max_jobs_per_user)");
    }
    s
}

/// Where a job of `p` gets its ports and which gateway its traffic goes to, as a sentence.
pub fn path_out(policy: &Policy, p: &Profile) -> String {
    let pool = policy.pool_of(p);
    let which = match &pool.profile {
        Some(_) => "the profile's own port pool".to_owned(),
        None => "the default port pool [ports]".to_owned(),
    };
    format!(
        "It gets a block of {} source ports from {which} ({}-{}) and its traffic leaves through gateway {}{}.",
        pool.ports.block_size,
        pool.ports.first,
        pool.ports.last,
        pool.gateway,
        if pool.route_table == policy.node.route_table {
            String::new()
        } else {
            format!(" (routing table {})", pool.route_table)
        }
    )
}

/// One line per pool: ports, blocks, slots, gateway, quarantine, the profiles that use it.
pub fn pools(policy: &Policy) -> String {
    let mut s = String::new();
    for (i, pool) in policy.pools.iter().enumerate() {
        let slots = pool.slots();
        let users = policy.profiles_of_pool(i);
        let _ = writeln!(
            s,
            "  pool {}: ports {}-{} in blocks of {} = {} external jobs at once per node ({}), gateway {} (routing table {}{}), a released block waits {} s; {}",
            pool.name(),
            pool.ports.first,
            pool.ports.last,
            pool.ports.block_size,
            pool.ports.blocks(),
            if slots.len() == 1 {
                format!("slot {}", slots.start)
            } else {
                format!("slots {}-{}", slots.start, slots.end - 1)
            },
            pool.gateway,
            pool.route_table,
            if pool.route_table == policy.node.route_table {
                String::new()
            } else {
                format!(
                    ", its own ip rules at priority {}",
                    policy.node.rule_priority.saturating_sub(1)
                )
            },
            pool.ports.quarantine_secs,
            if users.is_empty() {
                "used by no profile (its slots stay idle)".to_owned()
            } else {
                format!("used by {}", users.join(", "))
            }
        );
    }
    s
}

/// `[gateways]`: the public port range and its slices, each virtual address with its holders,
/// nodes and public addresses (needed vs. given), and each host's share. Empty without it.
pub fn gateways(policy: &Policy) -> String {
    let Some(g) = &policy.gateways else {
        return String::new();
    };
    let mut s = String::new();
    let spa = g.slices_per_address();
    let _ = writeln!(
        s,
        "gateways: public ports {}-{}, {} ports per node = {spa} node(s) per public address; node k of a virtual address uses public address k / {spa} and slice k % {spa} (the pools shifted by slice x {}); the gateway keeps the port",
        g.first_port, g.last_port, g.ports_per_node, g.ports_per_node
    );
    for pool in &policy.pools {
        let _ = writeln!(
            s,
            "  per node: pool {}: {} ports in blocks of {} = {} block(s)",
            pool.name(),
            u32::from(pool.ports.last) - u32::from(pool.ports.first) + 1,
            pool.ports.block_size,
            pool.ports.blocks()
        );
    }
    for (i, v) in g.vips.iter().enumerate() {
        let holders: Vec<String> = v
            .holders
            .iter()
            .map(|(h, p)| format!("{h} ({p})"))
            .collect();
        let _ = writeln!(
            s,
            "  vip {} {} (vrid {}): master {}, holders {}; {} node(s) ({}) need {} public address(es), {} given ({}), room for {} more node(s)",
            v.name,
            v.address,
            v.vrid,
            v.master(),
            holders.join(", "),
            v.nodes.len(),
            v.nodes_written.join(","),
            g.addresses_needed(i),
            v.public.len(),
            v.public
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            v.public.len() * spa as usize - v.nodes.len()
        );
        if let Some(a6) = v.address6 {
            let _ = writeln!(
                s,
                "    IPv6 {a6}: the same {} node(s) and slices need {} public IPv6 address(es), {} given ({}), room for {} more node(s)",
                v.nodes.len(),
                g.addresses_needed(i),
                v.public6.len(),
                v.public6
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                (v.public6.len() * spa as usize).saturating_sub(v.nodes.len())
            );
        }
    }
    for h in &g.hosts {
        let vips = g.vips_of_host(&h.name);
        let master: Vec<&str> = vips
            .iter()
            .filter(|(i, _)| g.vips[*i].master() == h.name)
            .map(|(i, _)| g.vips[*i].name.as_str())
            .collect();
        let backup: Vec<&str> = vips
            .iter()
            .filter(|(i, _)| g.vips[*i].master() != h.name)
            .map(|(i, _)| g.vips[*i].name.as_str())
            .collect();
        let _ = writeln!(
            s,
            "  host {}: cluster {} {}, public {} {}, sync {} {}; master of {}, backup of {}",
            h.name,
            h.cluster_interface,
            h.cluster_address,
            h.public_interface,
            h.public_address,
            h.sync_interface,
            h.sync_address,
            list_or_none(&master),
            list_or_none(&backup)
        );
        if let (Some(c), Some(p)) = (h.cluster_address6, h.public_address6) {
            let _ = writeln!(s, "    IPv6: cluster {c}, public {p}");
        }
    }
    s
}

fn list_or_none(v: &[&str]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The summary of a valid policy: node, pool and per-node capacity, then every profile with
/// who it covers, where it lets jobs go, and its limits.
pub fn summary(policy: &Policy) -> String {
    let n = &policy.node;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "node: interface {}, gateway {} (routing table {}, rule priority {}, fwmark 0x{:x}, checked 0x{:x}, hold table {}), default mode {}",
        n.interface, n.gateway, n.route_table, n.rule_priority, n.fwmark, n.checked_fwmark, n.hold_table, n.mode
    );
    let _ = writeln!(
        s,
        "internal, never through the gateway: {}",
        if n.internal.is_empty() {
            "none".to_owned()
        } else {
            n.internal
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        s,
        "capacity: {} external jobs at once per node (slots), in {} port pool(s); each profile's jobs take blocks of its pool only:",
        policy.slots(),
        policy.pools.len()
    );
    s.push_str(&pools(policy));
    if policy.uses_netns() {
        let links = n.netns_links();
        let _ = writeln!(
            s,
            "netns mode: job links from {} ({links} /30 links, enough for all slots)",
            n.netns_subnet
        );
        if let Some(net6) = n.netns_subnet6 {
            let _ = writeln!(
                s,
                "netns mode: IPv6 job links from {net6} ({} /126 links), for profiles with IPv6",
                n.netns_links6()
            );
        }
        let _ = writeln!(
            s,
            "netns mode: name resolution: {}",
            if n.netns_nameservers.is_empty() {
                "the node's /etc/resolv.conf (systemd-resolved's upstream servers when it names a loopback stub)".to_owned()
            } else {
                format!(
                    "{} (node.netns_nameservers)",
                    n.netns_nameservers
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    s.push_str(&gateways(policy));
    if policy.profiles.is_empty() {
        let _ = writeln!(s, "profiles: none, so nothing is granted");
        return s;
    }
    let _ = writeln!(
        s,
        "profiles ({}; --external-net without a name gets the first that grants the job):",
        policy.profiles.len()
    );
    for (i, p) in policy.profiles.iter().enumerate() {
        let _ = writeln!(s, "  {}. {:?}, {} mode", i + 1, p.name, p.mode);
        let _ = writeln!(s, "     who: {}", principals(&p.allow));
        if !p.deny.is_empty() {
            let _ = writeln!(s, "     denied (wins): {}", principals(&p.deny));
        }
        if p.auto.is_empty() {
            let _ = writeln!(s, "     only for jobs that ask for it");
        } else {
            let _ = writeln!(
                s,
                "     granted without asking to: {}; others must ask",
                principals(&p.auto)
            );
        }
        if !p.partitions.is_empty() {
            let _ = writeln!(s, "     only in partitions: {}", p.partitions.join(", "));
        }
        if !p.qos.is_empty() {
            let _ = writeln!(s, "     only for QOS: {}", p.qos.join(", "));
        }
        let _ = writeln!(s, "     where: {}", destinations(p));
        for ns in unreachable_nameservers(policy, p) {
            let _ = writeln!(
                s,
                "     WARNING: its allowlist does not let DNS (udp port 53) reach nameserver {ns} (node.netns_nameservers): its netns jobs cannot resolve names; add {{ net = \"{ns}\", proto = \"any\", ports = 53 }} to its destinations"
            );
        }
        let pool = policy.pool_of(p);
        let _ = writeln!(
            s,
            "     pool: {} (blocks of {} ports), gateway {}",
            pool.name(),
            pool.ports.block_size,
            pool.gateway
        );
        let _ = writeln!(s, "     limits: {}", limits(policy, p));
    }
    s
}

/// The nameservers of `node.netns_nameservers` that a netns profile's allowlist keeps its
/// jobs from (UDP port 53; internal ones are always reachable).
pub fn unreachable_nameservers(policy: &Policy, p: &Profile) -> Vec<std::net::Ipv4Addr> {
    let Some(dests) = &p.destinations else {
        return Vec::new();
    };
    if p.mode != crate::Mode::Netns {
        return Vec::new();
    }
    policy
        .node
        .netns_nameservers
        .iter()
        .copied()
        .filter(|ns| !policy.node.internal.iter().any(|n| n.contains(ns)))
        .filter(|&ns| !dests.iter().any(|d| d.allows_udp(ns, 53)))
        .collect()
}

/// The decision for a job of `id` with `request`, and the rule that made it, as one
/// paragraph.
pub fn explain(policy: &Policy, id: &JobIdentity, request: &Request) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    let who = format!(
        "A job of user {} (groups: {}; account: {}; partition: {}; QOS: {})",
        id.user,
        match id.groups() {
            Ok([]) => "none found".into(),
            Ok(g) => g.join(", "),
            Err(why) => format!("cannot be looked up: {why}"),
        },
        or_none(&id.account),
        or_none(&id.partition),
        or_none(&id.qos),
    );
    let asked = match request {
        Request::None => "that does not ask".to_owned(),
        Request::Any => "asking with --external-net".to_owned(),
        Request::Profile(p) => format!("asking with --external-net={p}"),
    };
    let internal = if policy.node.internal.is_empty() {
        String::new()
    } else {
        format!(
            " Cluster-internal networks ({}) stay on the normal path whatever the profile.",
            policy
                .node
                .internal
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    match decide(policy, id, request) {
        Decision::Granted {
            profile,
            auto,
            rule,
        } => {
            let p = policy
                .profile(&profile)
                .expect("decide grants only profiles of the policy");
            let mode = match p.mode {
                Mode::Cgroup => "cgroup mode: it stays in the node's network namespace",
                Mode::Netns => "netns mode: it gets a network namespace of its own",
            };
            format!(
                "{who} {asked} is GRANTED profile {profile:?}{} ({mode}), by the rule: {rule}. It may reach {}. {} The profile allows {}; beyond that a job is denied, never a running one evicted.{internal}",
                if auto { " without asking" } else { "" },
                destinations(p),
                path_out(policy, p),
                limits(policy, p),
            )
        }
        Decision::Denied { reason } => format!(
            "{who} {asked} is DENIED: {reason}. Its tasks do not start and print this reason.{internal}"
        ),
        Decision::NotRequested => {
            let auto: Vec<String> = policy
                .profiles
                .iter()
                .filter(|p| !p.auto.is_empty())
                .map(|p| format!("{:?} ({})", p.name, principals(&p.auto)))
                .collect();
            let refused = crate::decide::auto_refusals(policy, id);
            format!(
                "{who} {asked} gets NO external access: no profile grants it without asking{}{}. It runs as usual, inside the cluster.",
                if auto.is_empty() {
                    " (no profile has auto principals)".to_owned()
                } else {
                    format!(" (auto principals: {})", auto.join("; "))
                },
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("; auto would apply, but {}", refused.join("; "))
                }
            )
        }
    }
}

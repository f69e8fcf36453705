//! The node's figures for Prometheus, in the text format node_exporter's textfile collector
//! reads (`extnet node metrics`, and the node agent after each repair and each periodic
//! check): active external jobs and traffic by profile, port blocks by pool, allowlist drops,
//! denials by reason, the agent's repairs, conntrack's fill.
//!
//! Three parts: [`Snapshot`] is what is measured and [`Snapshot::render`] turns it into the
//! text (pure, sorted: the same snapshot is the same bytes); [`snapshot`] computes one from
//! what extnet already keeps (the policy, the lease table, the nft counters' values), and
//! [`collect`] reads those from the node (paths from the layout, `/proc` from a root passed
//! in); [`write`] replaces the file atomically.
//!
//! Denials come twice: the prolog's lasting counters by reason ([`crate::store::denials`],
//! `extnet_denials_total`) and the jobs on the node whose state file says denied until their
//! epilog ([`Snapshot::denied_jobs`]).

use crate::node::counters::all_counters;
use crate::plan::layout::Layout;
use crate::plan::ruleset::allowlist::{profile_of_counter, UNBOUND_COUNTER};
use crate::plan::ruleset::counters::counter_name;
use crate::store::accounting::Counters;
use crate::store::denials::{self, DenialReason};
use crate::store::fs::{write_atomic, FsError};
use crate::store::lease::{LeaseError, LeaseTable};
use crate::store::state::{JobState, Outcome};
use extnet_policy::Policy;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

/// Where node_exporter's textfile collector looks on Debian (`prometheus-node-exporter`).
pub const DEFAULT_PATH: &str = "/var/lib/prometheus/node-exporter/extnet.prom";

/// The agent's repair triggers as label values, in the order they are listed.
pub const TRIGGERS: [&str; 5] = ["start", "events", "overrun", "reconcile", "retry"];

/// Packets and bytes a counter holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    pub packets: u64,
    pub bytes: u64,
}

/// One port pool's blocks on the node now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolBlocks {
    pub total: u64,
    /// Leased to a running job.
    pub used: u64,
    /// Released, waiting out the quarantine.
    pub quarantined: u64,
}

impl PoolBlocks {
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.used + self.quarantined)
    }
}

/// One profile's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileFigures {
    pub active_jobs: u64,
    /// The active jobs' slot counters summed (`None`: the counters could not be read).
    pub traffic: Option<Counters>,
    /// The profile's allowlist drop counter (`None`: no allowlist, or not readable).
    pub allowlist_drops: Option<Drops>,
}

/// conntrack's table on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    pub entries: u64,
    pub max: u64,
}

/// What the metrics file says, measured at one time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// By profile name: every profile of the policy, and any profile a lease still names.
    pub profiles: BTreeMap<String, ProfileFigures>,
    /// By pool name ([`extnet_policy::Pool::name`]).
    pub pools: BTreeMap<String, PoolBlocks>,
    /// Whether the nft counters could be read (`false`: no table loaded, or not root).
    pub counters_readable: bool,
    /// Marked packets with no allowlist binding (fail closed).
    pub unbound_drops: Option<Drops>,
    /// Jobs on the node whose prolog denied external access (state file until the epilog).
    pub denied_jobs: u64,
    /// The prolog's denials on the node by reason, since its state directory was made; empty
    /// when not read (every reason is there once read, 0 or more).
    pub denials: BTreeMap<DenialReason, u64>,
    /// Repairs the agent made since it started, by trigger ([`TRIGGERS`]); `None` when not
    /// written by the agent.
    pub repairs: Option<BTreeMap<&'static str, u64>>,
    pub conntrack: Option<Conntrack>,
    /// Unix time of the snapshot.
    pub time: u64,
}

/// Escapes a label value: backslash, double quote and line feed, as the format says.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// One metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

impl Snapshot {
    /// The text node_exporter's textfile collector reads. Families in a fixed order, samples
    /// sorted by their labels; a family with nothing to say is left out.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut f = Family::new(
            &mut s,
            "extnet_active_jobs",
            "gauge",
            "External jobs holding a lease on the node, by profile.",
        );
        for (p, v) in &self.profiles {
            f.sample(&[("profile", p)], v.active_jobs);
        }
        let mut f = Family::new(
            &mut s,
            "extnet_pool_blocks",
            "gauge",
            "Port blocks of each pool on the node: used by a running job, in quarantine after a release, or free.",
        );
        for (p, b) in &self.pools {
            f.sample(&[("pool", p), ("state", "free")], b.free())
                .sample(&[("pool", p), ("state", "quarantine")], b.quarantined)
                .sample(&[("pool", p), ("state", "used")], b.used);
        }
        let traffic: Vec<(&String, &Counters)> = self
            .profiles
            .iter()
            .filter_map(|(p, v)| v.traffic.as_ref().map(|t| (p, t)))
            .collect();
        if !traffic.is_empty() {
            type InOut = fn(&Counters) -> (u64, u64);
            let families: [(&'static str, &str, InOut); 4] = [
                (
                    "extnet_active_traffic_bytes",
                    "Bytes the running external jobs sent (out) and received (in) so far, summed by profile; a job's share goes when it ends (its total is in the accounting log).",
                    |t| (t.bytes_in, t.bytes_out),
                ),
                (
                    "extnet_active_traffic_packets",
                    "Packets the running external jobs sent (out) and received (in) so far, summed by profile.",
                    |t| (t.packets_in, t.packets_out),
                ),
                // the IPv6 part of the two above (which count both families)
                (
                    "extnet_active_ipv6_traffic_bytes",
                    "The IPv6 part of extnet_active_traffic_bytes.",
                    |t| (t.bytes_in6, t.bytes_out6),
                ),
                (
                    "extnet_active_ipv6_traffic_packets",
                    "The IPv6 part of extnet_active_traffic_packets.",
                    |t| (t.packets_in6, t.packets_out6),
                ),
            ];
            for (name, help, in_out) in families {
                let mut f = Family::new(&mut s, name, "gauge", help);
                for (p, t) in &traffic {
                    let (i, o) = in_out(t);
                    f.sample(&[("direction", "in"), ("profile", p)], i)
                        .sample(&[("direction", "out"), ("profile", p)], o);
                }
            }
            let mut f = Family::new(
                &mut s,
                "extnet_active_connections",
                "gauge",
                "Connections to the outside the running external jobs opened so far, summed by profile.",
            );
            for (p, t) in &traffic {
                f.sample(&[("profile", p)], t.connections);
            }
            let mut f = Family::new(
                &mut s,
                "extnet_active_ipv6_connections",
                "gauge",
                "The IPv6 part of extnet_active_connections.",
            );
            for (p, t) in &traffic {
                f.sample(&[("profile", p)], t.connections6);
            }
        }
        let drops: Vec<(&String, Drops)> = self
            .profiles
            .iter()
            .filter_map(|(p, v)| v.allowlist_drops.map(|d| (p, d)))
            .collect();
        if !drops.is_empty() {
            let mut f = Family::new(
                &mut s,
                "extnet_allowlist_dropped_packets_total",
                "counter",
                "Packets the profile's destination allowlist dropped since the node's table was loaded.",
            );
            for (p, d) in &drops {
                f.sample(&[("profile", p)], d.packets);
            }
            let mut f = Family::new(
                &mut s,
                "extnet_allowlist_dropped_bytes_total",
                "counter",
                "Bytes the profile's destination allowlist dropped since the node's table was loaded.",
            );
            for (p, d) in &drops {
                f.sample(&[("profile", p)], d.bytes);
            }
        }
        if let Some(d) = self.unbound_drops {
            Family::new(
                &mut s,
                "extnet_unbound_dropped_packets_total",
                "counter",
                "Marked packets of a slot bound to no allowlist, dropped (fail closed).",
            )
            .sample(&[], d.packets);
        }
        Family::new(
            &mut s,
            "extnet_nft_counters_readable",
            "gauge",
            "1 when the node's nft counters could be read (traffic and drops above), 0 when not (no table loaded, or not root).",
        )
        .sample(&[], u64::from(self.counters_readable));
        Family::new(
            &mut s,
            "extnet_denied_jobs",
            "gauge",
            "Jobs on the node that asked for external access and were denied (until their epilog).",
        )
        .sample(&[], self.denied_jobs);
        if !self.denials.is_empty() {
            let mut f = Family::new(
                &mut s,
                "extnet_denials_total",
                "counter",
                "Jobs the prolog denied external access on the node, by reason: policy (no rule grants it), limit (a profile's limit reached), pool_full (no free port block), setup_failed (a fault of the node).",
            );
            for (r, n) in &self.denials {
                f.sample(&[("reason", r.as_str())], *n);
            }
        }
        if let Some(r) = &self.repairs {
            let mut f = Family::new(
                &mut s,
                "extnet_agent_repairs_total",
                "counter",
                "Repairs of the node's base the node agent made since it started, by what triggered the check.",
            );
            for (t, n) in r {
                f.sample(&[("trigger", t)], *n);
            }
        }
        host_families(&mut s, self.conntrack, self.time);
        s
    }
}

/// What a node and a gateway both say: conntrack's fill (when known) and the time.
fn host_families(s: &mut String, conntrack: Option<Conntrack>, time: u64) {
    if let Some(c) = conntrack {
        Family::new(
            s,
            "extnet_conntrack_entries",
            "gauge",
            "Entries in the host's conntrack table (nf_conntrack_count).",
        )
        .sample(&[], c.entries);
        Family::new(
            s,
            "extnet_conntrack_entries_max",
            "gauge",
            "Size of the host's conntrack table (nf_conntrack_max).",
        )
        .sample(&[], c.max);
    }
    Family::new(
        s,
        "extnet_metrics_last_write_timestamp_seconds",
        "gauge",
        "Unix time these figures were taken.",
    )
    .sample(&[], time);
}

/// The states keepalived's instances can be in, as its notify script names them.
pub const VRRP_STATES: [&str; 4] = ["MASTER", "BACKUP", "FAULT", "STOP"];

/// What a NAT gateway measures besides conntrack's fill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayFigures {
    /// Each VRRP instance's last state (one of [`VRRP_STATES`]), by instance name.
    pub vrrp: BTreeMap<String, &'static str>,
    /// Translated connections by the public address they leave as; `None` when the conntrack
    /// table could not be dumped.
    pub translated: Option<BTreeMap<IpAddr, u64>>,
}

/// The VRRP states the notify script wrote into `dir` (`<state dir>/vrrp`), one file per
/// instance holding its state; temp files (dot files) and words that are no state are left
/// out.
pub fn vrrp_states(dir: &Path) -> BTreeMap<String, &'static str> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with('.') {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            let state = VRRP_STATES.into_iter().find(|s| *s == text.trim())?;
            Some((name, state))
        })
        .collect()
}

/// A NAT gateway's metrics (`extnet gateway metrics`): each VRRP instance's state and the
/// translated connections by public address (`figures`), conntrack's fill under `root` (a
/// full table drops new connections) and the time `now`.
pub fn render_gateway(root: &Path, figures: &GatewayFigures, now: u64) -> String {
    let mut s = String::with_capacity(1024);
    if !figures.vrrp.is_empty() {
        let mut f = Family::new(
            &mut s,
            "extnet_gateway_vrrp_master",
            "gauge",
            "1 when this gateway is master of the VRRP instance (holds its virtual addresses), else 0.",
        );
        for (i, st) in &figures.vrrp {
            f.sample(&[("instance", i)], u64::from(*st == "MASTER"));
        }
        let mut f = Family::new(
            &mut s,
            "extnet_gateway_vrrp_state",
            "gauge",
            "The VRRP instance's state as keepalived last notified it: 1 for the state it is in, 0 for the others.",
        );
        for (i, st) in &figures.vrrp {
            for v in VRRP_STATES {
                f.sample(&[("instance", i), ("state", v)], u64::from(*st == v));
            }
        }
    }
    if let Some(t) = &figures.translated {
        let mut f = Family::new(
            &mut s,
            "extnet_gateway_translated_connections",
            "gauge",
            "Conntrack entries whose source this gateway translated, by the public address they leave as.",
        );
        for (a, n) in t {
            f.sample(&[("public", &a.to_string())], *n);
        }
    }
    Family::new(
        &mut s,
        "extnet_gateway_conntrack_dump_ok",
        "gauge",
        "1 when the conntrack table could be dumped (translated connections above), 0 when not (not CAP_NET_ADMIN).",
    )
    .sample(&[], u64::from(figures.translated.is_some()));
    host_families(&mut s, conntrack(root), now);
    s
}

/// Each pool's blocks (in the policy's order) used by the table's leases and in quarantine
/// at `now`.
pub fn pool_blocks(policy: &Policy, table: &LeaseTable, now: u64) -> Vec<PoolBlocks> {
    policy
        .pools
        .iter()
        .map(|pool| PoolBlocks {
            total: u64::from(pool.ports.blocks()),
            used: table
                .leases
                .iter()
                .filter(|l| pool.slots().contains(&l.slot))
                .count() as u64,
            quarantined: table
                .quarantine
                .iter()
                .filter(|q| q.until > now && pool.ports.contains(q.port_first))
                .count() as u64,
        })
        .collect()
}

/// The snapshot of `table` under `policy` at `now`, from the nft table's named counters
/// (`None`: not readable). Pure.
pub fn snapshot(
    policy: &Policy,
    table: &LeaseTable,
    counters: Option<&HashMap<String, (u64, u64)>>,
    now: u64,
) -> Snapshot {
    let mut profiles: BTreeMap<String, ProfileFigures> = policy
        .profiles
        .iter()
        .map(|p| (p.name.clone(), ProfileFigures::default()))
        .collect();
    let get = |name: &str| counters.and_then(|c| c.get(name).copied());
    for l in &table.leases {
        let f = profiles.entry(l.profile.to_string()).or_default();
        f.active_jobs += 1;
        if let (Some((packets_out, bytes_out)), Some((packets_in, bytes_in))) = (
            get(&counter_name(l.slot, "out")),
            get(&counter_name(l.slot, "in")),
        ) {
            *f.traffic.get_or_insert_with(Counters::default) += Counters {
                bytes_out,
                packets_out,
                bytes_in,
                packets_in,
                connections: get(&counter_name(l.slot, "conn")).map_or(0, |c| c.0),
                // the IPv6 parts (absent from a table of an earlier version: zero)
                bytes_out6: get(&counter_name(l.slot, "out6")).map_or(0, |c| c.1),
                packets_out6: get(&counter_name(l.slot, "out6")).map_or(0, |c| c.0),
                bytes_in6: get(&counter_name(l.slot, "in6")).map_or(0, |c| c.1),
                packets_in6: get(&counter_name(l.slot, "in6")).map_or(0, |c| c.0),
                connections6: get(&counter_name(l.slot, "conn6")).map_or(0, |c| c.0),
            };
        }
    }
    let mut unbound_drops = None;
    if let Some(c) = counters {
        // every profile's traffic is said, zero without jobs, once the counters read
        for f in profiles.values_mut() {
            f.traffic.get_or_insert_with(Counters::default);
        }
        for (name, &(packets, bytes)) in c {
            let d = Drops { packets, bytes };
            if name == UNBOUND_COUNTER {
                unbound_drops = Some(d);
            } else if let Some(f) = profile_of_counter(name).and_then(|p| profiles.get_mut(p)) {
                f.allowlist_drops = Some(d);
            }
        }
    }
    let pools = policy
        .pools
        .iter()
        .zip(pool_blocks(policy, table, now))
        .map(|(p, b)| (p.name().to_owned(), b))
        .collect();
    Snapshot {
        profiles,
        pools,
        counters_readable: counters.is_some(),
        unbound_drops,
        denied_jobs: 0,
        denials: BTreeMap::new(),
        repairs: None,
        conntrack: None,
        time: now,
    }
}

/// conntrack's fill from `<root>/proc/sys/net/netfilter/nf_conntrack_{count,max}` (`root`:
/// `/` on a host, a directory in the tests); `None` when conntrack is not loaded.
pub fn conntrack(root: &Path) -> Option<Conntrack> {
    let dir = root.join("proc/sys/net/netfilter");
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(Conntrack {
        entries: read("nf_conntrack_count")?,
        max: read("nf_conntrack_max")?,
    })
}

/// Jobs in `jobs_dir` whose state file says denied. Files that do not read are not counted
/// (the plugin and the epilog say what is wrong with them).
pub fn denied_jobs(jobs_dir: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(jobs_dir) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let job: u32 = name.to_str()?.strip_suffix(".json")?.parse().ok()?;
            JobState::load(&e.path(), job).ok().flatten()
        })
        .filter(|s| matches!(s.outcome, Outcome::Denied { .. }))
        .count() as u64
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The node's snapshot now: the lease table and job states of `layout`, the nft table's
/// counters (one netlink dump; unreadable ones say so in the file), conntrack under
/// `proc_root`, and the agent's `repairs` when it writes.
pub fn collect(
    policy: &Policy,
    layout: &Layout,
    proc_root: &Path,
    repairs: Option<&BTreeMap<&'static str, u64>>,
) -> Result<Snapshot, MetricsError> {
    let table = LeaseTable::load(&layout.lease_table(), &layout.node)?;
    let counters = match all_counters() {
        Ok(c) if !c.is_empty() => Some(c),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "metrics without the nft counters");
            None
        }
    };
    let mut s = snapshot(
        policy,
        &table,
        counters.as_ref(),
        crate::store::lease::now(),
    );
    s.denied_jobs = denied_jobs(&layout.jobs_dir);
    s.denials = denials::load(&layout.denials());
    s.repairs = repairs.cloned();
    s.conntrack = conntrack(proc_root);
    Ok(s)
}

/// Replaces `path` with `text`: a temp file in the same directory, fsync, rename, mode 0644
/// (node_exporter runs as its own user).
pub fn write(path: &Path, text: &str) -> Result<(), FsError> {
    write_atomic(path, text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{node_policy, ALLOWLIST_PROFILES};
    use crate::store::lease::{Lease, Quarantined};
    use extnet_policy::Mode;

    fn lease(job: u32, slot: u32, profile: &str) -> Lease {
        Lease {
            job_id: job,
            user: "a".into(),
            uid: 1,
            slot,
            port_first: 20000 + 256 * slot as u16,
            port_last: 20255 + 256 * slot as u16,
            mark: 0x30000 | slot,
            mode: Mode::Cgroup,
            profile: profile.into(),
            node_addr: "10.99.0.11".parse().unwrap(),
            node_addr6: None,
            since: 100,
            last_logged: None,
        }
    }

    fn table() -> LeaseTable {
        let mut t = LeaseTable::empty("n1");
        t.leases = vec![lease(7, 0, "open"), lease(8, 2, "web-only")];
        t.quarantine = vec![
            Quarantined {
                slot: 1,
                port_first: 20256,
                port_last: 20511,
                until: 2000,
                job_id: 5,
                uid: Some(1),
            },
            // over: free again
            Quarantined {
                slot: 1,
                port_first: 20256,
                port_last: 20511,
                until: 900,
                job_id: 4,
                uid: Some(1),
            },
        ];
        t
    }

    fn counters() -> HashMap<String, (u64, u64)> {
        [
            ("slot0_out", (10, 1000)),
            ("slot0_in", (20, 30000)),
            ("slot0_conn", (3, 0)),
            ("slot0_out6", (4, 400)),
            ("slot0_in6", (6, 9000)),
            ("slot0_conn6", (1, 0)),
            ("slot1_out", (99, 99)),
            ("slot2_out", (1, 60)),
            ("slot2_in", (2, 120)),
            ("slot2_conn", (1, 0)),
            ("dest_web-only_drop", (4, 240)),
            ("unbound_drop", (0, 0)),
            ("proto_drop", (5, 5)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect()
    }

    #[test]
    fn a_node_with_two_jobs_renders_line_for_line() {
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        let mut s = snapshot(&p, &table(), Some(&counters()), 1000);
        s.denied_jobs = 1;
        s.denials = DenialReason::ALL.into_iter().map(|r| (r, 0)).collect();
        s.denials.insert(DenialReason::PoolFull, 3);
        s.repairs = Some(TRIGGERS.iter().map(|t| (*t, 0)).collect());
        s.repairs.as_mut().unwrap().insert("events", 2);
        s.conntrack = Some(Conntrack {
            entries: 12,
            max: 262144,
        });
        let want = r#"# HELP extnet_active_jobs External jobs holding a lease on the node, by profile.
# TYPE extnet_active_jobs gauge
extnet_active_jobs{profile="open"} 1
extnet_active_jobs{profile="web-only"} 1
# HELP extnet_pool_blocks Port blocks of each pool on the node: used by a running job, in quarantine after a release, or free.
# TYPE extnet_pool_blocks gauge
extnet_pool_blocks{pool="[ports]",state="free"} 0
extnet_pool_blocks{pool="[ports]",state="quarantine"} 1
extnet_pool_blocks{pool="[ports]",state="used"} 2
# HELP extnet_active_traffic_bytes Bytes the running external jobs sent (out) and received (in) so far, summed by profile; a job's share goes when it ends (its total is in the accounting log).
# TYPE extnet_active_traffic_bytes gauge
extnet_active_traffic_bytes{direction="in",profile="open"} 30000
extnet_active_traffic_bytes{direction="out",profile="open"} 1000
extnet_active_traffic_bytes{direction="in",profile="web-only"} 120
extnet_active_traffic_bytes{direction="out",profile="web-only"} 60
# HELP extnet_active_traffic_packets Packets the running external jobs sent (out) and received (in) so far, summed by profile.
# TYPE extnet_active_traffic_packets gauge
extnet_active_traffic_packets{direction="in",profile="open"} 20
extnet_active_traffic_packets{direction="out",profile="open"} 10
extnet_active_traffic_packets{direction="in",profile="web-only"} 2
extnet_active_traffic_packets{direction="out",profile="web-only"} 1
# HELP extnet_active_ipv6_traffic_bytes The IPv6 part of extnet_active_traffic_bytes.
# TYPE extnet_active_ipv6_traffic_bytes gauge
extnet_active_ipv6_traffic_bytes{direction="in",profile="open"} 9000
extnet_active_ipv6_traffic_bytes{direction="out",profile="open"} 400
extnet_active_ipv6_traffic_bytes{direction="in",profile="web-only"} 0
extnet_active_ipv6_traffic_bytes{direction="out",profile="web-only"} 0
# HELP extnet_active_ipv6_traffic_packets The IPv6 part of extnet_active_traffic_packets.
# TYPE extnet_active_ipv6_traffic_packets gauge
extnet_active_ipv6_traffic_packets{direction="in",profile="open"} 6
extnet_active_ipv6_traffic_packets{direction="out",profile="open"} 4
extnet_active_ipv6_traffic_packets{direction="in",profile="web-only"} 0
extnet_active_ipv6_traffic_packets{direction="out",profile="web-only"} 0
# HELP extnet_active_connections Connections to the outside the running external jobs opened so far, summed by profile.
# TYPE extnet_active_connections gauge
extnet_active_connections{profile="open"} 3
extnet_active_connections{profile="web-only"} 1
# HELP extnet_active_ipv6_connections The IPv6 part of extnet_active_connections.
# TYPE extnet_active_ipv6_connections gauge
extnet_active_ipv6_connections{profile="open"} 1
extnet_active_ipv6_connections{profile="web-only"} 0
# HELP extnet_allowlist_dropped_packets_total Packets the profile's destination allowlist dropped since the node's table was loaded.
# TYPE extnet_allowlist_dropped_packets_total counter
extnet_allowlist_dropped_packets_total{profile="web-only"} 4
# HELP extnet_allowlist_dropped_bytes_total Bytes the profile's destination allowlist dropped since the node's table was loaded.
# TYPE extnet_allowlist_dropped_bytes_total counter
extnet_allowlist_dropped_bytes_total{profile="web-only"} 240
# HELP extnet_unbound_dropped_packets_total Marked packets of a slot bound to no allowlist, dropped (fail closed).
# TYPE extnet_unbound_dropped_packets_total counter
extnet_unbound_dropped_packets_total 0
# HELP extnet_nft_counters_readable 1 when the node's nft counters could be read (traffic and drops above), 0 when not (no table loaded, or not root).
# TYPE extnet_nft_counters_readable gauge
extnet_nft_counters_readable 1
# HELP extnet_denied_jobs Jobs on the node that asked for external access and were denied (until their epilog).
# TYPE extnet_denied_jobs gauge
extnet_denied_jobs 1
# HELP extnet_denials_total Jobs the prolog denied external access on the node, by reason: policy (no rule grants it), limit (a profile's limit reached), pool_full (no free port block), setup_failed (a fault of the node).
# TYPE extnet_denials_total counter
extnet_denials_total{reason="policy"} 0
extnet_denials_total{reason="limit"} 0
extnet_denials_total{reason="pool_full"} 3
extnet_denials_total{reason="setup_failed"} 0
# HELP extnet_agent_repairs_total Repairs of the node's base the node agent made since it started, by what triggered the check.
# TYPE extnet_agent_repairs_total counter
extnet_agent_repairs_total{trigger="events"} 2
extnet_agent_repairs_total{trigger="overrun"} 0
extnet_agent_repairs_total{trigger="reconcile"} 0
extnet_agent_repairs_total{trigger="retry"} 0
extnet_agent_repairs_total{trigger="start"} 0
# HELP extnet_conntrack_entries Entries in the host's conntrack table (nf_conntrack_count).
# TYPE extnet_conntrack_entries gauge
extnet_conntrack_entries 12
# HELP extnet_conntrack_entries_max Size of the host's conntrack table (nf_conntrack_max).
# TYPE extnet_conntrack_entries_max gauge
extnet_conntrack_entries_max 262144
# HELP extnet_metrics_last_write_timestamp_seconds Unix time these figures were taken.
# TYPE extnet_metrics_last_write_timestamp_seconds gauge
extnet_metrics_last_write_timestamp_seconds 1000
"#;
        let got = s.render();
        for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "line {}", i + 1);
        }
        assert_eq!(got, want);
        // the same snapshot is the same bytes, whatever order the counters came in
        let again = snapshot(&p, &table(), Some(&counters()), 1000);
        assert_eq!(
            again.render(),
            snapshot(&p, &table(), Some(&counters()), 1000).render()
        );
    }

    #[test]
    fn without_counters_the_file_says_so_and_keeps_the_leases() {
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        let got = snapshot(&p, &table(), None, 1000).render();
        assert!(got.contains("extnet_nft_counters_readable 0\n"), "{got}");
        assert!(got.contains("extnet_active_jobs{profile=\"open\"} 1\n"));
        for absent in [
            "extnet_active_traffic_bytes",
            "extnet_allowlist_dropped",
            "extnet_agent_repairs_total",
            "extnet_conntrack_entries",
        ] {
            assert!(!got.contains(absent), "{absent} in\n{got}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut t = LeaseTable::empty("n1");
        // a lease of a profile the policy no longer has (removed while the job ran)
        t.leases = vec![lease(9, 1, "odd\"name\\\n")];
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        let got = snapshot(&p, &t, None, 5).render();
        assert!(
            got.contains("extnet_active_jobs{profile=\"odd\\\"name\\\\\\n\"} 1\n"),
            "{got}"
        );
        assert!(got.contains("extnet_active_jobs{profile=\"open\"} 0\n"));
    }

    #[test]
    fn conntrack_and_denied_jobs_are_read_from_the_paths_given() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(conntrack(root.path()), None);
        let nf = root.path().join("proc/sys/net/netfilter");
        std::fs::create_dir_all(&nf).unwrap();
        std::fs::write(nf.join("nf_conntrack_count"), "37\n").unwrap();
        assert_eq!(conntrack(root.path()), None, "max missing");
        std::fs::write(nf.join("nf_conntrack_max"), "65536\n").unwrap();
        assert_eq!(
            conntrack(root.path()),
            Some(Conntrack {
                entries: 37,
                max: 65536
            })
        );

        let jobs = root.path().join("jobs");
        assert_eq!(denied_jobs(&jobs), 0);
        std::fs::create_dir_all(&jobs).unwrap();
        let state = |job: u32, outcome: Outcome| JobState {
            version: crate::store::state::STATE_VERSION,
            job_id: job,
            node: "n1".into(),
            user: "a".into(),
            uid: 1,
            created: 1,
            outcome,
        };
        let denied = || Outcome::Denied {
            reason: "no".into(),
        };
        state(1, denied()).store(&jobs.join("1.json")).unwrap();
        state(2, denied()).store(&jobs.join("2.json")).unwrap();
        std::fs::write(jobs.join("3.json"), "{ torn").unwrap();
        std::fs::write(jobs.join("4.lease"), "").unwrap();
        assert_eq!(denied_jobs(&jobs), 2);
    }

    #[test]
    fn a_gateway_says_conntrack_and_time() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            render_gateway(root.path(), &GatewayFigures::default(), 7),
            "# HELP extnet_gateway_conntrack_dump_ok 1 when the conntrack table could be dumped (translated connections above), 0 when not (not CAP_NET_ADMIN).\n\
             # TYPE extnet_gateway_conntrack_dump_ok gauge\n\
             extnet_gateway_conntrack_dump_ok 0\n\
             # HELP extnet_metrics_last_write_timestamp_seconds Unix time these figures were taken.\n\
             # TYPE extnet_metrics_last_write_timestamp_seconds gauge\n\
             extnet_metrics_last_write_timestamp_seconds 7\n"
        );
        let nf = root.path().join("proc/sys/net/netfilter");
        std::fs::create_dir_all(&nf).unwrap();
        std::fs::write(nf.join("nf_conntrack_count"), "3\n").unwrap();
        std::fs::write(nf.join("nf_conntrack_max"), "8\n").unwrap();
        let text = render_gateway(root.path(), &GatewayFigures::default(), 7);
        assert!(
            text.contains("\n# HELP extnet_conntrack_entries Entries"),
            "{text}"
        );
        assert!(text.contains("\nextnet_conntrack_entries 3\n"), "{text}");
        assert!(
            text.contains("\nextnet_conntrack_entries_max 8\n"),
            "{text}"
        );
    }

    #[test]
    fn a_gateway_says_its_vrrp_states_and_translations() {
        let root = tempfile::tempdir().unwrap();
        let vrrp = root.path().join("vrrp");
        assert!(vrrp_states(&vrrp).is_empty(), "no directory: no instance");
        std::fs::create_dir_all(&vrrp).unwrap();
        std::fs::write(vrrp.join("main"), "MASTER\n").unwrap();
        std::fs::write(vrrp.join("bulk"), "BACKUP\n").unwrap();
        std::fs::write(vrrp.join(".main.tmp"), "FAULT\n").unwrap();
        std::fs::write(vrrp.join("odd"), "MAYBE\n").unwrap();
        let states = vrrp_states(&vrrp);
        assert_eq!(
            states.into_iter().collect::<Vec<_>>(),
            [("bulk".to_owned(), "BACKUP"), ("main".to_owned(), "MASTER")]
        );
        let figures = GatewayFigures {
            vrrp: vrrp_states(&vrrp),
            translated: Some(BTreeMap::from([
                (std::net::Ipv4Addr::new(203, 0, 113, 101).into(), 12),
                (std::net::Ipv4Addr::new(203, 0, 113, 102).into(), 0),
                ("2001:db8::101".parse().unwrap(), 3),
            ])),
        };
        let text = render_gateway(root.path(), &figures, 7);
        for line in [
            "extnet_gateway_vrrp_master{instance=\"bulk\"} 0\n",
            "extnet_gateway_vrrp_master{instance=\"main\"} 1\n",
            "extnet_gateway_vrrp_state{instance=\"bulk\",state=\"BACKUP\"} 1\n",
            "extnet_gateway_vrrp_state{instance=\"bulk\",state=\"MASTER\"} 0\n",
            "extnet_gateway_vrrp_state{instance=\"main\",state=\"MASTER\"} 1\n",
            "extnet_gateway_vrrp_state{instance=\"main\",state=\"FAULT\"} 0\n",
            "extnet_gateway_translated_connections{public=\"203.0.113.101\"} 12\n",
            "extnet_gateway_translated_connections{public=\"203.0.113.102\"} 0\n",
            "extnet_gateway_translated_connections{public=\"2001:db8::101\"} 3\n",
            "extnet_gateway_conntrack_dump_ok 1\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("odd"), "{text}");
    }

    #[test]
    fn the_file_is_replaced_whole_with_mode_0644() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extnet.prom");
        write(&path, "a 1\n").unwrap();
        write(&path, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left");
    }
}

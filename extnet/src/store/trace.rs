//! `extnet trace`: from a public address and port (and a time) to the node, job, user and
//! profile that used it, and from a job to the public addresses and ports it used.
//!
//! The record is the policy's deterministic mapping (`[gateways]`: public address and port →
//! node and its own port, the same number) plus the nodes' lease logs (which job held which
//! block of the node's ports, when). Nothing per connection is needed. An IPv6 public
//! address (`public6`) is traced by the same arithmetic: its node slice and ports are those
//! of its IPv4 twin, and the lease of the block is the same lease (a job's block holds for
//! both families). Without `[gateways]` (or for an address the gateways do not translate),
//! a node's own address and port are traced by the lease logs alone ([`node_trace`]): the
//! IPv4 address by the records' `node_addr`, the IPv6 one by their `node_addr6`, which a
//! lease has when its job's IPv6 was translated. A lease's interval is
//! closed at both ends, `[allocate, release]`: a time exactly at a release still belongs to
//! the job that released; the block's next job can only begin after its quarantine, so two
//! leases share an instant only with `quarantine_secs = 0`, and then both are reported.

use crate::store::lease::{rfc3339, LogRecord};
use extnet_policy::gateways::NatLookupError;
use extnet_policy::Policy;
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read lease log {path}: {source}; pass the node's lease log or a directory of collected logs with --log")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Map(#[from] NatLookupError),
}

/// One lease of a port block, as the lease log tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseSpan {
    pub node: String,
    pub node_addr: Ipv4Addr,
    /// The node's IPv6 address the job's IPv6 was translated to (the records' `node_addr6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_addr6: Option<Ipv6Addr>,
    pub job_id: u32,
    pub user: String,
    pub uid: u32,
    pub profile: String,
    pub port_first: u16,
    pub port_last: u16,
    /// Unix time of the `allocate` record; when the logs hold none (they begin later), of
    /// the first `interim` or `release` record seen, with `start_logged` false.
    pub start: u64,
    pub start_logged: bool,
    /// Unix time of the `release` record; `None`: none in the logs (still held, or the
    /// record is in a log not read).
    pub end: Option<u64>,
    /// The release record's reason (`orphan`, `reboot`), if any.
    pub end_reason: Option<String>,
}

impl LeaseSpan {
    /// True when the lease held its block at `t` (closed interval).
    pub fn holds_at(&self, t: u64) -> bool {
        self.start <= t && self.end.is_none_or(|e| t <= e)
    }

    /// `2026-12-07T02:00:00Z .. 2026-12-07T03:00:00Z` for humans.
    pub fn interval_text(&self) -> String {
        format!(
            "{}{} .. {}",
            if self.start_logged {
                ""
            } else {
                "at least since "
            },
            rfc3339(self.start),
            match self.end {
                Some(e) => format!(
                    "{}{}",
                    rfc3339(e),
                    self.end_reason
                        .as_ref()
                        .map_or(String::new(), |r| format!(" (released: {r})"))
                ),
                None =>
                    "no release in the logs (still held, or its record is in a log not read)".into(),
            }
        )
    }
}

/// The records of the lease logs at `paths` (files, or directories whose files are all read)
/// whose line contains `needle` (a cheap filter before JSON parsing), and how many of those
/// lines did not parse. With `node`, a directory that has files named for that node (a name
/// token equal to it, as `lease-%n.log` gives: `lease-n7.log` for `n7`, not `lease-n77.log`)
/// is read only for those: a collected directory of per-node logs costs one node's logs.
pub fn read_records(
    paths: &[PathBuf],
    needle: &str,
    node: Option<&str>,
) -> Result<(Vec<LogRecord>, usize), TraceError> {
    let mut files = Vec::new();
    for p in paths {
        let read_err = |source| TraceError::Read {
            path: p.clone(),
            source,
        };
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(read_err)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            if let Some(n) = node {
                let named = |p: &PathBuf| {
                    p.file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| f.split(['-', '.', '_']).any(|t| t == n))
                };
                if entries.iter().any(named) {
                    entries.retain(named);
                }
            }
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    let mut bad = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| TraceError::Read {
            path: f.clone(),
            source,
        })?;
        for line in text.lines().filter(|l| l.contains(needle)) {
            match serde_json::from_str::<LogRecord>(line) {
                Ok(r) => out.push(r),
                Err(_) => bad += 1,
            }
        }
    }
    Ok((out, bad))
}

/// The leases the records tell, in order of their start.
pub fn spans(mut records: Vec<LogRecord>) -> Vec<LeaseSpan> {
    records.sort_by_key(|r| r.unix);
    let mut open: HashMap<(String, u32, u16), usize> = HashMap::new();
    let mut out: Vec<LeaseSpan> = Vec::new();
    for r in records {
        let key = (r.node.clone(), r.job_id, r.port_first);
        let new = |r: &LogRecord, logged: bool| LeaseSpan {
            node: r.node.clone(),
            node_addr: r.node_addr,
            node_addr6: r.node_addr6,
            job_id: r.job_id,
            user: r.user.clone(),
            uid: r.uid,
            profile: r.profile.clone(),
            port_first: r.port_first,
            port_last: r.port_last,
            start: r.unix,
            start_logged: logged,
            end: None,
            end_reason: None,
        };
        match r.event.as_str() {
            "allocate" => {
                out.push(new(&r, true));
                open.insert(key, out.len() - 1);
            }
            "interim" => {
                if let std::collections::hash_map::Entry::Vacant(v) = open.entry(key) {
                    out.push(new(&r, false));
                    v.insert(out.len() - 1);
                }
            }
            "release" => {
                let i = match open.remove(&key) {
                    Some(i) => i,
                    None => {
                        out.push(new(&r, false));
                        out.len() - 1
                    }
                };
                out[i].end = Some(r.unix);
                out[i].end_reason = r.reason.clone();
            }
            _ => {}
        }
    }
    out
}

/// The answer for one public address and port.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub public: IpAddr,
    pub port: u16,
    pub node: String,
    pub node_addr: Ipv4Addr,
    /// The node's IPv6 address, when `public` is an IPv6 one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_addr6: Option<Ipv6Addr>,
    /// The node's pool the port is in (`[ports]` or a profile's name).
    pub pool: String,
    /// The virtual address the node's pool leaves through, of `public`'s family.
    pub virtual_address: IpAddr,
    pub at: Option<u64>,
    /// With `at`: the leases that held the port's block then (two only at a boundary with no
    /// quarantine); without: every lease of the block in the logs.
    pub leases: Vec<LeaseSpan>,
    /// What the logs cannot tell.
    pub unknown: Vec<String>,
}

/// Traces `public:port` (at `at`, or over the whole logs) through `policy` and the lease
/// records `records` (those of the node, at least); `public` is an IPv4 or IPv6 public
/// address.
pub fn trace(
    policy: &Policy,
    public: impl Into<IpAddr>,
    port: u16,
    at: Option<u64>,
    records: Vec<LogRecord>,
) -> Result<Trace, TraceError> {
    let public = public.into();
    let e = policy.nat_lookup(public, port)?;
    let pool = &policy.pools[e.pool];
    let g = policy
        .gateways
        .as_ref()
        .expect("nat_lookup found [gateways]");
    let earliest = records
        .iter()
        .filter(|r| r.node == e.node)
        .map(|r| r.unix)
        .min();
    let latest = records
        .iter()
        .filter(|r| r.node == e.node)
        .map(|r| r.unix)
        .max();
    let all: Vec<LeaseSpan> = spans(records)
        .into_iter()
        .filter(|s| s.node == e.node && s.port_first <= port && port <= s.port_last)
        .collect();
    let mut unknown = Vec::new();
    let leases = match at {
        None => all.clone(),
        Some(t) => all.iter().filter(|s| s.holds_at(t)).cloned().collect(),
    };
    if let Some(t) = at {
        if leases.is_empty() {
            let before = all
                .iter()
                .filter(|s| s.end.is_some_and(|x| x < t))
                .max_by_key(|s| s.end);
            let quarantine = policy.quarantine_secs(pool_port(pool, e.ports.0, port));
            match before {
                Some(b) if t < b.end.unwrap_or(0) + quarantine => unknown.push(format!(
                    "no lease held the block at {}: job {} released it at {} and it was in quarantine until {}, so no job could use it",
                    rfc3339(t),
                    b.job_id,
                    rfc3339(b.end.unwrap_or(0)),
                    rfc3339(b.end.unwrap_or(0) + quarantine)
                )),
                _ => unknown.push(format!("no lease held the block at {} in the logs read: no job of {} used the port then", rfc3339(t), e.node)),
            }
        }
        match (earliest, latest) {
            (None, _) => unknown.push(format!("the logs read hold no record of node {}: pass its lease log (or a directory of collected logs) with --log", e.node)),
            (Some(first), _) if t < first => unknown.push(format!("the logs read begin at {} for node {}: a lease before that is not in them", rfc3339(first), e.node)),
            (_, Some(last)) if t > last && leases.iter().all(|s| s.end.is_none()) => unknown.push(format!("the logs read end at {} for node {}: what happened later is not in them", rfc3339(last), e.node)),
            _ => {}
        }
        if leases.len() > 1 {
            unknown.push(format!("{} leases touch {} (one released, the next allocated at the same second, quarantine 0): the connection belongs to one of them", leases.len(), rfc3339(t)));
        }
    } else if all.is_empty() {
        unknown.push(format!(
            "no lease of this block in the logs read for node {}",
            e.node
        ));
    }
    let vip = &g.vips[e.vip];
    let (node_addr6, virtual_address) = match public {
        IpAddr::V4(_) => (None, IpAddr::V4(vip.address)),
        // nat_lookup found it in public6: the address has IPv6
        IpAddr::V6(_) => (
            e.node_addr6,
            vip.address6.map_or(IpAddr::V4(vip.address), IpAddr::V6),
        ),
    };
    Ok(Trace {
        public,
        port,
        node: e.node,
        node_addr: e.node_addr,
        node_addr6,
        pool: pool.name().to_owned(),
        virtual_address,
        at,
        leases,
        unknown,
    })
}

/// The answer for a node's own address and port (no gateway in between, or one the policy
/// does not describe).
#[derive(Debug, Clone, Serialize)]
pub struct NodeTrace {
    pub address: IpAddr,
    pub port: u16,
    pub at: Option<u64>,
    /// With `at`: the leases of the address whose block held the port then; without: every
    /// lease of the port on that address in the logs.
    pub leases: Vec<LeaseSpan>,
    /// What the logs cannot tell.
    pub unknown: Vec<String>,
}

/// The lease-log needle of a node address: the JSON field it is in (a cheap filter).
pub fn node_needle(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("\"node_addr\":\"{a}\""),
        IpAddr::V6(a) => format!("\"node_addr6\":\"{a}\""),
    }
}

/// Traces a node's own `address` (IPv4: the leases' `node_addr`; IPv6: their `node_addr6`)
/// and `port` at `at` (or over the whole logs) through the lease records `records`.
pub fn node_trace(
    address: IpAddr,
    port: u16,
    at: Option<u64>,
    records: Vec<LogRecord>,
) -> NodeTrace {
    let mine = |r: &LogRecord| match address {
        IpAddr::V4(a) => r.node_addr == a,
        IpAddr::V6(a) => r.node_addr6 == Some(a),
    };
    let records: Vec<LogRecord> = records.into_iter().filter(mine).collect();
    let (earliest, latest) = (
        records.iter().map(|r| r.unix).min(),
        records.iter().map(|r| r.unix).max(),
    );
    let all: Vec<LeaseSpan> = spans(records)
        .into_iter()
        .filter(|s| s.port_first <= port && port <= s.port_last)
        .collect();
    let leases: Vec<LeaseSpan> = match at {
        None => all.clone(),
        Some(t) => all.iter().filter(|s| s.holds_at(t)).cloned().collect(),
    };
    let mut unknown = Vec::new();
    let family = if address.is_ipv6() {
        " (an IPv6 address is only in the records of leases whose job's IPv6 was translated, written by extnet versions that log node_addr6)"
    } else {
        ""
    };
    match (earliest, at) {
        (None, _) => unknown.push(format!(
            "the logs read hold no lease of node address {address}{family}: pass the node's lease log (or a directory of collected logs) with --log"
        )),
        (Some(first), Some(t)) if t < first => unknown.push(format!(
            "the logs read begin at {} for node address {address}: a lease before that is not in them",
            rfc3339(first)
        )),
        (_, Some(t))
            if latest.is_some_and(|l| t > l) && leases.iter().all(|s| s.end.is_none()) =>
        {
            unknown.push(format!(
                "the logs read end at {} for node address {address}: what happened later is not in them",
                rfc3339(latest.unwrap_or(0))
            ))
        }
        _ => {}
    }
    if earliest.is_some() && leases.is_empty() {
        unknown.push(match at {
            Some(t) => format!(
                "no lease of {address} held port {port} at {} in the logs read",
                rfc3339(t)
            ),
            None => format!("no lease of {address} held port {port} in the logs read"),
        });
    }
    if leases.len() > 1 && at.is_some() {
        unknown.push(format!(
            "{} leases touch that time (one released, the next allocated at the same second, quarantine 0): the connection belongs to one of them",
            leases.len()
        ));
    }
    NodeTrace {
        address,
        port,
        at,
        leases,
        unknown,
    }
}

/// The port as the node's pool saw it, for the quarantine lookup: the policy's pools are
/// node slice 0, the node's are shifted.
fn pool_port(pool: &extnet_policy::Pool, node_first: u16, port: u16) -> u16 {
    port - node_first + pool.ports.first
}

/// One public block a job used on one node.
#[derive(Debug, Clone, Serialize)]
pub struct JobUse {
    pub lease: LeaseSpan,
    /// `None`: the node or its port is not in the policy's mapping (a changed policy).
    pub public: Option<Ipv4Addr>,
    pub virtual_address: Option<Ipv4Addr>,
    /// The public IPv6 address of the same ports, when the virtual address has IPv6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public6: Option<Ipv6Addr>,
}

/// The public addresses and ports job `job` used, per lease, from the lease records.
pub fn job(policy: &Policy, job: u32, records: Vec<LogRecord>) -> Vec<JobUse> {
    spans(records.into_iter().filter(|r| r.job_id == job).collect())
        .into_iter()
        .map(|lease| {
            let entry = policy.nat_entries(&lease.node).ok().and_then(|es| {
                es.into_iter()
                    .find(|e| e.ports.0 <= lease.port_first && lease.port_last <= e.ports.1)
            });
            let g = policy.gateways.as_ref();
            JobUse {
                public: entry.as_ref().map(|e| e.public),
                public6: entry.as_ref().and_then(|e| e.public6),
                virtual_address: entry.and_then(|e| g.map(|g| g.vips[e.vip].address)),
                lease,
            }
        })
        .collect()
}

/// The paths of the default lease log for node `node` (the policy's `log.lease_log`).
pub fn default_log(policy: &Policy, node: &str) -> PathBuf {
    extnet_policy::expand(&policy.log.lease_log, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use extnet_policy::Mode;

    /// n[1-8] behind one virtual address, 4 nodes per public address, pool 20000-20999 in
    /// blocks of 500 (two slots per node), quarantine 60 s.
    fn policy() -> Policy {
        Policy::from_toml(TEXT, "t").unwrap()
    }

    const TEXT: &str = r#"version = 1
[node]
interface = "eth0"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
[ports]
range = "20000-20999"
block_size = 500
quarantine_secs = 60
[[profile]]
name = "default"
users = ["*"]
[gateways]
ports = "20000-23999"
ports_per_node = 1000
[[gateways.host]]
name = "gw1"
cluster_interface = "eth0"
cluster_address = "10.99.0.251/24"
public_interface = "eth1"
public_address = "203.0.113.1/24"
[[gateways.vip]]
name = "main"
address = "10.99.0.254"
vrid = 1
public = ["203.0.113.101", "203.0.113.102"]
holders = [{ host = "gw1", priority = 100 }]
nodes = ["n[1-8]"]
[[gateways.nodes]]
names = "n[1-8]"
first_address = "10.99.0.11"
"#;

    /// [`policy`] with IPv6: `main` has fd00:78e7::254 and public 2001:db8::101 and ::102
    /// (the twins of .101 and .102), n[1-8] are fd00:78e7::11 onwards.
    fn policy6() -> Policy {
        let text = TEXT
            .replace(
                "public_address = \"203.0.113.1/24\"\n",
                "public_address = \"203.0.113.1/24\"\ncluster_address6 = \"fd00:78e7::251/64\"\npublic_address6 = \"2001:db8::1/64\"\n",
            )
            .replace(
                "vrid = 1\n",
                "vrid = 1\naddress6 = \"fd00:78e7::254\"\npublic6 = [\"2001:db8::101\", \"2001:db8::102\"]\n",
            )
            .replace(
                "first_address = \"10.99.0.11\"\n",
                "first_address = \"10.99.0.11\"\nfirst_address6 = \"fd00:78e7::11\"\n",
            );
        Policy::from_toml(&text, "t6").unwrap()
    }

    fn rec(event: &str, job: u32, node: &str, first: u16, unix: u64) -> LogRecord {
        let n: u32 = node[1..].parse().unwrap();
        LogRecord {
            time: rfc3339(unix),
            unix,
            event: event.into(),
            job_id: job,
            user: format!("u{job}"),
            uid: 1000 + job,
            node: node.into(),
            node_addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 99, 0, 10)) + n),
            node_addr6: None,
            family: "ipv4".into(),
            proto: "tcp,udp".into(),
            port_first: first,
            port_last: first + 499,
            mark: 0x1000_0000,
            mode: Mode::Cgroup,
            profile: "default".into(),
            reason: None,
        }
    }

    const T0: u64 = 1_800_000_000;

    /// n6 is node 5: address .102, slice 1: ports 21000-21999, blocks 21000 and 21500. Job 1
    /// holds block 21000 from T0 to T0+100; job 2 gets it after the quarantine, T0+200 to
    /// T0+300; job 3 holds block 21500 since T0+50 without a release. n5 (.102 slice 0) has a
    /// job at the same node ports as n1.
    fn log() -> Vec<LogRecord> {
        vec![
            rec("allocate", 1, "n6", 21000, T0),
            rec("allocate", 3, "n6", 21500, T0 + 50),
            rec("release", 1, "n6", 21000, T0 + 100),
            rec("allocate", 2, "n6", 21000, T0 + 200),
            rec("interim", 2, "n6", 21000, T0 + 250),
            rec("release", 2, "n6", 21000, T0 + 300),
            rec("allocate", 9, "n5", 20000, T0),
        ]
    }

    fn public() -> Ipv4Addr {
        "203.0.113.102".parse().unwrap()
    }

    fn jobs(t: &Trace) -> Vec<u32> {
        t.leases.iter().map(|l| l.job_id).collect()
    }

    #[test]
    fn a_port_at_a_time_names_the_node_and_the_job_that_held_its_block() {
        let t = trace(&policy(), public(), 21077, Some(T0 + 10), log()).unwrap();
        assert_eq!(
            (t.node.as_str(), t.node_addr.to_string()),
            ("n6", "10.99.0.16".into())
        );
        assert_eq!(jobs(&t), [1]);
        assert_eq!(t.leases[0].user, "u1");
        assert!(t.unknown.is_empty(), "{:?}", t.unknown);
        // the block reused by a later job: the later time names the later job
        let t = trace(&policy(), public(), 21077, Some(T0 + 260), log()).unwrap();
        assert_eq!(jobs(&t), [2]);
        // slice 0 of the same address is another node
        let t = trace(&policy(), public(), 20001, Some(T0 + 10), log()).unwrap();
        assert_eq!((t.node.as_str(), jobs(&t)), ("n5", vec![9]));
    }

    #[test]
    fn the_boundaries_belong_to_the_lease() {
        for (at, want) in [
            (T0, vec![1]),
            (T0 + 100, vec![1]),
            (T0 + 200, vec![2]),
            (T0 + 300, vec![2]),
        ] {
            let t = trace(&policy(), public(), 21000, Some(at), log()).unwrap();
            assert_eq!(jobs(&t), want, "at T0+{}", at - T0);
        }
        let t = trace(&policy(), public(), 21000, Some(T0 + 301), log()).unwrap();
        assert!(t.leases.is_empty());
    }

    #[test]
    fn a_time_in_quarantine_says_no_job_could_use_the_block() {
        let t = trace(&policy(), public(), 21000, Some(T0 + 130), log()).unwrap();
        assert!(t.leases.is_empty());
        assert!(
            t.unknown[0].contains("job 1 released it") && t.unknown[0].contains("quarantine"),
            "{:?}",
            t.unknown
        );
        // after the quarantine and before the next lease: free
        let t = trace(&policy(), public(), 21000, Some(T0 + 170), log()).unwrap();
        assert!(
            t.unknown[0].contains("no job of n6 used the port then"),
            "{:?}",
            t.unknown
        );
    }

    #[test]
    fn an_open_lease_and_times_outside_the_logs_say_what_is_not_known() {
        let t = trace(&policy(), public(), 21600, Some(T0 + 10_000), log()).unwrap();
        assert_eq!(jobs(&t), [3]);
        assert_eq!(t.leases[0].end, None);
        assert!(
            t.unknown.iter().any(|u| u.contains("the logs read end at")),
            "{:?}",
            t.unknown
        );
        let t = trace(&policy(), public(), 21000, Some(T0 - 1), log()).unwrap();
        assert!(
            t.unknown
                .iter()
                .any(|u| u.contains("the logs read begin at")),
            "{:?}",
            t.unknown
        );
        let t = trace(&policy(), public(), 21000, Some(T0), Vec::new()).unwrap();
        assert!(
            t.unknown
                .iter()
                .any(|u| u.contains("hold no record of node n6")),
            "{:?}",
            t.unknown
        );
    }

    #[test]
    fn a_lease_that_began_before_the_logs_is_marked_so() {
        let records = vec![
            rec("interim", 4, "n6", 21000, T0),
            rec("release", 4, "n6", 21000, T0 + 5),
        ];
        let t = trace(&policy(), public(), 21000, Some(T0 + 1), records).unwrap();
        assert_eq!(jobs(&t), [4]);
        assert!(!t.leases[0].start_logged);
        assert!(t.leases[0].interval_text().starts_with("at least since"));
    }

    #[test]
    fn without_a_time_every_lease_of_the_block_is_listed() {
        let t = trace(&policy(), public(), 21000, None, log()).unwrap();
        assert_eq!(jobs(&t), [1, 2]);
    }

    #[test]
    fn a_same_second_reuse_without_quarantine_reports_both() {
        let records = vec![
            rec("allocate", 1, "n6", 21000, T0),
            rec("release", 1, "n6", 21000, T0 + 10),
            rec("allocate", 2, "n6", 21000, T0 + 10),
        ];
        let t = trace(&policy(), public(), 21000, Some(T0 + 10), records).unwrap();
        assert_eq!(jobs(&t), [1, 2]);
        assert!(
            t.unknown.iter().any(|u| u.contains("2 leases touch")),
            "{:?}",
            t.unknown
        );
    }

    #[test]
    fn addresses_and_ports_outside_the_mapping_are_refused() {
        let p = policy();
        for (addr, port, why) in [
            (
                "203.0.113.1",
                21000,
                "none of the policy's public addresses",
            ),
            ("203.0.113.102", 24000, "outside the public port range"),
            // .102 slice 3 would be node 8 (n8 exists) but slice... .102 has nodes 4..=7
            ("203.0.113.102", 23999, "n8"),
        ] {
            match trace(&p, addr.parse::<Ipv4Addr>().unwrap(), port, Some(T0), log()) {
                Err(e) => assert!(e.to_string().contains(why), "{e}"),
                Ok(t) => assert_eq!(t.node, why, "{addr}:{port}"),
            }
        }
    }

    #[test]
    fn an_ipv6_public_address_and_port_name_the_same_node_and_job_as_its_ipv4_twin() {
        let p = policy6();
        let six: IpAddr = "2001:db8::102".parse().unwrap();
        let t = trace(&p, six, 21077, Some(T0 + 10), log()).unwrap();
        assert_eq!(t.node, "n6");
        assert_eq!(t.node_addr6, Some("fd00:78e7::16".parse().unwrap()));
        assert_eq!(t.virtual_address.to_string(), "fd00:78e7::254");
        assert_eq!(jobs(&t), [1]);
        assert!(t.unknown.is_empty(), "{:?}", t.unknown);
        // every time and port answers as for the IPv4 twin, quarantine and gaps included
        for port in [21000, 21077, 21499, 21500, 21999, 20001] {
            for at in [
                None,
                Some(T0),
                Some(T0 + 100),
                Some(T0 + 130),
                Some(T0 + 260),
            ] {
                let four = trace(&p, public(), port, at, log()).unwrap();
                let t = trace(&p, six, port, at, log()).unwrap();
                assert_eq!(
                    (&t.node, t.node_addr, jobs(&t), &t.unknown),
                    (&four.node, four.node_addr, jobs(&four), &four.unknown),
                    "port {port} at {at:?}"
                );
            }
        }
        // the JSON names the IPv6 addresses as such
        let j = serde_json::to_string(&t).unwrap();
        assert!(
            j.contains("\"public\":\"2001:db8::102\"")
                && j.contains("\"node_addr6\":\"fd00:78e7::"),
            "{j}"
        );
        // the IPv4 trace of a dual-stack policy has no IPv6 fields
        let j = serde_json::to_string(&trace(&p, public(), 21077, None, log()).unwrap()).unwrap();
        assert!(
            !j.contains("node_addr6") && j.contains("\"virtual_address\":\"10.99.0.254\""),
            "{j}"
        );
        for (addr, port, why) in [
            (
                "2001:db8::1",
                21000,
                "none of the policy's public addresses",
            ),
            (
                "2001:db8::103",
                21000,
                "none of the policy's public addresses",
            ),
            ("2001:db8::102", 24000, "outside the public port range"),
        ] {
            let a: IpAddr = addr.parse().unwrap();
            let e = trace(&p, a, port, Some(T0), log()).unwrap_err().to_string();
            assert!(e.contains(why), "{addr}: {e}");
        }
        // a policy without IPv6 knows no IPv6 public address
        let e = trace(&policy(), six, 21077, None, log())
            .unwrap_err()
            .to_string();
        assert!(e.contains("none of the policy's public addresses"), "{e}");
        // a job's uses name its IPv6 public address too
        let uses = job(&p, 2, log());
        assert_eq!(uses[0].public6, Some("2001:db8::102".parse().unwrap()));
        assert_eq!(job(&policy(), 2, log())[0].public6, None);
    }

    /// Without `[gateways]`: a node's IPv6 address and port name the job whose lease had that
    /// address as its `node_addr6`; its IPv4 address finds the same lease; a lease logged
    /// before `node_addr6` existed (an old line, read as it is) is found by IPv4 only.
    #[test]
    fn a_node_address_and_port_name_the_job_from_the_lease_log_alone() {
        let a6: Ipv6Addr = "fd00:78e7::16".parse().unwrap();
        let mut log = log();
        for r in log.iter_mut().filter(|r| r.job_id == 2) {
            r.node_addr6 = Some(a6);
        }
        // job 1's records as an earlier version wrote them: no node_addr6
        let old = r#"{"time":"2027-01-15T08:00:00Z","unix":1800000000,"event":"allocate","job_id":1,"user":"u1","uid":1001,"node":"n6","node_addr":"10.99.0.16","family":"ipv4","proto":"tcp,udp","port_first":21000,"port_last":21499,"mark":268435456,"mode":"cgroup","profile":"default"}"#;
        let parsed: LogRecord = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.node_addr6, None);
        assert_eq!(
            parsed, log[0],
            "the old line reads as the record without node_addr6"
        );
        let line = serde_json::to_string(&log[3]).unwrap();
        assert!(line.contains(&node_needle(IpAddr::V6(a6))), "{line}");
        assert!(
            line.contains(&node_needle(IpAddr::V4("10.99.0.16".parse().unwrap()))),
            "{line}"
        );

        let t = node_trace(IpAddr::V6(a6), 21166, Some(T0 + 220), log.clone());
        assert_eq!(jobs_of(&t.leases), [2], "{t:?}");
        assert_eq!(t.leases[0].node_addr6, Some(a6));
        assert!(t.unknown.is_empty(), "{:?}", t.unknown);
        // job 1 held the block then, but its records carry no IPv6 address
        let t = node_trace(IpAddr::V6(a6), 21166, Some(T0 + 50), log.clone());
        assert!(t.leases.is_empty(), "{t:?}");
        assert!(
            t.unknown
                .iter()
                .any(|u| u.contains("the logs read begin at")),
            "{:?}",
            t.unknown
        );
        let t = node_trace(
            "10.99.0.16".parse().unwrap(),
            21166,
            Some(T0 + 50),
            log.clone(),
        );
        assert_eq!(jobs_of(&t.leases), [1]);
        // another node's address, a port of another block
        let t = node_trace("fd00:78e7::17".parse().unwrap(), 21166, None, log.clone());
        assert!(
            t.leases.is_empty()
                && t.unknown[0].contains("hold no lease of node address fd00:78e7::17"),
            "{t:?}"
        );
        let t = node_trace(IpAddr::V6(a6), 21600, None, log);
        assert!(
            t.leases.is_empty()
                && t.unknown[0].contains("no lease of fd00:78e7::16 held port 21600"),
            "{t:?}"
        );
    }

    fn jobs_of(l: &[LeaseSpan]) -> Vec<u32> {
        l.iter().map(|l| l.job_id).collect()
    }

    #[test]
    fn a_job_gives_its_public_addresses_and_ports() {
        let uses = job(&policy(), 2, log());
        assert_eq!(uses.len(), 1);
        assert_eq!(uses[0].public, Some(public()));
        assert_eq!(
            (uses[0].lease.port_first, uses[0].lease.port_last),
            (21000, 21499)
        );
        assert_eq!(uses[0].lease.end, Some(T0 + 300));
        assert!(job(&policy(), 77, log()).is_empty());
    }

    #[test]
    fn logs_are_read_from_files_and_directories_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = log()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::write(
            dir.path().join("lease-n6.log"),
            lines[..6].join("\n") + "\nnot json \"node\":\"n6\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("lease-n5.log"), lines[6].clone() + "\n").unwrap();
        let (r, bad) = read_records(&[dir.path().to_owned()], "\"node\":\"n6\"", None).unwrap();
        assert_eq!((r.len(), bad), (6, 1));
        let (r, _) = read_records(&[dir.path().join("lease-n5.log")], "", None).unwrap();
        assert_eq!(r.len(), 1);
        // with the node: only its file (n5's would not pass the filter, but is not even read)
        std::fs::write(dir.path().join("lease-n55.log"), "garbage\n").unwrap();
        let (r, bad) = read_records(&[dir.path().to_owned()], "", Some("n5")).unwrap();
        assert_eq!((r.len(), bad), (1, 0));
        let e = read_records(&[dir.path().join("none")], "", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none") && e.contains("--log"), "{e}");
    }
}

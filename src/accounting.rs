//! Per-job traffic accounting: static per-slot counters in the node's nft table, read at the
//! epilog into one JSON record per job per node (`log.accounting`), and read back by
//! `extnet accounting` and `extnet status`.
//!
//! Every slot owns three named counters in table `ip extnet`, declared once with the base
//! ruleset (so a job costs no nft object change, and nothing here grows with the number of
//! jobs):
//!
//! - `slot<N>_out`: packets and bytes the job sends to the outside (postrouting, marked,
//!   leaving through `node.interface`, destination not in `@internal`);
//! - `slot<N>_in`: packets and bytes the outside sends back (prerouting, `ct direction reply`
//!   of a connection whose conntrack mark was set to the job's mark on the way out; this one
//!   place counts both cgroup-mode replies, which go on to input, and netns-mode replies,
//!   which are forwarded);
//! - `slot<N>_conn`: connections (conntrack entries) the job opened to the outside, counted
//!   on their first packet (`ct state new`).
//!
//! They are reached through maps `mark : counter` (`counter name meta mark map @slot_out`), so
//! each rule is one hash lookup whatever the number of slots. The prolog resets the slot's
//! counters when it grants the lease (one netlink request, [`crate::nfnl`]), so the epilog reads
//! exactly the job's traffic; a base reload carries the running values over
//! ([`carry_over`]). Counters count packets as the kernel handles them: with segmentation
//! offload (GSO/GRO) one large packet of up to 64 KiB counts once, so `packets_*` can be
//! lower than the number of packets on the wire; bytes are exact.

use crate::fsutil::{append_line, FsError};
use crate::lease::{rfc3339, Lease};
use crate::nfnl::NfSocket;
use crate::plan::{self, TABLE};
use extnet_policy::{Mode, Policy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The three counters of a slot, by the suffix of their names.
const KINDS: [&str; 3] = ["out", "in", "conn"];

/// The name of counter `kind` (`out`, `in`, `conn`) of `slot`.
pub fn counter_name(slot: u32, kind: &str) -> String {
    format!("slot{slot}_{kind}")
}

/// A job's traffic to and from the outside, as counted on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub bytes_out: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub packets_in: u64,
    /// Connections opened to the outside (TCP, UDP flows, ICMP echo: conntrack entries).
    pub connections: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.bytes_out += o.bytes_out;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.packets_in += o.packets_in;
        self.connections += o.connections;
    }
}

/// The counters and `mark : counter` maps, one of each per slot, as lines of the base table.
pub fn nft_objects(policy: &Policy) -> String {
    let blocks = policy.slots();
    let mut s = String::with_capacity(blocks as usize * 200);
    for slot in 0..blocks {
        for kind in KINDS {
            let _ = writeln!(s, "  counter {} {{ }}", counter_name(slot, kind));
        }
    }
    for kind in KINDS {
        let _ = write!(s, "  map slot_{kind} {{ type mark : counter;");
        if blocks == 0 {
            s.push_str(" }\n");
            continue;
        }
        let elems: Vec<String> = (0..blocks)
            .map(|slot| {
                format!(
                    "0x{:x} : \"{}\"",
                    plan::mark(policy, slot),
                    counter_name(slot, kind)
                )
            })
            .collect();
        let _ = writeln!(s, " elements = {{ {} }}; }}", elems.join(", "));
    }
    s
}

/// The two counting chains of the base table. Static: no rule names a slot.
pub fn nft_chains(policy: &Policy) -> String {
    let flag = policy.node.fwmark;
    let iface = &policy.node.interface;
    // out: after srcnat (priority 100), so a packet the nat chain drops is not counted.
    // The conntrack mark carries the job's mark to the replies, which have no socket mark.
    format!(
        r#"  chain account_out {{
    type filter hook postrouting priority srcnat + 10; policy accept;
    meta mark & 0x{flag:x} != 0x{flag:x} return
    oifname != "{iface}" return
    ip daddr @internal return
    ct state new ct mark set meta mark counter name meta mark map @slot_conn
    counter name meta mark map @slot_out
  }}
  chain account_in {{
    type filter hook prerouting priority filter; policy accept;
    ct direction reply ct mark & 0x{flag:x} == 0x{flag:x} counter name ct mark map @slot_in
  }}
"#
    )
}

/// Why a slot's counters could not be read or reset.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("nftables counter {name} does not exist in table ip {TABLE}: the node's base table is not loaded or older than this extnet; run `extnet node setup` on the node")]
    Missing { name: String },
    #[error("cannot {op} nftables counter {name} in table ip {TABLE} over netlink: {source}; run as root in the node's network namespace")]
    Netlink {
        op: &'static str,
        name: String,
        source: std::io::Error,
    },
}

/// Reads the counters of `slots` (and of no other slot): three netlink requests per slot on
/// one socket (`nft list counter ip extnet slotN_out` ..., without the libnftables cache,
/// which would fetch the whole table, cgroup maps included).
pub fn read(slots: &[u32]) -> Result<BTreeMap<u32, Counters>, CounterError> {
    get_slots(slots, false)
}

/// Sets the counters of `slot` to zero (the prolog, when it grants the slot to a job) and
/// returns what they held: `nft reset counter ip extnet slotN_out` ..., over netlink.
pub fn reset(slot: u32) -> Result<Counters, CounterError> {
    Ok(get_slots(&[slot], true)?[&slot])
}

fn get_slots(slots: &[u32], reset: bool) -> Result<BTreeMap<u32, Counters>, CounterError> {
    let op = if reset { "reset" } else { "read" };
    let mut out = BTreeMap::new();
    if slots.is_empty() {
        return Ok(out);
    }
    let mut sock = NfSocket::open().map_err(|source| CounterError::Netlink {
        op,
        name: counter_name(slots[0], KINDS[0]),
        source,
    })?;
    for &slot in slots {
        let mut get = |kind: &str| {
            let name = counter_name(slot, kind);
            match sock.counter(TABLE, &name, reset) {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(CounterError::Missing { name }),
                Err(source) => Err(CounterError::Netlink { op, name, source }),
            }
        };
        let (packets_out, bytes_out) = get("out")?;
        let (packets_in, bytes_in) = get("in")?;
        let (connections, _) = get("conn")?;
        out.insert(
            slot,
            Counters {
                bytes_out,
                packets_out,
                bytes_in,
                packets_in,
                connections,
            },
        );
    }
    Ok(out)
}

/// Every named counter of table `ip extnet` (packets, bytes) by name: one netlink dump,
/// without libnftables' cache (which would fetch the cgroup maps too). O(counters): for
/// reloads and overviews, never per job.
pub fn all_counters() -> Result<HashMap<String, (u64, u64)>, CounterError> {
    NfSocket::open()
        .and_then(|mut s| s.all_counters(TABLE))
        .map_err(|source| CounterError::Netlink {
            op: "dump",
            name: "*".into(),
            source,
        })
}

/// `ruleset` with the declarations of counters named in `values` carrying those values.
pub fn with_values(ruleset: &str, values: &HashMap<String, (u64, u64)>) -> String {
    let mut out = String::with_capacity(ruleset.len() + values.len() * 32);
    for line in ruleset.lines() {
        let name = line
            .trim()
            .strip_prefix("counter ")
            .and_then(|r| r.strip_suffix(" { }"));
        match name.and_then(|n| values.get(n).map(|v| (n, v))) {
            Some((n, (p, b))) => {
                let _ = writeln!(out, "  counter {n} {{ packets {p} bytes {b} }}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The base ruleset about to replace the loaded table, with the loaded counters' values, so
/// that running jobs keep what they have counted across a reload (`delete table` would
/// otherwise zero them; packets counted between this read and the load, a few ms, are lost).
/// Lists the table's named counters only, never a cgroup map. When there is nothing to read
/// (no table yet) or it fails, `ruleset` is returned as it is.
pub fn carry_over(ruleset: &str) -> String {
    if !crate::nft::table_exists(TABLE).unwrap_or(false) {
        return ruleset.to_owned();
    }
    match NfSocket::open().and_then(|mut s| s.all_counters(TABLE)) {
        Ok(v) => with_values(ruleset, &v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the traffic counters before reloading the nft table; running jobs' counters restart at zero");
            ruleset.to_owned()
        }
    }
}

/// One accounting record: a job's traffic on one node, written by the epilog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the record was written (RFC 3339 UTC), = `end`.
    pub time: String,
    pub job_id: u32,
    pub user: String,
    pub uid: u32,
    pub node: String,
    pub node_addr: Ipv4Addr,
    pub profile: String,
    pub mode: Mode,
    pub slot: u32,
    pub mark: u32,
    pub port_first: u16,
    pub port_last: u16,
    /// Unix time the lease was taken (the counters start at zero then).
    pub start: u64,
    pub start_time: String,
    /// Unix time the epilog read the counters.
    pub end: u64,
    pub end_time: String,
    #[serde(flatten)]
    pub counters: Counters,
    /// Why the counters could not be read (they are zero then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn new(lease: &Lease, node: &str, end: u64, counters: Result<Counters, String>) -> Record {
        let (counters, error) = match counters {
            Ok(c) => (c, None),
            Err(e) => (Counters::default(), Some(e)),
        };
        Record {
            time: rfc3339(end),
            job_id: lease.job_id,
            user: lease.user.to_string(),
            uid: lease.uid,
            node: node.to_owned(),
            node_addr: lease.node_addr,
            profile: lease.profile.to_string(),
            mode: lease.mode,
            slot: lease.slot,
            mark: lease.mark,
            port_first: lease.port_first,
            port_last: lease.port_last,
            start: lease.since,
            start_time: rfc3339(lease.since),
            end,
            end_time: rfc3339(end),
            counters,
            error,
        }
    }

    /// Appends the record as one JSON line and fsyncs it.
    pub fn append(&self, log: &Path) -> Result<(), FsError> {
        append_line(
            log,
            &serde_json::to_string(self).expect("accounting record serializes"),
        )
    }
}

/// The epilog's part: reads the counters of `lease`'s slot and appends the job's record to
/// `log`. Called before the lease is released (the slot's counters are the job's until then).
pub fn record_job(lease: &Lease, node: &str, log: &Path, end: u64) -> Result<Record, FsError> {
    let counters = read(&[lease.slot])
        .map_err(|e| e.to_string())
        .and_then(|m| {
            m.get(&lease.slot)
                .copied()
                .ok_or_else(|| "no counters read".to_owned())
        });
    let rec = Record::new(lease, node, end, counters);
    rec.append(log)?;
    Ok(rec)
}

/// What `extnet accounting` reads: records and the lines it could not use.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<Record>,
    /// `file:line: problem` for lines that are not records.
    pub bad: Vec<String>,
}

/// Reads the records of `files` (a missing file has none). A record written twice (an epilog
/// killed between writing it and releasing the lease runs again) is kept once: the last one
/// for the same job, node and lease start.
pub fn read_records(files: &[PathBuf]) -> Result<Records, FsError> {
    let mut r = Records::default();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(FsError::Io {
                    op: "read",
                    path: f.clone(),
                    source,
                })
            }
        };
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(rec) => r.records.push(rec),
                Err(e) => r.bad.push(format!("{}:{}: {e}", f.display(), i + 1)),
            }
        }
    }
    let mut seen: HashMap<(u32, String, u64), usize> = HashMap::new();
    let mut keep: Vec<Option<Record>> = Vec::with_capacity(r.records.len());
    for rec in r.records.drain(..) {
        let key = (rec.job_id, rec.node.clone(), rec.start);
        if let Some(&i) = seen.get(&key) {
            keep[i] = None;
        }
        seen.insert(key, keep.len());
        keep.push(Some(rec));
    }
    r.records = keep.into_iter().flatten().collect();
    Ok(r)
}

/// One job's traffic summed over its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobTotal {
    pub job_id: u32,
    pub user: String,
    pub nodes: Vec<String>,
    pub profiles: Vec<String>,
    pub start: u64,
    pub end: u64,
    pub counters: Counters,
    /// Nodes whose counters could not be read (counted as zero).
    pub incomplete: Vec<String>,
}

/// Sums records per job (in the order jobs first appear).
pub fn totals(records: &[Record]) -> Vec<JobTotal> {
    let mut out: Vec<JobTotal> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for r in records {
        let i = *index.entry(r.job_id).or_insert_with(|| {
            out.push(JobTotal {
                job_id: r.job_id,
                user: r.user.clone(),
                nodes: Vec::new(),
                profiles: Vec::new(),
                start: r.start,
                end: r.end,
                counters: Counters::default(),
                incomplete: Vec::new(),
            });
            out.len() - 1
        });
        let t = &mut out[i];
        if !t.nodes.contains(&r.node) {
            t.nodes.push(r.node.clone());
        }
        if !t.profiles.contains(&r.profile) {
            t.profiles.push(r.profile.clone());
        }
        t.start = t.start.min(r.start);
        t.end = t.end.max(r.end);
        t.counters += r.counters;
        if r.error.is_some() {
            t.incomplete.push(r.node.clone());
        }
    }
    out
}

/// The accounting files a policy's `log.accounting` template names. With `node`, that node's
/// file. Without: when `%n` is only in the file name, every file of that directory the
/// template matches (all nodes' logs on a shared directory); when it is in a directory part,
/// the file of `this_node`; without `%n`, the one file.
pub fn log_files(template: &str, node: Option<&str>, this_node: Option<&str>) -> Vec<PathBuf> {
    if let Some(n) = node {
        return vec![extnet_policy::expand(template, n)];
    }
    if !template.contains("%n") {
        return vec![PathBuf::from(template)];
    }
    let path = Path::new(template);
    let (dir, file) = match (path.parent(), path.file_name().and_then(|f| f.to_str())) {
        (Some(d), Some(f)) if !d.to_string_lossy().contains("%n") => (d, f),
        _ => {
            return this_node
                .map(|n| vec![extnet_policy::expand(template, n)])
                .unwrap_or_default()
        }
    };
    let (prefix, suffix) = file.split_once("%n").expect("template contains %n");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_owned();
                    let node = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                    // the node part of the name: a host name, not a rotated copy's suffix
                    (!node.is_empty()
                        && !suffix.contains("%n")
                        && node
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .then(|| e.path())
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `1.5 MiB`-style sizes for tables.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(range: &str) -> Policy {
        Policy::from_toml(
            &format!(
                r#"version = 1
[node]
interface = "ib0"
gateway = "10.99.0.254"
internal = ["10.99.0.0/24"]
[ports]
range = "{range}"
block_size = 256
"#
            ),
            "t",
        )
        .unwrap()
    }

    fn lease(job_id: u32, slot: u32, since: u64) -> Lease {
        Lease {
            job_id,
            user: "alice".into(),
            uid: 1000,
            slot,
            port_first: 20000 + slot as u16 * 256,
            port_last: 20255 + slot as u16 * 256,
            mark: 0x10000 | slot,
            mode: Mode::Cgroup,
            profile: "default".into(),
            node_addr: Ipv4Addr::new(10, 99, 0, 11),
            since,
            last_logged: None,
        }
    }

    #[test]
    fn objects_are_three_counters_and_one_element_per_map_per_slot() {
        let p = policy("20000-20767");
        let o = nft_objects(&p);
        assert_eq!(o.matches("counter slot").count(), 9, "{o}");
        for kind in KINDS {
            assert!(
                o.contains(&format!(
                    "map slot_{kind} {{ type mark : counter; elements = {{ 0x10000 : \"slot0_{kind}\", 0x10001 : \"slot1_{kind}\", 0x10002 : \"slot2_{kind}\" }}; }}"
                )),
                "{o}"
            );
        }
        assert!(!o.contains("slot3_"), "{o}");
    }

    #[test]
    fn chains_count_only_marked_external_traffic_through_maps() {
        let c = nft_chains(&policy("20000-20767"));
        assert!(c.contains("meta mark & 0x10000 != 0x10000 return"), "{c}");
        assert!(c.contains("oifname != \"ib0\" return"), "{c}");
        assert!(c.contains("ip daddr @internal return"), "{c}");
        assert!(
            c.contains("ct state new ct mark set meta mark counter name meta mark map @slot_conn"),
            "{c}"
        );
        assert!(
            c.contains(
                "ct direction reply ct mark & 0x10000 == 0x10000 counter name ct mark map @slot_in"
            ),
            "{c}"
        );
        // O(1): no rule names a slot, a mark value or a counter
        assert!(!c.contains("slot0") && !c.contains("0x10001"), "{c}");
    }

    #[test]
    fn with_values_sets_only_the_named_counters() {
        let p = policy("20000-20767");
        let r = nft_objects(&p);
        let mut v = HashMap::new();
        v.insert("slot1_in".to_string(), (3, 4096));
        v.insert("slot9_in".to_string(), (1, 1));
        let out = with_values(&r, &v);
        assert!(
            out.contains("  counter slot1_in { packets 3 bytes 4096 }\n"),
            "{out}"
        );
        assert!(out.contains("  counter slot0_in { }\n"), "{out}");
        assert_eq!(out.lines().count(), r.lines().count());
        assert_eq!(with_values(&r, &HashMap::new()), r);
    }

    #[test]
    fn record_round_trips_flat_and_marks_unreadable_counters() {
        let c = Counters {
            bytes_out: 1,
            packets_out: 2,
            bytes_in: 3,
            packets_in: 4,
            connections: 5,
        };
        let r = Record::new(&lease(7, 2, 1_700_000_000), "n1", 1_700_000_060, Ok(c));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["bytes_in"], 3, "counters are top-level fields: {v}");
        assert_eq!(v["start_time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["port_first"], 20512);
        assert!(v.get("error").is_none());
        assert_eq!(
            serde_json::from_value::<Record>(v).unwrap(),
            r,
            "reads back"
        );
        let bad = Record::new(&lease(7, 2, 0), "n1", 60, Err("nft refused".into()));
        assert_eq!(bad.counters, Counters::default());
        assert_eq!(bad.error.as_deref(), Some("nft refused"));
    }

    #[test]
    fn records_are_read_deduplicated_and_summed_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let f1 = dir.path().join("accounting-n1.log");
        let f2 = dir.path().join("accounting-n2.log");
        let c = |b: u64| Counters {
            bytes_out: b,
            packets_out: 1,
            bytes_in: 2 * b,
            packets_in: 2,
            connections: 1,
        };
        Record::new(&lease(1, 0, 100), "n1", 200, Ok(c(10)))
            .append(&f1)
            .unwrap();
        // the same record again (an epilog run twice), then another job
        Record::new(&lease(1, 0, 100), "n1", 201, Ok(c(10)))
            .append(&f1)
            .unwrap();
        Record::new(&lease(2, 1, 150), "n1", 300, Ok(c(5)))
            .append(&f1)
            .unwrap();
        Record::new(&lease(1, 0, 90), "n2", 250, Ok(c(30)))
            .append(&f2)
            .unwrap();
        std::fs::write(dir.path().join("junk"), "not json\n").unwrap();
        let mut files = vec![f1.clone(), f2.clone(), dir.path().join("junk")];
        files.push(dir.path().join("missing.log"));
        let r = read_records(&files).unwrap();
        assert_eq!(r.records.len(), 3, "{:?}", r.records);
        assert_eq!(r.records[0].end, 201, "the later copy is kept");
        assert_eq!(r.bad.len(), 1);
        assert!(r.bad[0].contains("junk:1: "), "{:?}", r.bad);
        let t = totals(&r.records);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].job_id, 1);
        assert_eq!(t[0].nodes, ["n1", "n2"]);
        assert_eq!((t[0].start, t[0].end), (90, 250));
        assert_eq!(t[0].counters.bytes_out, 40);
        assert_eq!(t[0].counters.bytes_in, 80);
        assert_eq!(t[0].counters.connections, 2);
        assert_eq!(t[1].counters.bytes_out, 5);
    }

    #[test]
    fn log_files_follow_the_template() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "accounting-n1.log",
            "accounting-n2.log",
            "accounting-n1.log.1",
            "other.log",
        ] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let t = format!("{}/accounting-%n.log", dir.path().display());
        let all = log_files(&t, None, Some("n9"));
        let names: Vec<String> = all
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["accounting-n1.log", "accounting-n2.log"]);
        assert_eq!(
            log_files(&t, Some("n2"), None),
            [dir.path().join("accounting-n2.log")]
        );
        assert_eq!(
            log_files("/var/log/x/acct.log", None, Some("n1")),
            [PathBuf::from("/var/log/x/acct.log")]
        );
        assert_eq!(
            log_files("/var/log/%n/acct.log", None, Some("n1")),
            [PathBuf::from("/var/log/n1/acct.log")]
        );
        assert!(log_files("/var/log/%n/acct.log", None, None).is_empty());
    }

    #[test]
    fn human_bytes_scales() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}

//! The accounting log: one JSON record per job per node, written by the epilog
//! (`log.accounting`), read back and summed per job by `extnet accounting`.

use crate::store::fs::{append_line, FsError};
use crate::store::lease::{rfc3339, Lease};
use extnet_policy::Mode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// A job's traffic to and from the outside, as counted on one node: the totals of both IP
/// families, and of them the IPv6 part (`*6`; its IPv4 part is the difference). Records of
/// earlier versions have no IPv6 fields: they read as zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub bytes_out: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub packets_in: u64,
    /// Connections opened to the outside (TCP, UDP flows, ICMP echo: conntrack entries).
    pub connections: u64,
    #[serde(default)]
    pub bytes_out6: u64,
    #[serde(default)]
    pub packets_out6: u64,
    #[serde(default)]
    pub bytes_in6: u64,
    #[serde(default)]
    pub packets_in6: u64,
    #[serde(default)]
    pub connections6: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.bytes_out += o.bytes_out;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.packets_in += o.packets_in;
        self.connections += o.connections;
        self.bytes_out6 += o.bytes_out6;
        self.packets_out6 += o.packets_out6;
        self.bytes_in6 += o.bytes_in6;
        self.packets_in6 += o.packets_in6;
        self.connections6 += o.connections6;
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
    /// The node's IPv6 address the job's IPv6 was translated to, when it was (the lease's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addr6: Option<Ipv6Addr>,
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
            node_addr6: lease.node_addr6,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            node_addr6: None,
            since,
            last_logged: None,
        }
    }

    #[test]
    fn record_round_trips_flat_and_marks_unreadable_counters() {
        let c = Counters {
            bytes_out: 1,
            packets_out: 2,
            bytes_in: 3,
            packets_in: 4,
            connections: 5,
            ..Counters::default()
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

    /// A record of the version before the IPv6 fields reads with them zero and without
    /// `node_addr6`; a record with them round-trips and sums them per job.
    #[test]
    fn ipv6_fields_are_optional_and_summed() {
        let old = r#"{"time":"2026-11-22T03:29:17Z","job_id":2,"user":"xnalice","uid":1001,"node":"n1","node_addr":"10.99.0.11","profile":"default","mode":"cgroup","slot":1,"mark":65537,"port_first":20256,"port_last":20511,"start":1795318156,"start_time":"2026-11-22T03:29:16Z","end":1795318157,"end_time":"2026-11-22T03:29:17Z","bytes_out":1007064,"packets_out":131,"bytes_in":3007233,"packets_in":132,"connections":3}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!(r.node_addr6, None);
        assert_eq!(r.counters.bytes_out, 1_007_064);
        assert_eq!(
            (
                r.counters.bytes_out6,
                r.counters.packets_in6,
                r.counters.connections6
            ),
            (0, 0, 0)
        );
        let c = Counters {
            bytes_out: 100,
            packets_out: 4,
            bytes_in: 200,
            packets_in: 5,
            connections: 3,
            bytes_out6: 60,
            packets_out6: 2,
            bytes_in6: 120,
            packets_in6: 3,
            connections6: 1,
        };
        let mut l = lease(7, 2, 1_700_000_000);
        l.node_addr6 = Some("fd00:78e7::11".parse().unwrap());
        let r = Record::new(&l, "n1", 1_700_000_060, Ok(c));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["node_addr6"], "fd00:78e7::11", "{v}");
        assert_eq!(v["bytes_out6"], 60, "{v}");
        assert_eq!(v["connections6"], 1, "{v}");
        assert_eq!(serde_json::from_value::<Record>(v).unwrap(), r);
        let no6 = Record::new(&lease(8, 1, 0), "n1", 60, Ok(Counters::default()));
        assert!(serde_json::to_value(&no6)
            .unwrap()
            .get("node_addr6")
            .is_none());
        let t = totals(&[
            r.clone(),
            Record {
                node: "n2".into(),
                ..r
            },
        ]);
        assert_eq!(
            (t[0].counters.bytes_in6, t[0].counters.bytes_in),
            (240, 400)
        );
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
            ..Counters::default()
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
}

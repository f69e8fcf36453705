//! Leases the lease log still calls held but nothing on the node holds any more: an
//! `allocate` record with no `release` after it (same job, same node) whose lease is not in
//! the lease table. The state directory (lease table, markers, state files) is usually on
//! tmpfs and the lease log on disk, so after a reboot the log says the node's last jobs still
//! hold their port blocks; [`closing_releases`] gives the `release` records that end those
//! leases in the log, so that "who held this port at that time" has an end.
//!
//! The scan is pure over the log's lines ([`scan`]); what it costs is one sequential read of
//! the current log file (time linear in its size, memory linear in the allocations still open,
//! one record each). Records in rotated files are not read: an allocation whose record was
//! rotated away before the reboot stays open in the log.

use super::LeaseTable;
use super::LogRecord;
use crate::store::fs::FsError;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

/// Why a lease was released by [`closing_releases`] (the record's `reason`).
pub const REBOOT: &str = "reboot";
/// A job that no longer runs on the node, its epilog never ran (`extnet reconcile`).
pub const ORPHAN: &str = "orphan";

/// What one read of a lease log found for one node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The `allocate` records with no `release` after them, in the order they were written
    /// (the last one when a job was allocated twice without a release in between).
    pub open: Vec<LogRecord>,
    /// Lines that are not a record (a torn last line, a line from another program).
    pub unreadable: usize,
}

/// Reads the lease log at `log` once for `node`'s records. A log that does not exist has none.
pub fn scan_file(log: &Path, node: &str) -> Result<Scan, FsError> {
    let io = |op: &'static str| {
        move |source: std::io::Error| FsError::Io {
            op,
            path: log.to_owned(),
            source,
        }
    };
    match std::fs::File::open(log) {
        Ok(f) => scan(std::io::BufReader::new(f), node).map_err(io("read")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Scan::default()),
        Err(e) => Err(io("open")(e)),
    }
}

/// Scans lease-log lines for `node`'s open allocations.
pub fn scan(reader: impl BufRead, node: &str) -> std::io::Result<Scan> {
    // job id -> (position of its allocate, the record)
    let mut open: HashMap<u32, (usize, LogRecord)> = HashMap::new();
    let mut unreadable = 0;
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(rec) = serde_json::from_slice::<LogRecord>(&line) else {
            unreadable += 1;
            continue;
        };
        if rec.node != node {
            continue;
        }
        match rec.event.as_str() {
            "allocate" => {
                open.insert(rec.job_id, (n, rec));
            }
            "release" => {
                open.remove(&rec.job_id);
            }
            _ => {}
        }
    }
    let mut open: Vec<(usize, LogRecord)> = open.into_values().collect();
    open.sort_by_key(|(n, _)| *n);
    Ok(Scan {
        open: open.into_iter().map(|(_, r)| r).collect(),
        unreadable,
    })
}

/// The `release` records that end the open allocations whose job holds no lease in `table`:
/// allocated before the machine booted (`boot`, Unix time), the lease ended with the boot
/// (reason [`REBOOT`], time `boot`); allocated since, the job's epilog never released it
/// (reason [`ORPHAN`], time `now`). Allocations of jobs that `table` holds are left: their
/// leases are live, and their epilog (or `extnet reconcile`) releases them.
pub fn closing_releases(
    open: &[LogRecord],
    table: &LeaseTable,
    boot: u64,
    now: u64,
) -> Vec<LogRecord> {
    open.iter()
        .filter(|a| table.lease_of(a.job_id).is_none())
        .map(|a| {
            let (reason, at) = if a.unix < boot {
                (REBOOT, boot)
            } else {
                (ORPHAN, now)
            };
            LogRecord {
                time: super::rfc3339(at),
                unix: at,
                event: "release".into(),
                reason: Some(reason.into()),
                ..a.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req};
    use super::*;

    fn line(event: &str, job: u32, node: &str, unix: u64) -> String {
        let mut t = LeaseTable::empty(node);
        let (l, _) = t.allocate(&req(job), &pool(), 0).unwrap();
        serde_json::to_string(&LogRecord::new(event, &l, node, unix)).unwrap()
    }

    fn open_jobs(text: &str, node: &str) -> (Vec<(u32, u64)>, usize) {
        let s = scan(text.as_bytes(), node).unwrap();
        (
            s.open.iter().map(|r| (r.job_id, r.unix)).collect(),
            s.unreadable,
        )
    }

    #[test]
    fn an_allocate_is_open_until_a_release_of_the_same_job_and_node() {
        let log = [
            line("allocate", 1, "n1", 10),
            line("allocate", 2, "n1", 11),
            line("allocate", 3, "n2", 12),
            line("interim", 1, "n1", 13),
            line("release", 2, "n2", 14),
            line("release", 1, "n1", 15),
            line("allocate", 4, "n1", 16),
        ]
        .join("\n");
        assert_eq!(open_jobs(&log, "n1"), (vec![(2, 11), (4, 16)], 0));
        assert_eq!(open_jobs(&log, "n2"), (vec![(3, 12)], 0));
    }

    #[test]
    fn a_job_allocated_again_after_its_release_is_open_again_and_torn_lines_are_counted() {
        let log = [
            line("allocate", 1, "n1", 10),
            line("release", 1, "n1", 20),
            "{\"time\": \"torn".to_owned(),
            String::new(),
            line("allocate", 1, "n1", 30),
            line("allocate", 1, "n1", 31),
            "{\"legacy\": true}".to_owned(),
        ]
        .join("\n");
        assert_eq!(open_jobs(&log, "n1"), (vec![(1, 31)], 2));
    }

    #[test]
    fn records_without_a_reason_still_read_and_a_reason_round_trips() {
        let l = line("release", 1, "n1", 10);
        assert!(!l.contains("reason"), "the epilog's records have none: {l}");
        let r: LogRecord = serde_json::from_str(&l).unwrap();
        assert_eq!(r.reason, None);
        let with = serde_json::to_string(&r.with_reason("orphan")).unwrap();
        assert!(with.contains("\"reason\":\"orphan\""), "{with}");
        let back: LogRecord = serde_json::from_str(&with).unwrap();
        assert_eq!(back.reason.as_deref(), Some("orphan"));
    }

    #[test]
    fn open_allocations_before_the_boot_end_at_the_boot_and_later_ones_now() {
        let log = [
            line("allocate", 1, "n1", 100),
            line("allocate", 2, "n1", 300),
            line("allocate", 3, "n1", 400),
        ]
        .join("\n");
        let s = scan(log.as_bytes(), "n1").unwrap();
        // job 3 still holds its lease
        let mut table = LeaseTable::empty("n1");
        table.allocate(&req(3), &pool(), 400).unwrap();
        let rel = closing_releases(&s.open, &table, 200, 500);
        let got: Vec<(u32, u64, &str, Option<&str>)> = rel
            .iter()
            .map(|r| (r.job_id, r.unix, r.event.as_str(), r.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 200, "release", Some(REBOOT)),
                (2, 500, "release", Some(ORPHAN))
            ]
        );
        assert_eq!(rel[0].time, rfc3339_of(200));
        assert_eq!(rel[0].port_first, s.open[0].port_first);
        // once appended, the scan finds them closed: nothing more to add
        let again = format!(
            "{log}\n{}",
            rel.iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let s2 = scan(again.as_bytes(), "n1").unwrap();
        assert!(closing_releases(&s2.open, &table, 200, 600).is_empty());
    }

    fn rfc3339_of(t: u64) -> String {
        super::super::rfc3339(t)
    }

    #[test]
    fn a_missing_log_has_nothing_open() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            scan_file(&dir.path().join("none.log"), "n1").unwrap(),
            Scan::default()
        );
    }
}

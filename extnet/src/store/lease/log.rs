//! The lease log: an append-only file of JSON lines saying who held which public-facing
//! port block, when (`allocate`, `interim` while the lease is held, `release`). Each append
//! is fsynced; a moved log (logrotate) is followed by a new file.

use super::time::rfc3339;
use super::{Lease, LeaseTable};
use crate::store::fs::{append_line, FsError};
use extnet_policy::Mode;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One record of the lease log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// RFC 3339 UTC.
    pub time: String,
    pub unix: u64,
    /// `allocate`, `interim` (the lease is still held) or `release`.
    pub event: String,
    pub job_id: u32,
    pub user: String,
    pub uid: u32,
    pub node: String,
    pub node_addr: Ipv4Addr,
    /// The node's IPv6 address the job's IPv6 was translated to (into the same ports), when
    /// it was ([`Lease::node_addr6`]); absent otherwise and in logs of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addr6: Option<Ipv6Addr>,
    /// `ipv4`, or `ipv4,ipv6` when the block was also the job's on `node_addr6`.
    pub family: String,
    pub proto: String,
    pub port_first: u16,
    pub port_last: u16,
    pub mark: u32,
    pub mode: Mode,
    pub profile: String,
    /// Why a `release` was written by someone other than the job's epilog: `orphan` (the job
    /// no longer runs on the node, `extnet reconcile`), `reboot` (the node restarted while the
    /// job held the lease). Absent in the epilog's records and in logs of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl LogRecord {
    pub fn new(event: &str, lease: &Lease, node: &str, now: u64) -> LogRecord {
        LogRecord {
            time: rfc3339(now),
            unix: now,
            event: event.to_owned(),
            job_id: lease.job_id,
            user: lease.user.to_string(),
            uid: lease.uid,
            node: node.to_owned(),
            node_addr: lease.node_addr,
            node_addr6: lease.node_addr6,
            family: if lease.node_addr6.is_some() {
                "ipv4,ipv6"
            } else {
                "ipv4"
            }
            .into(),
            proto: if lease.node_addr6.is_some() {
                "tcp,udp,icmp,icmpv6"
            } else {
                "tcp,udp,icmp"
            }
            .into(),
            port_first: lease.port_first,
            port_last: lease.port_last,
            mark: lease.mark,
            mode: lease.mode,
            profile: lease.profile.to_string(),
            reason: None,
        }
    }

    /// The same record with a `reason` (see [`LogRecord::reason`]).
    pub fn with_reason(mut self, reason: &str) -> LogRecord {
        self.reason = Some(reason.to_owned());
        self
    }

    /// The record as one JSON line, without its newline.
    fn line(&self) -> String {
        serde_json::to_string(self).expect("log record serializes")
    }

    /// Appends the record as one JSON line and fsyncs it.
    pub fn append(&self, log: &Path) -> Result<(), FsError> {
        append_line(log, &self.line())
    }

    /// Appends several records with one write and one fsync.
    pub fn append_all(records: &[LogRecord], log: &Path) -> Result<(), FsError> {
        let lines: Vec<String> = records.iter().map(LogRecord::line).collect();
        append_line(log, &lines.join("\n"))
    }
}

impl Lease {
    /// Whether the lease needs an `interim` lease-log record at `now`: `interval` seconds
    /// (`log.interim_secs`, 0 = never) have passed since its last allocate or interim record.
    pub fn interim_due(&self, now: u64, interval: u64) -> bool {
        interval > 0
            && now
                >= self
                    .last_logged
                    .unwrap_or(self.since)
                    .saturating_add(interval)
    }
}

impl LeaseTable {
    /// Appends an `interim` record for every lease that is due at `now` (one write and one
    /// fsync for all of them) and notes the time in those leases. Returns how many were
    /// written. The caller holds the node lock and stores the table afterwards when the count
    /// is not zero; a crash in between repeats the records next time, never loses one.
    pub fn log_interim(&mut self, log: &Path, now: u64, interval: u64) -> Result<usize, FsError> {
        let due: Vec<usize> = (0..self.leases.len())
            .filter(|&i| self.leases[i].interim_due(now, interval))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let records: Vec<LogRecord> = due
            .iter()
            .map(|&i| LogRecord::new("interim", &self.leases[i], &self.node, now))
            .collect();
        LogRecord::append_all(&records, log)?;
        for &i in &due {
            self.leases[i].last_logged = Some(now);
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req};
    use super::*;

    /// The records of the log at `log`, in order.
    fn read_log(log: &Path) -> Vec<LogRecord> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn log_records_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/lease.log");
        let mut t = LeaseTable::empty("n1");
        let (l, _) = t.allocate(&req(9), &pool(), 0).unwrap();
        LogRecord::new("allocate", &l, "n1", 1_700_000_000)
            .append(&log)
            .unwrap();
        LogRecord::new("release", &l, "n1", 1_700_000_060)
            .append(&log)
            .unwrap();
        let lines = read_log(&log);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].time, "2023-11-14T22:13:20Z");
        assert_eq!(lines[1].event, "release");
    }

    #[test]
    fn a_moved_log_is_followed_by_a_new_file_and_a_truncated_one_is_appended_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lease.log");
        let moved = dir.path().join("lease.log.1");
        let mut t = LeaseTable::empty("n1");
        let (l, _) = t.allocate(&req(3), &pool(), 0).unwrap();
        LogRecord::new("allocate", &l, "n1", 10)
            .append(&log)
            .unwrap();
        // logrotate's default: rename, then the next record creates a new file
        std::fs::rename(&log, &moved).unwrap();
        LogRecord::new("release", &l, "n1", 20)
            .append(&log)
            .unwrap();
        let events =
            |p: &Path| -> Vec<String> { read_log(p).into_iter().map(|r| r.event).collect() };
        assert_eq!(events(&moved), ["allocate"]);
        assert_eq!(events(&log), ["release"]);
        // logrotate's copytruncate: the file is emptied in place; appends start at its new end
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        LogRecord::new("interim", &l, "n1", 30)
            .append(&log)
            .unwrap();
        assert_eq!(events(&log), ["interim"]);
        assert!(
            !std::fs::read(&log).unwrap().contains(&0),
            "no hole of zeros before the record"
        );
    }

    #[test]
    fn interim_is_due_an_interval_after_the_last_record_and_never_when_off() {
        let mut t = LeaseTable::empty("n1");
        let (l, _) = t.allocate(&req(1), &pool(), 1000).unwrap();
        assert!(!l.interim_due(1000, 3600), "just allocated");
        assert!(!l.interim_due(4599, 3600));
        assert!(l.interim_due(4600, 3600));
        assert!(!l.interim_due(1_000_000, 0), "0 turns interim records off");
        let logged = Lease {
            last_logged: Some(5000),
            ..l.clone()
        };
        assert!(!logged.interim_due(8599, 3600));
        assert!(logged.interim_due(8600, 3600));
    }

    #[test]
    fn log_interim_writes_due_leases_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("lease.log");
        let path = dir.path().join("leases.table");
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(1), &pool(), 0).unwrap();
        t.allocate(&req(2), &pool(), 50).unwrap();
        assert_eq!(t.log_interim(&log, 99, 100).unwrap(), 0);
        assert!(!log.exists(), "nothing due, nothing written");
        assert_eq!(t.log_interim(&log, 100, 100).unwrap(), 1, "job 1 only");
        assert_eq!(
            t.log_interim(&log, 149, 100).unwrap(),
            0,
            "job 1 was just logged"
        );
        assert_eq!(t.log_interim(&log, 150, 100).unwrap(), 1, "job 2");
        assert_eq!(
            t.log_interim(&log, 400, 100).unwrap(),
            2,
            "both, in one append"
        );
        let recs = read_log(&log);
        let got: Vec<(u32, u64, &str)> = recs
            .iter()
            .map(|r| (r.job_id, r.unix, r.event.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, 100, "interim"),
                (2, 150, "interim"),
                (1, 400, "interim"),
                (2, 400, "interim")
            ]
        );
        assert_eq!(recs[2].port_first, t.lease_of(1).unwrap().port_first);
        // the time of the last record survives a store and load
        t.store(&path).unwrap();
        let t2 = LeaseTable::load(&path, "n1").unwrap();
        assert_eq!(t2.lease_of(2).unwrap().last_logged, Some(400));
    }
}

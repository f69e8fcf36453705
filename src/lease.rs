//! The node's lease table (which job holds which slot and port block) and the append-only
//! lease log (who held which public-facing port block, when).
//!
//! The table is one small JSON file, changed only under the node lock and replaced atomically
//! (temp file, fsync, rename). Released blocks wait out a quarantine before their ports are
//! leased again (RFC 6888 recommends 120 s). A full pool denies new jobs: a running job is
//! never evicted.

use crate::fsutil::{append_line, write_atomic, FsError};
use extnet_policy::{Mode, Pool};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const TABLE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseTable {
    pub version: u32,
    pub node: String,
    pub leases: Vec<Lease>,
    /// Port ranges recently released, not to be leased again before `until`.
    pub quarantine: Vec<Quarantined>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub job_id: u32,
    pub user: String,
    pub uid: u32,
    pub slot: u32,
    pub port_first: u16,
    pub port_last: u16,
    pub mark: u32,
    pub mode: Mode,
    pub profile: String,
    /// The node address the block is on (what the gateway sees before its own NAT).
    pub node_addr: Ipv4Addr,
    /// Unix time the lease was taken.
    pub since: u64,
    /// Unix time of the lease's last `interim` lease-log record (none yet: `since`, the time
    /// of its `allocate` record). Absent from the file until the first interim record, so a
    /// table without one stays readable by earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logged: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantined {
    pub port_first: u16,
    pub port_last: u16,
    pub until: u64,
    pub job_id: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("lease table {path} is corrupt ({detail}); no new external job is granted on this node until an admin repairs it: compare it with `extnet status` and the lease log, then fix or remove it")]
    Corrupt { path: PathBuf, detail: String },
    #[error("lease table {path} belongs to node {found}, not {expected}; check node.state_dir")]
    WrongNode {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("no free port block on node {node} in port pool {pool}: {active} jobs hold its blocks and {quarantined} of its blocks wait out their quarantine; the request is denied (running jobs are never evicted); admins: {grow}")]
    PoolFull {
        node: String,
        /// The pool's name ([`Pool::name`]).
        pool: String,
        /// How to give the pool more blocks ([`Pool::grow_hint`]).
        grow: String,
        active: usize,
        quarantined: usize,
    },
}

/// What the job asks the table for.
#[derive(Debug, Clone)]
pub struct LeaseRequest<'a> {
    pub job_id: u32,
    pub user: &'a str,
    pub uid: u32,
    pub mode: Mode,
    pub profile: &'a str,
    pub fwmark: u32,
    pub node_addr: Ipv4Addr,
}

impl LeaseTable {
    pub fn empty(node: &str) -> LeaseTable {
        LeaseTable {
            version: TABLE_VERSION,
            node: node.to_owned(),
            leases: Vec::new(),
            quarantine: Vec::new(),
        }
    }

    /// Reads the table; a missing file is an empty table, a damaged one an error (fail closed).
    pub fn load(path: &Path, node: &str) -> Result<LeaseTable, LeaseError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LeaseTable::empty(node))
            }
            Err(source) => {
                return Err(FsError::Io {
                    op: "read",
                    path: path.to_owned(),
                    source,
                }
                .into())
            }
        };
        let corrupt = |detail: String| LeaseError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let t: LeaseTable = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if t.version != TABLE_VERSION {
            return Err(corrupt(format!(
                "version {} (this extnet reads {TABLE_VERSION})",
                t.version
            )));
        }
        if t.node != node {
            return Err(LeaseError::WrongNode {
                path: path.to_owned(),
                found: t.node,
                expected: node.to_owned(),
            });
        }
        t.check_consistent().map_err(corrupt)?;
        Ok(t)
    }

    /// No two leases share a job, a slot or a port, and no block is empty. O(n log n): hash
    /// sets for jobs and slots, then blocks sorted by their first port, each checked against
    /// the furthest end seen before it.
    fn check_consistent(&self) -> Result<(), String> {
        let n = self.leases.len();
        let mut jobs = std::collections::HashSet::with_capacity(n);
        let mut slots = std::collections::HashMap::with_capacity(n);
        for a in &self.leases {
            if a.port_first > a.port_last {
                return Err(format!("job {} has an empty port block", a.job_id));
            }
            if !jobs.insert(a.job_id) {
                return Err(format!("job {} holds two leases", a.job_id));
            }
            if let Some(b) = slots.insert(a.slot, a.job_id) {
                return Err(format!("jobs {b} and {} share slot {}", a.job_id, a.slot));
            }
        }
        let mut by_port: Vec<&Lease> = self.leases.iter().collect();
        by_port.sort_unstable_by_key(|l| l.port_first);
        let mut furthest: Option<&Lease> = None;
        for a in by_port {
            if let Some(b) = furthest {
                if a.port_first <= b.port_last {
                    return Err(format!(
                        "jobs {} and {} share ports ({}-{} and {}-{})",
                        b.job_id, a.job_id, b.port_first, b.port_last, a.port_first, a.port_last
                    ));
                }
            }
            if furthest.is_none_or(|b| a.port_last > b.port_last) {
                furthest = Some(a);
            }
        }
        Ok(())
    }

    /// Writes the table (temp file, fsync, rename): one lease or quarantine entry per line,
    /// compact, so that a table of 1000 leases stays small to write and easy to read.
    pub fn store(&self, path: &Path) -> Result<(), LeaseError> {
        write_atomic(path, &self.to_text(), 0o600)?;
        Ok(())
    }

    fn to_text(&self) -> Vec<u8> {
        fn list<T: Serialize>(out: &mut Vec<u8>, items: &[T]) {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"\n  " } else { b",\n  " });
                serde_json::to_writer(&mut *out, item).expect("lease table serializes");
            }
            if !items.is_empty() {
                out.push(b'\n');
            }
            out.push(b']');
        }
        let mut out = Vec::with_capacity(128 + 200 * (self.leases.len() + self.quarantine.len()));
        out.extend_from_slice(format!("{{\n\"version\": {},\n\"node\": ", self.version).as_bytes());
        serde_json::to_writer(&mut out, &self.node).expect("lease table serializes");
        out.extend_from_slice(b",\n\"leases\": ");
        list(&mut out, &self.leases);
        out.extend_from_slice(b",\n\"quarantine\": ");
        list(&mut out, &self.quarantine);
        out.extend_from_slice(b"\n}\n");
        out
    }

    pub fn lease_of(&self, job_id: u32) -> Option<&Lease> {
        self.leases.iter().find(|l| l.job_id == job_id)
    }

    /// Leases a block of `pool` (the pool of the job's profile, [`Policy::pool_of_profile`])
    /// for the job: the job's existing lease if it has one (a prolog run twice), else the
    /// pool's lowest slot that is not leased and whose ports are neither leased nor in
    /// quarantine.
    ///
    /// [`Policy::pool_of_profile`]: extnet_policy::Policy::pool_of_profile
    pub fn allocate(
        &mut self,
        req: &LeaseRequest,
        pool: &Pool,
        now: u64,
    ) -> Result<(Lease, bool), LeaseError> {
        if let Some(l) = self.lease_of(req.job_id) {
            return Ok((l.clone(), false));
        }
        self.quarantine.retain(|q| q.until > now);
        // O(n log n) in the leases and quarantined blocks, then O(log n) per slot tried
        let leased: std::collections::HashSet<u32> = self.leases.iter().map(|l| l.slot).collect();
        let busy = BusyPorts::new(
            self.leases
                .iter()
                .map(|l| (l.port_first, l.port_last))
                .chain(self.quarantine.iter().map(|q| (q.port_first, q.port_last))),
        );
        for slot in pool.slots() {
            let Some((lo, hi)) = pool.block(slot) else {
                continue;
            };
            if !leased.contains(&slot) && !busy.overlaps(lo, hi) {
                let lease = Lease {
                    job_id: req.job_id,
                    user: req.user.to_owned(),
                    uid: req.uid,
                    slot,
                    port_first: lo,
                    port_last: hi,
                    mark: req.fwmark | slot,
                    mode: req.mode,
                    profile: req.profile.to_owned(),
                    node_addr: req.node_addr,
                    since: now,
                    last_logged: None,
                };
                self.leases.push(lease.clone());
                return Ok((lease, true));
            }
        }
        let mine = |lo: u16, hi: u16| pool.ports.contains(lo) || pool.ports.contains(hi);
        Err(LeaseError::PoolFull {
            node: self.node.clone(),
            pool: pool.name().to_owned(),
            grow: pool.grow_hint(),
            active: self
                .leases
                .iter()
                .filter(|l| pool.slots().contains(&l.slot) || mine(l.port_first, l.port_last))
                .count(),
            quarantined: self
                .quarantine
                .iter()
                .filter(|q| mine(q.port_first, q.port_last))
                .count(),
        })
    }

    /// Ends the job's lease; its ports wait `quarantine_secs` before reuse. `None` when the job
    /// held none (an epilog run twice, or after a prolog that granted nothing).
    pub fn release(&mut self, job_id: u32, now: u64, quarantine_secs: u64) -> Option<Lease> {
        let i = self.leases.iter().position(|l| l.job_id == job_id)?;
        let l = self.leases.remove(i);
        self.quarantine.retain(|q| q.until > now);
        if quarantine_secs > 0 {
            self.quarantine.push(Quarantined {
                port_first: l.port_first,
                port_last: l.port_last,
                until: now + quarantine_secs,
                job_id,
            });
        }
        Some(l)
    }

    /// Drops a lease that never carried traffic (a prolog that failed before any task ran):
    /// no quarantine is needed.
    pub fn forget(&mut self, job_id: u32) -> Option<Lease> {
        let i = self.leases.iter().position(|l| l.job_id == job_id)?;
        Some(self.leases.remove(i))
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

/// Port ranges in use (leased or in quarantine), sorted by first port, with the furthest end
/// reached so far: "does `lo..=hi` overlap any of them" is one binary search.
struct BusyPorts {
    firsts: Vec<u16>,
    max_last: Vec<u16>,
}

impl BusyPorts {
    fn new(ranges: impl Iterator<Item = (u16, u16)>) -> BusyPorts {
        let mut v: Vec<(u16, u16)> = ranges.collect();
        v.sort_unstable();
        let mut max_last = Vec::with_capacity(v.len());
        let mut m = 0u16;
        for &(_, last) in &v {
            m = m.max(last);
            max_last.push(m);
        }
        BusyPorts {
            firsts: v.into_iter().map(|(f, _)| f).collect(),
            max_last,
        }
    }

    fn overlaps(&self, lo: u16, hi: u16) -> bool {
        // ranges starting at or before `hi`; one of them overlaps when the furthest end
        // among them reaches `lo`
        let n = self.firsts.partition_point(|&f| f <= hi);
        n > 0 && self.max_last[n - 1] >= lo
    }
}

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
    pub family: String,
    pub proto: String,
    pub port_first: u16,
    pub port_last: u16,
    pub mark: u32,
    pub mode: Mode,
    pub profile: String,
}

impl LogRecord {
    pub fn new(event: &str, lease: &Lease, node: &str, now: u64) -> LogRecord {
        LogRecord {
            time: rfc3339(now),
            unix: now,
            event: event.to_owned(),
            job_id: lease.job_id,
            user: lease.user.clone(),
            uid: lease.uid,
            node: node.to_owned(),
            node_addr: lease.node_addr,
            family: "ipv4".into(),
            proto: "tcp,udp".into(),
            port_first: lease.port_first,
            port_last: lease.port_last,
            mark: lease.mark,
            mode: lease.mode,
            profile: lease.profile.clone(),
        }
    }

    /// Appends the record as one JSON line and fsyncs it.
    pub fn append(&self, log: &Path) -> Result<(), FsError> {
        append_line(
            log,
            &serde_json::to_string(self).expect("log record serializes"),
        )
    }

    /// Appends several records with one write and one fsync.
    pub fn append_all(records: &[LogRecord], log: &Path) -> Result<(), FsError> {
        let lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).expect("log record serializes"))
            .collect();
        append_line(log, &lines.join("\n"))
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use extnet_policy::PortPool;

    fn pool() -> Pool {
        Pool {
            profile: None,
            ports: PortPool {
                first: 20000,
                last: 20767,
                block_size: 256,
                quarantine_secs: 120,
            },
            first_slot: 0,
            gateway: Ipv4Addr::new(10, 0, 0, 254),
            route_table: 7700,
        }
    }

    /// A profile's own pool after `pool()`: slots 3 and 4, blocks of 1024.
    fn bulk() -> Pool {
        Pool {
            profile: Some("bulk".into()),
            ports: PortPool {
                first: 30000,
                last: 32047,
                block_size: 1024,
                quarantine_secs: 120,
            },
            first_slot: 3,
            gateway: Ipv4Addr::new(10, 0, 0, 253),
            route_table: 7701,
        }
    }

    fn req(job_id: u32) -> LeaseRequest<'static> {
        LeaseRequest {
            job_id,
            user: "alice",
            uid: 1000,
            mode: Mode::Cgroup,
            profile: "default",
            fwmark: 0x10000,
            node_addr: Ipv4Addr::new(10, 0, 0, 1),
        }
    }

    #[test]
    fn allocates_distinct_blocks_and_is_idempotent_per_job() {
        let mut t = LeaseTable::empty("n1");
        let (a, new_a) = t.allocate(&req(1), &pool(), 100).unwrap();
        let (b, _) = t.allocate(&req(2), &pool(), 100).unwrap();
        let (a2, new_a2) = t.allocate(&req(1), &pool(), 100).unwrap();
        assert!(new_a && !new_a2);
        assert_eq!(a, a2);
        assert_eq!(
            (a.slot, a.port_first, a.port_last, a.mark),
            (0, 20000, 20255, 0x10000)
        );
        assert_eq!((b.slot, b.port_first), (1, 20256));
    }

    #[test]
    fn full_pool_denies_and_never_evicts() {
        let mut t = LeaseTable::empty("n1");
        for j in 1..=3 {
            t.allocate(&req(j), &pool(), 0).unwrap();
        }
        let e = t.allocate(&req(4), &pool(), 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("no free port block on node n1 in port pool [ports]: 3 jobs"),
            "{e}"
        );
        assert_eq!(t.leases.len(), 3);
    }

    #[test]
    fn released_blocks_wait_out_the_quarantine() {
        let mut t = LeaseTable::empty("n1");
        for j in 1..=3 {
            t.allocate(&req(j), &pool(), 0).unwrap();
        }
        assert_eq!(t.release(2, 10, 120).unwrap().slot, 1);
        assert!(t.release(2, 10, 120).is_none(), "release is idempotent");
        assert!(matches!(
            t.allocate(&req(4), &pool(), 129),
            Err(LeaseError::PoolFull { quarantined: 1, .. })
        ));
        let (l, _) = t.allocate(&req(4), &pool(), 130).unwrap();
        assert_eq!(l.slot, 1);
        assert!(t.quarantine.is_empty());
    }

    #[test]
    fn quarantine_is_by_ports_so_a_new_geometry_respects_it() {
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(1), &pool(), 0).unwrap();
        t.release(1, 0, 120);
        let small = Pool {
            ports: PortPool {
                block_size: 128,
                ..pool().ports
            },
            ..pool()
        };
        let (l, _) = t.allocate(&req(2), &small, 1).unwrap();
        assert_eq!(
            l.port_first, 20256,
            "ports 20000-20255 are still in quarantine"
        );
    }

    #[test]
    fn each_pool_leases_only_its_own_slots_and_blocks() {
        let mut t = LeaseTable::empty("n1");
        let (a, _) = t.allocate(&req(1), &bulk(), 0).unwrap();
        assert_eq!(
            (a.slot, a.port_first, a.port_last, a.mark),
            (3, 30000, 31023, 0x10003)
        );
        let (b, _) = t.allocate(&req(2), &pool(), 0).unwrap();
        assert_eq!((b.slot, b.port_first, b.port_last), (0, 20000, 20255));
        let (c, _) = t.allocate(&req(3), &bulk(), 0).unwrap();
        assert_eq!((c.slot, c.port_first, c.port_last), (4, 31024, 32047));
        // the own pool is full: its jobs are denied, naming the pool; the default pool is not
        let e = t.allocate(&req(4), &bulk(), 0).unwrap_err();
        assert!(
            matches!(&e, LeaseError::PoolFull { pool, active: 2, quarantined: 0, .. } if pool == "bulk"),
            "{e}"
        );
        assert!(
            e.to_string().contains("in port pool bulk")
                && e.to_string().contains("profile \"bulk\""),
            "{e}"
        );
        let (d, _) = t.allocate(&req(5), &pool(), 0).unwrap();
        assert_eq!(d.slot, 1);
        // a released block of the own pool waits out the quarantine, by its ports
        t.release(1, 0, 120);
        assert!(matches!(
            t.allocate(&req(6), &bulk(), 1),
            Err(LeaseError::PoolFull {
                quarantined: 1,
                active: 1,
                ..
            })
        ));
        assert_eq!(t.allocate(&req(6), &bulk(), 120).unwrap().0.slot, 3);
    }

    #[test]
    fn store_and_load_round_trip_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(7), &pool(), 5).unwrap();
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        assert!(matches!(
            LeaseTable::load(&path, "n2"),
            Err(LeaseError::WrongNode { .. })
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let e = LeaseTable::load(&path, "n1").unwrap_err();
        assert!(e.to_string().contains("is corrupt"), "{e}");
        let mut dup = t.clone();
        dup.leases.push(Lease {
            job_id: 8,
            ..t.leases[0].clone()
        });
        let damaged = |t: &LeaseTable| {
            std::fs::write(&path, serde_json::to_vec(t).unwrap()).unwrap();
            LeaseTable::load(&path, "n1").unwrap_err().to_string()
        };
        assert!(
            damaged(&dup).contains("jobs 7 and 8 share slot 0"),
            "{dup:?}"
        );
        // another slot, but ports that overlap the first lease's block
        let mut ports = dup.clone();
        ports.leases[1].slot = 1;
        ports.leases[1].port_first = t.leases[0].port_last;
        ports.leases[1].port_last = t.leases[0].port_last + 10;
        let e = damaged(&ports);
        assert!(e.contains("jobs 7 and 8 share ports"), "{e}");
        let mut twice = ports.clone();
        twice.leases[1].job_id = 7;
        twice.leases[1].port_first = 30000;
        twice.leases[1].port_last = 30010;
        let e = damaged(&twice);
        assert!(e.contains("job 7 holds two leases"), "{e}");
        let mut empty = t.clone();
        empty.leases[0].port_first = empty.leases[0].port_last + 1;
        let e = damaged(&empty);
        assert!(e.contains("job 7 has an empty port block"), "{e}");
    }

    #[test]
    fn the_table_is_written_one_entry_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let mut t = LeaseTable::empty("n1");
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        for j in 1..=3 {
            t.allocate(&req(j), &pool(), 5).unwrap();
        }
        t.release(2, 5, 120);
        t.store(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        let lines: Vec<&str> = text.lines().collect();
        let entries = |key: &str| lines.iter().filter(|l| l.contains(key)).count();
        assert_eq!(
            entries("\"job_id\":1,") + entries("\"job_id\":3,"),
            2,
            "{text}"
        );
        assert_eq!(entries("\"until\":"), 1, "{text}");
        for l in lines.iter().filter(|l| l.starts_with("  {")) {
            let v: serde_json::Value = serde_json::from_str(l.trim_end_matches(',')).unwrap();
            assert!(v.is_object(), "{l}");
        }
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
        let lines: Vec<LogRecord> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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
        let events = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<LogRecord>(line).unwrap().event)
                .collect()
        };
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
        let path = dir.path().join("leases.json");
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
        let recs: Vec<LogRecord> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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

    #[test]
    fn a_table_written_before_interim_records_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.json");
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(1), &pool(), 0).unwrap();
        let mut v = serde_json::to_value(&t).unwrap();
        assert!(
            v["leases"][0].get("last_logged").is_none(),
            "not written until the first interim record"
        );
        v["leases"][0]
            .as_object_mut()
            .unwrap()
            .remove("last_logged");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_305_600), "2026-11-22T00:00:00Z");
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use extnet_policy::PortPool;
    use std::time::Instant;

    /// What the lease table costs the prolog and epilog at 1, 100 and 1000 active leases:
    /// load, allocate, store (temp file, fsync, rename), release.
    /// `cargo test --release --lib lease::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints timings"]
    fn bench_table_at_active_leases() {
        let pool = Pool {
            profile: None,
            ports: PortPool {
                first: 1024,
                last: 65535,
                block_size: 32,
                quarantine_secs: 120,
            },
            first_slot: 0,
            gateway: Ipv4Addr::new(10, 0, 0, 254),
            route_table: 7700,
        };
        let req = |job_id, user, uid, mode| LeaseRequest {
            job_id,
            user,
            uid,
            mode,
            profile: "default",
            fwmark: 0x10000,
            node_addr: Ipv4Addr::new(10, 0, 0, 1),
        };
        let dir = std::env::temp_dir().join(format!("extnet-lease-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leases.json");
        for active in [1u32, 100, 1000] {
            let mut t = LeaseTable::empty("n1");
            for j in 0..active {
                t.allocate(&req(1_000_000 + j, "alice", 1000, Mode::Cgroup), &pool, 100)
                    .unwrap();
            }
            // half of them released into quarantine, as on a busy node
            for j in 0..active / 2 {
                t.release(1_000_000 + 2 * j, 100, 120);
                t.allocate(&req(2_000_000 + j, "alice", 1000, Mode::Cgroup), &pool, 100)
                    .unwrap();
            }
            t.store(&path).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            let (mut load, mut alloc, mut store, mut release) = (vec![], vec![], vec![], vec![]);
            for i in 0..50u32 {
                let t0 = Instant::now();
                let mut t = LeaseTable::load(&path, "n1").unwrap();
                let t1 = Instant::now();
                t.allocate(&req(5_000_000 + i, "bob", 1001, Mode::Netns), &pool, 110)
                    .unwrap();
                let t2 = Instant::now();
                t.store(&path).unwrap();
                let t3 = Instant::now();
                t.release(5_000_000 + i, 110, 0);
                t.store(&path).unwrap();
                let t4 = Instant::now();
                load.push(t1 - t0);
                alloc.push(t2 - t1);
                store.push(t3 - t2);
                release.push(t4 - t3);
            }
            let med = |v: &mut Vec<std::time::Duration>| {
                v.sort();
                v[v.len() / 2]
            };
            println!(
                "{active:>5} active ({} in quarantine, file {size} bytes): load {:?}, allocate {:?}, store {:?}, release+store {:?}",
                active / 2,
                med(&mut load),
                med(&mut alloc),
                med(&mut store),
                med(&mut release)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

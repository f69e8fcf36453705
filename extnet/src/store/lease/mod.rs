//! The node's lease table: which job holds which slot and port block, and which released
//! blocks still wait out their quarantine; and the append-only lease log (who held which
//! public-facing port block, when).
//!
//! The table is one file of fixed-size records, one per slot (`<state_dir>/leases.table`),
//! changed only under the node lock. A change rewrites only the records that changed, in
//! place, then `fdatasync`s: a job's lease or release costs one 256-byte record and one sync
//! whatever the number of active jobs (the earlier JSON table was rewritten whole, temp
//! file + fsync + rename, for every job, so each job paid for all the others). A record
//! never straddles a 512-byte sector and carries a CRC-32, so a torn write is detected (and
//! the table then grants nothing) rather than read as a lease; records are independent of
//! each other, so a crash between two record writes leaves a valid table. Creating the file,
//! growing it (64 slots at a time) and migrating a version-1 `leases.json` still go through
//! temp file, fsync, rename.
//!
//! Released blocks wait out a quarantine before their ports are leased again (RFC 6888
//! recommends 120 s): the released slot's record keeps the block's ports and the end of the
//! quarantine. A full pool denies new jobs: a running job is never evicted.
//!
//! This file holds the model and what a job does to it (allocate, release, forget); the
//! rest, one idea a file:
//!
//! - `format.rs`: the file format (header, 256-byte records, CRC), record encode and decode.
//! - `load.rs`: reading the file, fail closed (with the consistency check); `store.rs`:
//!   writing it, in place or whole.
//! - `image.rs`: the file's bytes as loaded (a shared read-only mapping).
//! - `legacy.rs`: the version-1 JSON table and its migration.
//! - `dump.rs`: dump and restore, for an admin repairing a damaged table.
//! - `ports.rs`: the bit-per-port map behind allocation and the consistency check.
//! - `log.rs`: the lease log; `time.rs`: Unix time and its RFC 3339 form.
//! - `unreleased.rs`: allocations the log still calls held that nothing on the node holds
//!   (after a reboot, or an epilog that never ran), and the `release` records that end them.

mod dump;
mod format;
mod image;
mod legacy;
mod load;
mod log;
mod ports;
mod store;
mod time;
pub mod unreleased;

#[cfg(test)]
mod fixtures;

pub use compact_str::CompactString;
pub use dump::{dump, DumpEntry};
pub use format::TABLE_VERSION;
pub use legacy::{legacy_path, LEGACY_VERSION};
pub use log::LogRecord;
pub use time::{now, parse_time, rfc3339};

use crate::store::fs::FsError;
use extnet_policy::{Mode, Pool};
use image::Image;
use ports::PortMap;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The in-memory table. `leases` and `quarantine` may be changed freely under the node lock;
/// [`LeaseTable::store`] writes the records that differ from the file.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    pub node: String,
    pub leases: Vec<Lease>,
    /// Port ranges recently released, not to be leased again before `until`.
    pub quarantine: Vec<Quarantined>,
    /// The file's bytes as loaded or last stored; `None` when the file does not exist yet in
    /// this format (then [`LeaseTable::store`] writes it whole).
    on_disk: Option<Image>,
    /// The slots whose records in `on_disk` are not blank.
    held_on_disk: Vec<u32>,
}

/// Same node, leases and quarantine, in any order (a loaded table lists them by slot).
impl PartialEq for LeaseTable {
    fn eq(&self, o: &Self) -> bool {
        fn sorted<T: Clone>(v: &[T], key: impl Fn(&T) -> u32) -> Vec<T> {
            let mut v = v.to_vec();
            v.sort_by_key(key);
            v
        }
        self.node == o.node
            && sorted(&self.leases, |l| l.slot) == sorted(&o.leases, |l| l.slot)
            && sorted(&self.quarantine, |q| q.slot) == sorted(&o.quarantine, |q| q.slot)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub job_id: u32,
    /// Names are inline up to 24 bytes ([`CompactString`]): loading a table allocates
    /// nothing per lease for them.
    pub user: CompactString,
    pub uid: u32,
    pub slot: u32,
    pub port_first: u16,
    pub port_last: u16,
    pub mark: u32,
    pub mode: Mode,
    pub profile: CompactString,
    /// The node address the block is on (what the gateway sees before its own NAT).
    pub node_addr: Ipv4Addr,
    /// The node's IPv6 address the job's IPv6 is translated to, into the same block: set
    /// when the job's IPv6 goes out (cgroup mode, a profile with IPv6, `node.gateway6` and an
    /// address on `node.interface`); absent otherwise and in leases of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addr6: Option<Ipv6Addr>,
    /// Unix time the lease was taken.
    pub since: u64,
    /// Unix time of the lease's last `interim` lease-log record (none yet: `since`, the time
    /// of its `allocate` record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_logged: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantined {
    /// The slot whose record holds the entry: the released lease's slot (after a migration
    /// from a version-1 table, any slot that was free).
    pub slot: u32,
    pub port_first: u16,
    pub port_last: u16,
    pub until: u64,
    pub job_id: u32,
    /// The user whose job released the block: only that user's next job may take it before
    /// `until` (none: an entry written before extnet recorded it, which nobody takes early).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("lease table {path} is corrupt ({detail}); no new external job is granted on this node until an admin repairs it: `extnet lease-table dump` shows what it still holds (compare with the lease log); once the node runs no external job, move the file away, or edit the dump and load it with `extnet lease-table restore`")]
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
    #[error("{what} is {len} bytes long; the lease table holds at most {max}: {fix}")]
    TooLong {
        what: String,
        len: usize,
        max: usize,
        fix: &'static str,
    },
}

impl LeaseError {
    fn corrupt(path: &Path, detail: String) -> LeaseError {
        LeaseError::Corrupt {
            path: path.to_owned(),
            detail,
        }
    }

    fn wrong_node(path: &Path, found: String, expected: &str) -> LeaseError {
        LeaseError::WrongNode {
            path: path.to_owned(),
            found,
            expected: expected.to_owned(),
        }
    }
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
    /// See [`Lease::node_addr6`].
    pub node_addr6: Option<Ipv6Addr>,
}

impl LeaseTable {
    pub fn empty(node: &str) -> LeaseTable {
        LeaseTable {
            node: node.to_owned(),
            leases: Vec::new(),
            quarantine: Vec::new(),
            on_disk: None,
            held_on_disk: Vec::new(),
        }
    }

    pub fn lease_of(&self, job_id: u32) -> Option<&Lease> {
        self.leases.iter().find(|l| l.job_id == job_id)
    }

    /// Leases a block of `pool` (the pool of the job's profile, [`Policy::pool_of_profile`])
    /// for the job: the job's existing lease if it has one (a prolog run twice); else a block
    /// of the pool that the same user released and that still waits out its quarantine (the
    /// one released longest ago); else the pool's lowest slot whose record is free and whose
    /// ports are neither leased nor in quarantine.
    ///
    /// A user's own quarantined blocks come first so that one user's many short jobs cycle
    /// through that user's blocks instead of putting the whole pool into quarantine and
    /// starving everyone else. The quarantine protects traceability between users (a public
    /// port never leads to another user's job within it); between jobs of the same user the
    /// lease log's intervals tell the jobs apart.
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
        format::check_names(req.job_id, req.user, req.profile)?;
        self.quarantine.retain(|q| q.until > now);
        if let Some(lease) = self.reuse_own_quarantine(req, pool, now) {
            return Ok((lease, true));
        }
        // O(n) in the leases and quarantined blocks (a flag per slot, a bit per port), then
        // O(1) per slot tried
        let mut taken = vec![false; pool.slots().end as usize];
        let mut busy = PortMap::new();
        for (s, lo, hi) in self.held() {
            if let Some(t) = taken.get_mut(s as usize) {
                *t = true;
            }
            busy.mark(lo, hi);
        }
        for slot in pool.slots() {
            let Some((lo, hi)) = pool.block(slot) else {
                continue;
            };
            if !taken[slot as usize] && !busy.overlaps(lo, hi) {
                return Ok((self.take(req, slot, (lo, hi), now), true));
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

    /// The lease of `slot`'s block for the job, added to the table.
    fn take(&mut self, req: &LeaseRequest, slot: u32, (lo, hi): (u16, u16), now: u64) -> Lease {
        let lease = Lease {
            job_id: req.job_id,
            user: req.user.into(),
            uid: req.uid,
            slot,
            port_first: lo,
            port_last: hi,
            mark: req.fwmark | slot,
            mode: req.mode,
            profile: req.profile.into(),
            node_addr: req.node_addr,
            node_addr6: req.node_addr6,
            since: now,
            last_logged: None,
        };
        self.leases.push(lease.clone());
        lease
    }

    /// The job's lease of a block of `pool` that the same user released and that still waits
    /// out its quarantine, if there is one: the entry released first (ends first) goes, its
    /// slot is leased. Only an entry that is exactly the slot's block under today's policy is
    /// taken (after a policy change an old entry just waits its quarantine out).
    fn reuse_own_quarantine(&mut self, req: &LeaseRequest, pool: &Pool, now: u64) -> Option<Lease> {
        let i = self
            .quarantine
            .iter()
            .enumerate()
            .filter(|(_, q)| q.uid == Some(req.uid) && q.until > now)
            .filter(|(_, q)| {
                pool.slots().contains(&q.slot)
                    && pool.block(q.slot) == Some((q.port_first, q.port_last))
            })
            .filter(|(_, q)| !self.leases.iter().any(|l| l.slot == q.slot))
            .min_by_key(|(_, q)| (q.until, q.slot))
            .map(|(i, _)| i)?;
        let q = self.quarantine.swap_remove(i);
        Some(self.take(req, q.slot, (q.port_first, q.port_last), now))
    }

    /// Ends the job's lease; its ports wait `quarantine_secs` before reuse. `None` when the job
    /// held none (an epilog run twice, or after a prolog that granted nothing).
    pub fn release(&mut self, job_id: u32, now: u64, quarantine_secs: u64) -> Option<Lease> {
        let l = self.forget(job_id)?;
        self.quarantine.retain(|q| q.until > now);
        if quarantine_secs > 0 {
            self.quarantine.push(Quarantined {
                slot: l.slot,
                port_first: l.port_first,
                port_last: l.port_last,
                until: now + quarantine_secs,
                job_id,
                uid: Some(l.uid),
            });
        }
        Some(l)
    }

    /// Drops a lease that never carried traffic (a prolog that failed before any task ran):
    /// no quarantine is needed.
    pub fn forget(&mut self, job_id: u32) -> Option<Lease> {
        let i = self.leases.iter().position(|l| l.job_id == job_id)?;
        Some(self.leases.swap_remove(i))
    }

    /// The slot and ports of every entry, leases first, then blocks in quarantine.
    fn held(&self) -> impl Iterator<Item = (u32, u16, u16)> + '_ {
        let leases = self
            .leases
            .iter()
            .map(|l| (l.slot, l.port_first, l.port_last));
        let quarantine = self
            .quarantine
            .iter()
            .map(|q| (q.slot, q.port_first, q.port_last));
        leases.chain(quarantine)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{bulk, pool, req, table_file};
    use super::*;
    use extnet_policy::PortPool;

    /// The default pool with blocks of 128 ports: a new geometry.
    fn small_blocks() -> Pool {
        Pool {
            ports: PortPool {
                block_size: 128,
                ..pool().ports
            },
            ..pool()
        }
    }

    /// Job `job_id`'s request as bob (uid 2000), not alice.
    fn bob(job_id: u32) -> LeaseRequest<'static> {
        LeaseRequest {
            user: "bob",
            uid: 2000,
            ..req(job_id)
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
            t.allocate(&bob(4), &pool(), 129),
            Err(LeaseError::PoolFull { quarantined: 1, .. })
        ));
        let (l, _) = t.allocate(&bob(4), &pool(), 130).unwrap();
        assert_eq!(l.slot, 1);
        assert!(t.quarantine.is_empty());
    }

    #[test]
    fn a_user_takes_back_their_own_quarantined_block_first() {
        let mut t = LeaseTable::empty("n1");
        // alice's jobs 1 and 2 end, 2 first; bob holds slot 2
        t.allocate(&req(1), &pool(), 0).unwrap();
        t.allocate(&req(2), &pool(), 0).unwrap();
        t.allocate(&bob(3), &pool(), 0).unwrap();
        t.release(2, 5, 120);
        t.release(1, 6, 120);
        assert_eq!(t.quarantine[0].uid, Some(1000));
        // bob may not take alice's blocks before their quarantine ends
        assert!(matches!(
            t.allocate(&bob(4), &pool(), 10),
            Err(LeaseError::PoolFull { quarantined: 2, .. })
        ));
        // alice gets the block she released first (job 2's, slot 1), then the other one
        let (a, new) = t.allocate(&req(5), &pool(), 10).unwrap();
        assert!(new);
        assert_eq!((a.slot, a.port_first, a.job_id, a.since), (1, 20256, 5, 10));
        assert_eq!(t.quarantine.len(), 1);
        assert_eq!(t.allocate(&req(6), &pool(), 10).unwrap().0.slot, 0);
        assert!(t.quarantine.is_empty());
        // an entry of unknown owner (an older table) is nobody's to take early
        t.release(6, 11, 120);
        t.quarantine[0].uid = None;
        assert!(t.allocate(&req(7), &pool(), 12).is_err());
    }

    #[test]
    fn one_users_many_short_jobs_never_fill_the_pool_for_others() {
        // the starvation of issue 16: one user runs job after job (quarantine 300 s); with
        // the user's own blocks taken back first, the user never holds more blocks than
        // jobs at once, and another user still gets a block
        let mut t = LeaseTable::empty("n1");
        for j in 1..=40 {
            let now = u64::from(j) / 5;
            t.allocate(&req(j), &pool(), now).unwrap();
            t.release(j, now, 300);
        }
        assert_eq!(t.quarantine.len(), 1, "{:?}", t.quarantine);
        let (b, _) = t.allocate(&bob(41), &pool(), 8).unwrap();
        assert_ne!(b.slot, t.quarantine[0].slot);
    }

    #[test]
    fn an_own_block_of_another_geometry_waits_out_its_quarantine() {
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(1), &pool(), 0).unwrap();
        t.release(1, 0, 120);
        let small = small_blocks();
        // slot 0 is 20000-20127 now: not the quarantined block, which keeps its ports
        let (l, _) = t.allocate(&req(2), &small, 1).unwrap();
        assert_eq!(l.port_first, 20256);
        assert_eq!(t.quarantine.len(), 1);
    }

    #[test]
    fn quarantine_is_by_ports_so_a_new_geometry_respects_it() {
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(1), &pool(), 0).unwrap();
        t.release(1, 0, 120);
        let small = small_blocks();
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
            t.allocate(&bob(6), &bulk(), 1),
            Err(LeaseError::PoolFull {
                quarantined: 1,
                active: 1,
                ..
            })
        ));
        assert_eq!(t.allocate(&bob(6), &bulk(), 120).unwrap().0.slot, 3);
    }

    #[test]
    fn names_longer_than_a_record_holds_are_denied_not_cut() {
        let mut t = LeaseTable::empty("n1");
        let long = "u".repeat(65);
        let e = t
            .allocate(
                &LeaseRequest {
                    user: &long,
                    ..req(1)
                },
                &pool(),
                0,
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                LeaseError::TooLong {
                    len: 65,
                    max: 64,
                    ..
                }
            ),
            "{e}"
        );
        assert!(t.leases.is_empty());
        let name = "u".repeat(64);
        let (l, _) = t
            .allocate(
                &LeaseRequest {
                    user: &name,
                    ..req(1)
                },
                &pool(),
                0,
            )
            .unwrap();
        let (_dir, path) = table_file();
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap().lease_of(1), Some(&l));
    }
}

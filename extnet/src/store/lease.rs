//! The node's lease table (which job holds which slot and port block) and the append-only
//! lease log (who held which public-facing port block, when).
//!
//! The table is one file of fixed-size records, one per slot (`<state_dir>/leases.table`,
//! format below), changed only under the node lock. A change rewrites only the records that
//! changed, in place, then `fdatasync`s: a job's lease or release costs one 256-byte record
//! and one sync whatever the number of active jobs (the earlier JSON table was rewritten whole,
//! temp file + fsync + rename, for every job: 1.5 ms more at 1000 active jobs, measured). A
//! record never straddles a 512-byte sector and carries a CRC-32, so a torn write is detected
//! (and the table then grants nothing) rather than read as a lease; records are independent of
//! each other, so a crash between two record writes leaves a valid table. Creating the file,
//! growing it (64 slots at a time) and migrating a version-1 `leases.json` still go through
//! temp file, fsync, rename.
//!
//! Released blocks wait out a quarantine before their ports are leased again (RFC 6888
//! recommends 120 s): the released slot's record keeps the block's ports and the end of the
//! quarantine. A full pool denies new jobs: a running job is never evicted.

use crate::store::fs::{append_line, write_atomic, FsError};
pub use compact_str::CompactString;
use extnet_policy::{Mode, Pool};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The version of the table's file format.
pub const TABLE_VERSION: u32 = 2;
/// The JSON table of earlier versions (`leases.json`), read once and migrated.
pub const LEGACY_VERSION: u32 = 1;

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
    /// Names are inline up to 24 bytes ([`CompactString`]): loading 1000 leases allocates
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

/// The file format (version 2), all integers little-endian.
///
/// Header, 512 bytes at offset 0: magic `EXTNETLT` (8), version u32, record size u32 (256),
/// slots u32 (the number of records), node name length u16 and up to 128 bytes of node name,
/// zeros, CRC-32 (IEEE) of bytes 0..508 at 508.
///
/// Record of slot `s`, 256 bytes at `512 + 256 * s`: state u8 (0 free, 1 lease,
/// 2 quarantine), mode u8 (0 cgroup, 1 netns), user length u8, profile length u8, job id u32,
/// uid u32, slot u32 (= `s`), first port u16, last port u16, mark u32, node address 4 bytes,
/// flags u32 (bit 0: `last_logged` is set), since u64, last_logged u64, quarantine end u64,
/// user 64 bytes, profile 64 bytes, zeros, CRC-32 of bytes 0..252 at 252. A free record is
/// all zeros.
mod disk {
    pub const MAGIC: &[u8; 8] = b"EXTNETLT";
    pub const HEADER: usize = 512;
    pub const RECORD: usize = 256;
    pub const NODE_MAX: usize = 128;
    pub const USER_MAX: usize = 64;
    pub const PROFILE_MAX: usize = 64;
    /// The file grows by this many slots at a time (each growth rewrites it whole).
    pub const GROW: usize = 64;
    pub const FREE: u8 = 0;
    pub const LEASE: u8 = 1;
    pub const QUARANTINE: u8 = 2;

    /// CRC-32 (IEEE 802.3, as zlib's `crc32`).
    pub fn crc32(data: &[u8]) -> u32 {
        crc32fast::hash(data)
    }

    pub fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }
    pub fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
    }
    pub fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
    }
    pub fn put(b: &mut [u8], o: usize, v: &[u8]) {
        b[o..o + v.len()].copy_from_slice(v);
    }
    /// Seals a header or record: CRC of all but its last 4 bytes, in its last 4 bytes.
    pub fn seal(b: &mut [u8]) {
        let n = b.len() - 4;
        let c = crc32(&b[..n]);
        put(b, n, &c.to_le_bytes());
    }
    /// [`seal`], or the CRC of `old` when the bytes it covers are the same (a table of 1000
    /// leases is re-encoded at each store; only changed records are checksummed again).
    pub fn seal_like(b: &mut [u8], old: Option<&[u8]>) {
        let n = b.len() - 4;
        match old {
            Some(o) if o[..n] == b[..n] => {
                let (dst, src) = (&mut b[n..], &o[n..]);
                dst.copy_from_slice(src);
            }
            _ => seal(b),
        }
    }
    pub fn sealed(b: &[u8]) -> bool {
        let n = b.len() - 4;
        crc32(&b[..n]) == u32_at(b, n)
    }

    /// True when record `r` says what [`super::LeaseTable::encode_lease`] would write for `l`
    /// (its padding aside): the store then leaves it alone without encoding it.
    pub fn holds_lease(r: &[u8], l: &super::Lease) -> bool {
        let (u, p) = (l.user.as_bytes(), l.profile.as_bytes());
        r[0] == LEASE
            && r[1] == super::mode_byte(l.mode)
            && usize::from(r[2]) == u.len()
            && usize::from(r[3]) == p.len()
            && u32_at(r, 4) == l.job_id
            && u32_at(r, 8) == l.uid
            && u32_at(r, 12) == l.slot
            && u16_at(r, 16) == l.port_first
            && u16_at(r, 18) == l.port_last
            && u32_at(r, 20) == l.mark
            && r[24..28] == l.node_addr.octets()
            && u32_at(r, 28) == u32::from(l.last_logged.is_some())
            && u64_at(r, 32) == l.since
            && u64_at(r, 40) == l.last_logged.unwrap_or(0)
            && r.get(56..56 + u.len()) == Some(u)
            && r.get(120..120 + p.len()) == Some(p)
    }

    /// The same for a quarantine entry ([`super::LeaseTable::encode_quarantine`]).
    pub fn holds_quarantine(r: &[u8], q: &super::Quarantined) -> bool {
        r[0] == QUARANTINE
            && u32_at(r, 4) == q.job_id
            && u32_at(r, 12) == q.slot
            && u16_at(r, 16) == q.port_first
            && u16_at(r, 18) == q.port_last
            && u64_at(r, 48) == q.until
    }
}

/// A version-1 table (`leases.json`), read only to migrate it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyTable {
    version: u32,
    node: String,
    leases: Vec<Lease>,
    quarantine: Vec<LegacyQuarantined>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyQuarantined {
    port_first: u16,
    port_last: u16,
    until: u64,
    job_id: u32,
}

/// Why bytes are not a table: `torn` when only a checksum is wrong (a reader without the
/// node lock may have raced a writer; it reads again before calling the table corrupt).
struct Damage {
    detail: String,
    torn: bool,
}

fn damage(detail: String) -> Damage {
    Damage {
        detail,
        torn: false,
    }
}

/// The version-1 file beside a table at `path`: `leases.json` for `leases.table`.
pub fn legacy_path(path: &Path) -> PathBuf {
    path.with_extension("json")
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

    /// Reads the table; a missing file is an empty table (or the node's version-1
    /// `leases.json`, migrated by the next [`LeaseTable::store`]), a damaged one an error
    /// (fail closed).
    pub fn load(path: &Path, node: &str) -> Result<LeaseTable, LeaseError> {
        let corrupt = |path: &Path, detail: String| LeaseError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let mut tries = 0;
        loop {
            let bytes = match Image::read(path)? {
                Some(b) => b,
                None => return Self::load_legacy(&legacy_path(path), node),
            };
            match Self::parse(&bytes) {
                Ok(mut t) => {
                    if t.node != node {
                        return Err(LeaseError::WrongNode {
                            path: path.to_owned(),
                            found: t.node,
                            expected: node.to_owned(),
                        });
                    }
                    t.check_consistent().map_err(|d| corrupt(path, d))?;
                    t.held_on_disk = t.held_slots();
                    t.on_disk = Some(bytes);
                    return Ok(t);
                }
                Err(d) if d.torn && tries < 2 => tries += 1,
                Err(d) => return Err(corrupt(path, d.detail)),
            }
        }
    }

    fn load_legacy(path: &Path, node: &str) -> Result<LeaseTable, LeaseError> {
        let Some(bytes) = read_if_exists(path)? else {
            return Ok(LeaseTable::empty(node));
        };
        let corrupt = |detail: String| LeaseError::Corrupt {
            path: path.to_owned(),
            detail,
        };
        let old: LegacyTable =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if old.version != LEGACY_VERSION {
            return Err(corrupt(format!(
                "version {} (this extnet reads {LEGACY_VERSION} from {} and {TABLE_VERSION} from leases.table)",
                old.version,
                path.display()
            )));
        }
        if old.node != node {
            return Err(LeaseError::WrongNode {
                path: path.to_owned(),
                found: old.node,
                expected: node.to_owned(),
            });
        }
        let mut t = LeaseTable::empty(node);
        t.leases = old.leases;
        t.check_consistent().map_err(corrupt)?;
        // each quarantined range gets a record of its own in a slot nobody holds
        let mut taken: std::collections::HashSet<u32> = t.leases.iter().map(|l| l.slot).collect();
        let mut next = 0u32;
        for q in old.quarantine {
            while taken.contains(&next) {
                next += 1;
            }
            taken.insert(next);
            t.quarantine.push(Quarantined {
                slot: next,
                port_first: q.port_first,
                port_last: q.port_last,
                until: q.until,
                job_id: q.job_id,
            });
        }
        Ok(t)
    }

    /// Decodes a version-2 file (the node and consistency are checked by the caller).
    fn parse(b: &[u8]) -> Result<LeaseTable, Damage> {
        use disk::*;
        if b.len() >= MAGIC.len() && &b[..MAGIC.len()] != MAGIC {
            return Err(damage(
                "no EXTNETLT signature at its start: not an extnet lease table".into(),
            ));
        }
        if b.len() < HEADER {
            return Err(damage(format!(
                "{} bytes, shorter than its {HEADER}-byte header: truncated",
                b.len()
            )));
        }
        let version = u32_at(b, 8);
        if version != TABLE_VERSION {
            return Err(damage(format!(
                "version {version} (this extnet reads {TABLE_VERSION})"
            )));
        }
        let h = &b[..HEADER];
        if !sealed(h) {
            return Err(Damage {
                detail: "header checksum mismatch".into(),
                torn: true,
            });
        }
        let (rec, slots, node_len) = (
            u32_at(h, 12) as usize,
            u32_at(h, 16) as usize,
            u16_at(h, 20) as usize,
        );
        if rec != RECORD || node_len > NODE_MAX {
            return Err(damage(format!(
                "header says records of {rec} bytes and a node name of {node_len} (expected {RECORD} and at most {NODE_MAX})"
            )));
        }
        let want = HEADER + slots * RECORD;
        if b.len() != want {
            return Err(damage(format!(
                "{} bytes, but its header says {slots} slots ({want} bytes): truncated or extended",
                b.len()
            )));
        }
        let node = std::str::from_utf8(&h[22..22 + node_len])
            .map_err(|_| damage("node name is not UTF-8".into()))?
            .to_owned();
        let mut t = LeaseTable::empty(&node);
        // sized once, with room for the one entry a prolog or an epilog adds: growing a Vec
        // of 1000 leases copies it
        let state = |s: usize| b[HEADER + s * RECORD];
        t.leases
            .reserve_exact(1 + (0..slots).filter(|&s| state(s) == LEASE).count());
        t.quarantine
            .reserve_exact(1 + (0..slots).filter(|&s| state(s) == QUARANTINE).count());
        for s in 0..slots {
            let r = &b[HEADER + s * RECORD..HEADER + (s + 1) * RECORD];
            match r[0] {
                FREE => {
                    if r.iter().any(|&x| x != 0) {
                        return Err(Damage {
                            detail: format!("slot {s}: a free record that is not blank"),
                            torn: true,
                        });
                    }
                    continue;
                }
                LEASE | QUARANTINE => {}
                other => return Err(damage(format!("slot {s}: unknown record state {other}"))),
            }
            if !sealed(r) {
                return Err(Damage {
                    detail: format!("slot {s}: record checksum mismatch"),
                    torn: true,
                });
            }
            if u32_at(r, 12) as usize != s {
                return Err(damage(format!(
                    "slot {s}: record says it is slot {}",
                    u32_at(r, 12)
                )));
            }
            let (job_id, port_first, port_last) = (u32_at(r, 4), u16_at(r, 16), u16_at(r, 18));
            if r[0] == QUARANTINE {
                t.quarantine.push(Quarantined {
                    slot: s as u32,
                    port_first,
                    port_last,
                    until: u64_at(r, 48),
                    job_id,
                });
                continue;
            }
            let text = |o: usize, len: usize, max: usize, what: &str| {
                if len > max {
                    return Err(damage(format!("slot {s}: {what} of {len} bytes")));
                }
                std::str::from_utf8(&r[o..o + len])
                    .map(CompactString::from)
                    .map_err(|_| damage(format!("slot {s}: {what} is not UTF-8")))
            };
            let mode = match r[1] {
                0 => Mode::Cgroup,
                1 => Mode::Netns,
                m => return Err(damage(format!("slot {s}: unknown mode {m}"))),
            };
            t.leases.push(Lease {
                job_id,
                user: text(56, usize::from(r[2]), USER_MAX, "user name")?,
                uid: u32_at(r, 8),
                slot: s as u32,
                port_first,
                port_last,
                mark: u32_at(r, 20),
                mode,
                profile: text(120, usize::from(r[3]), PROFILE_MAX, "profile name")?,
                node_addr: Ipv4Addr::new(r[24], r[25], r[26], r[27]),
                since: u64_at(r, 32),
                last_logged: (u32_at(r, 28) & 1 != 0).then(|| u64_at(r, 40)),
            });
        }
        Ok(t)
    }

    /// No two leases share a job, a slot or a port, and no block is empty. O(n): one sort of
    /// the job ids, a bit per port; slots are checked by their order when the leases come
    /// sorted by slot (as [`LeaseTable::load`] reads them), else by a sort.
    fn check_consistent(&self) -> Result<(), String> {
        for a in &self.leases {
            if a.port_first > a.port_last {
                return Err(format!("job {} has an empty port block", a.job_id));
            }
        }
        let mut jobs: Vec<u32> = self.leases.iter().map(|l| l.job_id).collect();
        jobs.sort_unstable();
        if let Some(w) = jobs.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("job {} holds two leases", w[0]));
        }
        if !self.leases.windows(2).all(|w| w[0].slot < w[1].slot) {
            let mut slots: Vec<(u32, u32)> =
                self.leases.iter().map(|l| (l.slot, l.job_id)).collect();
            slots.sort_unstable();
            if let Some(w) = slots.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(format!(
                    "jobs {} and {} share slot {}",
                    w[0].1, w[1].1, w[0].0
                ));
            }
        }
        let mut ports = PortMap::new();
        let Some(b) = self
            .leases
            .iter()
            .find(|l| ports.mark(l.port_first, l.port_last))
        else {
            return Ok(());
        };
        // name the other job too (only on a damaged table)
        let a = self
            .leases
            .iter()
            .find(|a| {
                a.job_id != b.job_id && a.port_first <= b.port_last && b.port_first <= a.port_last
            })
            .unwrap_or(b);
        Err(format!(
            "jobs {} and {} share ports ({}-{} and {}-{})",
            a.job_id, b.job_id, a.port_first, a.port_last, b.port_first, b.port_last
        ))
    }

    /// Slot `slot`'s record as on disk, if the file has it.
    fn old_record(&self, slot: u32) -> Option<&[u8]> {
        let o = disk::HEADER + slot as usize * disk::RECORD;
        self.on_disk.as_ref()?.get(o..o + disk::RECORD)
    }

    /// The header for a file of `slots` records.
    fn header(&self, slots: usize) -> Result<[u8; disk::HEADER], LeaseError> {
        use disk::*;
        if self.node.len() > NODE_MAX {
            return Err(LeaseError::TooLong {
                what: format!("node name {:?}", self.node),
                len: self.node.len(),
                max: NODE_MAX,
                fix: "use a shorter node name",
            });
        }
        let mut h = [0u8; HEADER];
        put(&mut h, 0, MAGIC);
        put(&mut h, 8, &TABLE_VERSION.to_le_bytes());
        put(&mut h, 12, &(RECORD as u32).to_le_bytes());
        put(&mut h, 16, &(slots as u32).to_le_bytes());
        put(&mut h, 20, &(self.node.len() as u16).to_le_bytes());
        put(&mut h, 22, self.node.as_bytes());
        seal(&mut h);
        Ok(h)
    }

    /// The slots the table holds records for.
    fn held_slots(&self) -> Vec<u32> {
        self.leases
            .iter()
            .map(|l| l.slot)
            .chain(self.quarantine.iter().map(|q| q.slot))
            .collect()
    }

    /// A lease's record, without its checksum.
    fn encode_lease(l: &Lease) -> Result<[u8; disk::RECORD], LeaseError> {
        use disk::*;
        for (what, v, max) in [
            ("user name", &l.user, USER_MAX),
            ("profile name", &l.profile, PROFILE_MAX),
        ] {
            if v.len() > max {
                return Err(LeaseError::TooLong {
                    what: format!("job {}'s {what} {v:?}", l.job_id),
                    len: v.len(),
                    max,
                    fix: "the job is denied; use shorter names",
                });
            }
        }
        let mut r = [0u8; RECORD];
        r[0] = LEASE;
        r[1] = mode_byte(l.mode);
        r[2] = l.user.len() as u8;
        r[3] = l.profile.len() as u8;
        put(&mut r, 4, &l.job_id.to_le_bytes());
        put(&mut r, 8, &l.uid.to_le_bytes());
        put(&mut r, 12, &l.slot.to_le_bytes());
        put(&mut r, 16, &l.port_first.to_le_bytes());
        put(&mut r, 18, &l.port_last.to_le_bytes());
        put(&mut r, 20, &l.mark.to_le_bytes());
        put(&mut r, 24, &l.node_addr.octets());
        put(
            &mut r,
            28,
            &u32::from(l.last_logged.is_some()).to_le_bytes(),
        );
        put(&mut r, 32, &l.since.to_le_bytes());
        put(&mut r, 40, &l.last_logged.unwrap_or(0).to_le_bytes());
        put(&mut r, 56, l.user.as_bytes());
        put(&mut r, 120, l.profile.as_bytes());
        Ok(r)
    }

    /// A quarantine entry's record, without its checksum.
    fn encode_quarantine(q: &Quarantined) -> [u8; disk::RECORD] {
        use disk::*;
        let mut r = [0u8; RECORD];
        r[0] = QUARANTINE;
        put(&mut r, 4, &q.job_id.to_le_bytes());
        put(&mut r, 12, &q.slot.to_le_bytes());
        put(&mut r, 16, &q.port_first.to_le_bytes());
        put(&mut r, 18, &q.port_last.to_le_bytes());
        put(&mut r, 48, &q.until.to_le_bytes());
        r
    }

    /// Every slot's record (slot, bytes), leases first. The checksum of a record that did not
    /// change is copied from the file, not computed again.
    fn records(&self) -> Result<Vec<(u32, [u8; disk::RECORD])>, LeaseError> {
        let mut out = Vec::with_capacity(self.leases.len() + self.quarantine.len());
        for l in &self.leases {
            let mut r = Self::encode_lease(l)?;
            disk::seal_like(&mut r, self.old_record(l.slot));
            out.push((l.slot, r));
        }
        for q in &self.quarantine {
            let mut r = Self::encode_quarantine(q);
            disk::seal_like(&mut r, self.old_record(q.slot));
            out.push((q.slot, r));
        }
        Ok(out)
    }

    /// The slots `records` occupy (one flag per slot up to `slots`); two records on one slot
    /// are an error (the table would lose one).
    fn occupancy(
        records: &[(u32, [u8; disk::RECORD])],
        slots: usize,
        path: &Path,
    ) -> Result<Vec<Option<u32>>, LeaseError> {
        let mut by_slot: Vec<Option<u32>> = vec![None; slots];
        for (slot, r) in records {
            let job = disk::u32_at(r, 4);
            if let Some(other) = by_slot[*slot as usize].replace(job) {
                return Err(LeaseError::Corrupt {
                    path: path.to_owned(),
                    detail: format!("jobs {other} and {job} share slot {slot}"),
                });
            }
        }
        Ok(by_slot)
    }

    /// The whole file for the table: as many slots as the file has now, or more, grown in
    /// steps of [`disk::GROW`].
    fn image(&self, path: &Path) -> Result<Vec<u8>, LeaseError> {
        use disk::*;
        let records = self.records()?;
        let top = records
            .iter()
            .map(|(s, _)| *s as usize + 1)
            .max()
            .unwrap_or(0);
        let have = self.slots_on_disk();
        let slots = if top <= have {
            have
        } else {
            top.div_ceil(GROW) * GROW
        };
        Self::occupancy(&records, slots, path)?;
        let mut b = vec![0u8; HEADER + slots * RECORD];
        b[..HEADER].copy_from_slice(&self.header(slots)?);
        for (slot, r) in &records {
            put(&mut b, HEADER + *slot as usize * RECORD, r);
        }
        Ok(b)
    }

    fn slots_on_disk(&self) -> usize {
        self.on_disk
            .as_ref()
            .map_or(0, |b| (b.len() - disk::HEADER) / disk::RECORD)
    }

    /// Writes the table. In place when the file exists with room for every slot: only the
    /// records (and header) that changed, then one `fdatasync`; nothing at all when nothing
    /// changed. Otherwise (a new file, one that must grow, a version-1 table to migrate) the
    /// whole file: temp file, fsync, rename; a migrated `leases.json` is then renamed to
    /// `leases.json.migrated`.
    pub fn store(&mut self, path: &Path) -> Result<(), LeaseError> {
        use disk::{HEADER, RECORD};
        use std::os::unix::fs::FileExt;
        let have = self.slots_on_disk();
        let fits = |s: u32| (s as usize) < have;
        if self.on_disk.is_none()
            || !self.leases.iter().all(|l| fits(l.slot))
            || !self.quarantine.iter().all(|q| fits(q.slot))
        {
            return self.store_whole(path);
        }
        let header = self.header(have)?;
        let old = self.on_disk.as_ref().expect("checked above");
        // each entry is compared with its record in the file, field by field, and encoded
        // (on the stack) only when it differs: only the header, the changed records and the
        // records no longer held (blanked) are written
        let mut by_slot: Vec<Option<u32>> = vec![None; have];
        let mut changes: Vec<(usize, [u8; RECORD])> = Vec::new();
        let mut note = |slot: u32,
                        job: u32,
                        same: &dyn Fn(&[u8]) -> bool,
                        encode: &dyn Fn() -> Result<[u8; RECORD], LeaseError>|
         -> Result<(), LeaseError> {
            if let Some(other) = by_slot[slot as usize].replace(job) {
                return Err(LeaseError::Corrupt {
                    path: path.to_owned(),
                    detail: format!("jobs {other} and {job} share slot {slot}"),
                });
            }
            let o = HEADER + slot as usize * RECORD;
            let was = &old[o..o + RECORD];
            if !same(was) {
                let mut r = encode()?;
                if was[..RECORD - 4] != r[..RECORD - 4] {
                    disk::seal(&mut r);
                    changes.push((o, r));
                }
            }
            Ok(())
        };
        for l in &self.leases {
            note(l.slot, l.job_id, &|r| disk::holds_lease(r, l), &|| {
                Self::encode_lease(l)
            })?;
        }
        for q in &self.quarantine {
            note(q.slot, q.job_id, &|r| disk::holds_quarantine(r, q), &|| {
                Ok(Self::encode_quarantine(q))
            })?;
        }
        for &slot in &self.held_on_disk {
            if by_slot[slot as usize].is_none() {
                changes.push((HEADER + slot as usize * RECORD, [0u8; RECORD]));
            }
        }
        let header_changed = old[..HEADER] != header;
        if changes.is_empty() && !header_changed {
            return Ok(());
        }
        let io = |op: &'static str| {
            move |source| FsError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open for writing"))?;
        if header_changed {
            f.write_all_at(&header, 0)
                .map_err(io("write the header of"))?;
        }
        for (o, bytes) in &changes {
            f.write_all_at(bytes, *o as u64)
                .map_err(io("write a record of"))?;
        }
        f.sync_data().map_err(io("fdatasync"))?;
        // a mapped file shows what was just written; a copy is brought up to date
        if let Some(Image::Owned(new)) = self.on_disk.as_mut() {
            new[..HEADER].copy_from_slice(&header);
            for (o, bytes) in changes {
                new[o..o + RECORD].copy_from_slice(&bytes);
            }
        }
        self.held_on_disk = self.held_slots();
        Ok(())
    }

    fn store_whole(&mut self, path: &Path) -> Result<(), LeaseError> {
        let new = self.image(path)?;
        write_atomic(path, &new, 0o600)?;
        let legacy = legacy_path(path);
        if self.on_disk.is_none() && legacy != path && legacy.exists() {
            let to = legacy.with_extension("json.migrated");
            std::fs::rename(&legacy, &to).map_err(|source| FsError::Io {
                op: "rename the migrated version-1 table",
                path: legacy.clone(),
                source,
            })?;
            tracing::info!(from = %legacy.display(), to = %path.display(), kept = %to.display(), "lease table migrated to version {TABLE_VERSION}");
        }
        self.on_disk = Some(Image::Owned(new));
        self.held_on_disk = self.held_slots();
        Ok(())
    }

    pub fn lease_of(&self, job_id: u32) -> Option<&Lease> {
        self.leases.iter().find(|l| l.job_id == job_id)
    }

    /// Leases a block of `pool` (the pool of the job's profile, [`Policy::pool_of_profile`])
    /// for the job: the job's existing lease if it has one (a prolog run twice), else the
    /// pool's lowest slot whose record is free and whose ports are neither leased nor in
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
        for (what, v) in [("user name", req.user), ("profile name", req.profile)] {
            if v.len() > disk::USER_MAX.min(disk::PROFILE_MAX) {
                return Err(LeaseError::TooLong {
                    what: format!("job {}'s {what} {v:?}", req.job_id),
                    len: v.len(),
                    max: disk::USER_MAX.min(disk::PROFILE_MAX),
                    fix: "the job is denied; use shorter names",
                });
            }
        }
        self.quarantine.retain(|q| q.until > now);
        // O(n) in the leases and quarantined blocks (a flag per slot, a bit per port), then
        // O(1) per slot tried
        let mut taken = vec![false; pool.slots().end as usize];
        let mut busy = PortMap::new();
        for (s, lo, hi) in self
            .leases
            .iter()
            .map(|l| (l.slot, l.port_first, l.port_last))
            .chain(
                self.quarantine
                    .iter()
                    .map(|q| (q.slot, q.port_first, q.port_last)),
            )
        {
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
        let l = self.leases.swap_remove(i);
        self.quarantine.retain(|q| q.until > now);
        if quarantine_secs > 0 {
            self.quarantine.push(Quarantined {
                slot: l.slot,
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
        Some(self.leases.swap_remove(i))
    }
}

/// One record of a table as `extnet lease-table dump` prints it (one JSON line each) and
/// `extnet lease-table restore` reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpEntry {
    pub slot: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantined>,
    /// What is wrong with the record (then its fields are read as they are, unchecked).
    /// `restore` refuses entries that still carry one: the admin decides and removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Everything a table file still holds, damaged or not: the entries of its non-blank records
/// and what is wrong with the file as a whole (`None`: nothing, it loads). For the admin
/// repairing a table the prolog refuses.
pub fn dump(bytes: &[u8], node: &str) -> (Vec<DumpEntry>, Option<String>) {
    use disk::*;
    let whole = match LeaseTable::parse(bytes) {
        Ok(t) if t.node != node => Some(format!("belongs to node {}, not {node}", t.node)),
        Ok(t) => t.check_consistent().err(),
        Err(d) => Some(d.detail),
    };
    let mut out = Vec::new();
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return (out, whole);
    }
    let n = (bytes.len() - HEADER) / RECORD;
    for s in 0..n {
        let r = &bytes[HEADER + s * RECORD..HEADER + (s + 1) * RECORD];
        if r.iter().all(|&x| x == 0) {
            continue;
        }
        let mut problems = Vec::new();
        if !sealed(r) {
            problems.push("record checksum mismatch".to_owned());
        }
        if u32_at(r, 12) as usize != s {
            problems.push(format!("record says slot {}", u32_at(r, 12)));
        }
        let text = |o: usize, len: u8, max: usize| {
            CompactString::from(String::from_utf8_lossy(
                &r[o..o + usize::from(len).min(max)],
            ))
        };
        let mut e = DumpEntry {
            slot: s as u32,
            lease: None,
            quarantine: None,
            problem: None,
        };
        match r[0] {
            LEASE => {
                e.lease = Some(Lease {
                    job_id: u32_at(r, 4),
                    user: text(56, r[2], USER_MAX),
                    uid: u32_at(r, 8),
                    slot: s as u32,
                    port_first: u16_at(r, 16),
                    port_last: u16_at(r, 18),
                    mark: u32_at(r, 20),
                    mode: if r[1] == 1 { Mode::Netns } else { Mode::Cgroup },
                    profile: text(120, r[3], PROFILE_MAX),
                    node_addr: Ipv4Addr::new(r[24], r[25], r[26], r[27]),
                    since: u64_at(r, 32),
                    last_logged: (u32_at(r, 28) & 1 != 0).then(|| u64_at(r, 40)),
                });
                if r[1] > 1 {
                    problems.push(format!("unknown mode {}", r[1]));
                }
            }
            QUARANTINE => {
                e.quarantine = Some(Quarantined {
                    slot: s as u32,
                    port_first: u16_at(r, 16),
                    port_last: u16_at(r, 18),
                    until: u64_at(r, 48),
                    job_id: u32_at(r, 4),
                })
            }
            FREE => problems.push("a free record that is not blank".into()),
            other => problems.push(format!("unknown record state {other}")),
        }
        if !problems.is_empty() {
            e.problem = Some(problems.join("; "));
        }
        out.push(e);
    }
    (out, whole)
}

impl LeaseTable {
    /// The table made of `entries` (a reviewed [`dump`]), checked as a load checks a file.
    /// Written whole by [`LeaseTable::store`] (temp file, fsync, rename).
    pub fn from_dump(node: &str, entries: Vec<DumpEntry>) -> Result<LeaseTable, String> {
        let mut t = LeaseTable::empty(node);
        let mut slots = std::collections::BTreeSet::new();
        for e in entries {
            if let Some(p) = &e.problem {
                return Err(format!(
                    "slot {}: still marked \"problem\": {p}; check the entry against the lease log, fix or delete it, and remove its \"problem\" field",
                    e.slot
                ));
            }
            if !slots.insert(e.slot) {
                return Err(format!("slot {} appears twice", e.slot));
            }
            match (e.lease, e.quarantine) {
                (Some(l), None) if l.slot == e.slot => t.leases.push(l),
                (None, Some(q)) if q.slot == e.slot => t.quarantine.push(q),
                (Some(_), Some(_)) => {
                    return Err(format!("slot {}: both a lease and a quarantine", e.slot))
                }
                (None, None) => {
                    return Err(format!("slot {}: neither lease nor quarantine", e.slot))
                }
                _ => return Err(format!("slot {}: its entry names another slot", e.slot)),
            }
        }
        t.check_consistent()?;
        t.image(Path::new("-")).map_err(|e| e.to_string())?;
        Ok(t)
    }
}

/// The table's file as loaded: mapped (shared, read-only) or, where mapping fails, read.
///
/// A prolog is a new process: reading 1000 leases' 384 KiB into fresh memory cost it ~0.25
/// ms of page faults, twice the parsing (measured, `lease-load` step). Mapping the file
/// hands it the page cache's own pages, populated up front with `MADV_POPULATE_READ`, so a
/// read error is an error here and not a SIGBUS later. The mapping is shared, so the
/// records [`LeaseTable::store`] writes in place show in it at once. Writers (under the
/// node lock) never shrink the file: they write records in place or rename a new file over
/// it, which leaves the mapped one intact.
enum Image {
    Mapped {
        addr: std::ptr::NonNull<u8>,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl Image {
    /// The file's bytes, `None` when it does not exist.
    fn read(path: &Path) -> Result<Option<Image>, FsError> {
        use std::os::fd::AsRawFd;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FsError::Io {
                    op: "open",
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let len = f.metadata().map_or(0, |m| m.len() as usize);
        if len > 0 {
            // SAFETY: a new read-only mapping of an open file; checked below before any use,
            // unmapped on every path that does not return it
            unsafe {
                let addr = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                if addr != libc::MAP_FAILED {
                    if libc::madvise(addr, len, libc::MADV_POPULATE_READ) == 0 {
                        let addr = std::ptr::NonNull::new(addr.cast::<u8>()).expect("mmap");
                        return Ok(Some(Image::Mapped { addr, len }));
                    }
                    libc::munmap(addr, len);
                }
            }
        }
        // not mappable (an empty file, an old kernel, a read error): read it, which names
        // the error if there is one
        read_if_exists(path).map(|b| b.map(Image::Owned))
    }
}

impl std::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: mapped and populated for `len` bytes until drop
            Image::Mapped { addr, len } => unsafe {
                std::slice::from_raw_parts(addr.as_ptr(), *len)
            },
            Image::Owned(v) => v,
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Image::Mapped { addr, len } = *self {
            // SAFETY: the mapping made in `Image::read`, unmapped once
            unsafe { libc::munmap(addr.as_ptr().cast(), len) };
        }
    }
}

impl Clone for Image {
    fn clone(&self) -> Image {
        Image::Owned(self.to_vec())
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "Image({} bytes)", self.len())
    }
}

/// A lease record's mode byte (read back in [`LeaseTable::parse`]).
fn mode_byte(m: Mode) -> u8 {
    match m {
        Mode::Cgroup => 0,
        Mode::Netns => 1,
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FsError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        }),
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
/// Which of the 65 536 ports are taken: one bit each (8 KiB), so marking or testing a block
/// costs a few word operations whatever the number of leases (a sort of the blocks cost more
/// than everything else in loading 1000 leases).
struct PortMap {
    words: Box<[u64; 1024]>,
}

impl PortMap {
    fn new() -> PortMap {
        PortMap {
            words: Box::new([0u64; 1024]),
        }
    }

    /// The words a block `lo..=hi` covers, each with the mask of its ports in it.
    fn spans(lo: u16, hi: u16) -> impl Iterator<Item = (usize, u64)> {
        let (lo, hi) = (usize::from(lo), usize::from(hi.max(lo)));
        (lo / 64..=hi / 64).map(move |w| {
            let from = if w == lo / 64 { lo % 64 } else { 0 };
            let to = if w == hi / 64 { hi % 64 } else { 63 };
            let mask = (u64::MAX >> (63 - (to - from))) << from;
            (w, mask)
        })
    }

    fn overlaps(&self, lo: u16, hi: u16) -> bool {
        Self::spans(lo, hi).any(|(w, m)| self.words[w] & m != 0)
    }

    /// Marks the block; true when a port of it was marked already.
    fn mark(&mut self, lo: u16, hi: u16) -> bool {
        let mut clash = false;
        for (w, m) in Self::spans(lo, hi) {
            clash |= self.words[w] & m != 0;
            self.words[w] |= m;
        }
        clash
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
            user: lease.user.to_string(),
            uid: lease.uid,
            node: node.to_owned(),
            node_addr: lease.node_addr,
            family: "ipv4".into(),
            proto: "tcp,udp".into(),
            port_first: lease.port_first,
            port_last: lease.port_last,
            mark: lease.mark,
            mode: lease.mode,
            profile: lease.profile.to_string(),
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
        let path = dir.path().join("leases.table");
        let mut t = LeaseTable::empty("n1");
        t.allocate(&req(7), &pool(), 5).unwrap();
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        assert!(matches!(
            LeaseTable::load(&path, "n2"),
            Err(LeaseError::WrongNode { .. })
        ));
        let good = std::fs::read(&path).unwrap();
        let load_bytes = |b: &[u8]| {
            std::fs::write(&path, b).unwrap();
            LeaseTable::load(&path, "n1").unwrap_err().to_string()
        };
        for (what, bytes, says) in [
            ("half", good[..good.len() / 2].to_vec(), "truncated"),
            (
                "one record short",
                good[..good.len() - 256].to_vec(),
                "truncated or extended",
            ),
            (
                "header only, cut",
                good[..100].to_vec(),
                "shorter than its 512-byte header",
            ),
            ("empty", vec![], "truncated"),
            (
                "JSON",
                b"{\"version\": 1}".to_vec(),
                "no EXTNETLT signature",
            ),
        ] {
            let e = load_bytes(&bytes);
            assert!(e.contains("is corrupt") && e.contains(says), "{what}: {e}");
        }
        // one bit flipped in the lease's record, in a free record, in the header
        for (at, says) in [
            (512 + 40, "slot 0: record checksum mismatch"),
            (512 + 256 + 9, "slot 1: a free record that is not blank"),
            (30, "header checksum mismatch"),
        ] {
            let mut b = good.clone();
            b[at] ^= 4;
            let e = load_bytes(&b);
            assert!(
                e.contains("is corrupt") && e.contains(says),
                "byte {at}: {e}"
            );
        }
        let mut b = good.clone();
        b[8] = 99;
        assert!(load_bytes(&b).contains("version 99 (this extnet reads 2)"));
        std::fs::write(&path, &good).unwrap();
        // two leases on one slot cannot even be written
        let mut dup = t.clone();
        dup.leases.push(Lease {
            job_id: 8,
            ..t.leases[0].clone()
        });
        let e = dup.store(&path).unwrap_err().to_string();
        assert!(e.contains("jobs 7 and 8 share slot 0"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), good, "nothing written");
        let damaged = |mut d: LeaseTable| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("leases.table");
            d.on_disk = None;
            d.store(&p).unwrap();
            LeaseTable::load(&p, "n1").unwrap_err().to_string()
        };
        // another slot, but ports that overlap the first lease's block
        let mut ports = dup.clone();
        ports.leases[1].slot = 1;
        ports.leases[1].port_first = t.leases[0].port_last;
        ports.leases[1].port_last = t.leases[0].port_last + 10;
        let e = damaged(ports.clone());
        assert!(e.contains("jobs 7 and 8 share ports"), "{e}");
        let mut twice = ports.clone();
        twice.leases[1].job_id = 7;
        twice.leases[1].port_first = 30000;
        twice.leases[1].port_last = 30010;
        let e = damaged(twice);
        assert!(e.contains("job 7 holds two leases"), "{e}");
        let mut empty = t.clone();
        empty.leases[0].port_first = empty.leases[0].port_last + 1;
        let e = damaged(empty);
        assert!(e.contains("job 7 has an empty port block"), "{e}");
    }

    #[test]
    fn a_change_rewrites_only_its_records_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.table");
        let mut t = LeaseTable::empty("n1");
        t.store(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            512,
            "a header, no slot yet"
        );
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        for j in 1..=3 {
            t.allocate(&req(j), &pool(), 5).unwrap();
        }
        t.store(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            512 + 64 * 256,
            "grown by 64 slots at once"
        );
        let ino = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let before = (ino(), std::fs::read(&path).unwrap());
        let mut t = LeaseTable::load(&path, "n1").unwrap();
        t.release(2, 5, 120).unwrap();
        t.store(&path).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(ino(), before.0, "written in place, not replaced");
        assert!(
            matches!(t.on_disk, Some(Image::Mapped { .. })),
            "a loaded table maps its file"
        );
        assert_eq!(
            t.on_disk.as_deref(),
            Some(&after[..]),
            "the mapping shows the records just written"
        );
        // a second change is compared with the first one's records: only its own is written
        let three = t.release(3, 6, 120).unwrap();
        t.store(&path).unwrap();
        let third = std::fs::read(&path).unwrap();
        let changed: Vec<usize> = (0..third.len() / 256)
            .filter(|&i| third[i * 256..(i + 1) * 256] != after[i * 256..(i + 1) * 256])
            .collect();
        assert_eq!(changed, [4], "only the second released slot's record");
        t.quarantine.retain(|q| q.job_id != 3);
        t.leases.push(three);
        t.store(&path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            after,
            "back as after the first change"
        );
        // a file replaced (by rename) under a loaded table leaves its mapping intact
        let replaced = t.clone();
        std::fs::copy(&path, dir.path().join("copy")).unwrap();
        std::fs::rename(dir.path().join("copy"), &path).unwrap();
        assert_eq!(t.on_disk.as_deref(), Some(&after[..]));
        assert_eq!(t, replaced);
        let t = LeaseTable::load(&path, "n1").unwrap();
        let changed: Vec<usize> = (0..after.len() / 256)
            .filter(|&i| after[i * 256..(i + 1) * 256] != before.1[i * 256..(i + 1) * 256])
            .collect();
        // slot 1 is the file's third 256-byte unit (the header is two)
        assert_eq!(changed, [3], "only the released slot's record");
        let loaded = LeaseTable::load(&path, "n1").unwrap();
        assert_eq!(loaded, t);
        assert_eq!(
            loaded.quarantine,
            [Quarantined {
                slot: 1,
                port_first: 20256,
                port_last: 20511,
                until: 125,
                job_id: 2
            }]
        );
        // nothing changed: nothing written
        let mut same = LeaseTable::load(&path, "n1").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        same.store(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        // the quarantined slot is not reused before its end, then it is
        let mut t = loaded;
        assert_eq!(
            t.allocate(&req(4), &pool(), 124)
                .err()
                .map(|e| matches!(e, LeaseError::PoolFull { .. })),
            Some(true)
        );
        assert_eq!(t.allocate(&req(4), &pool(), 125).unwrap().0.slot, 1);
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        assert!(t.quarantine.is_empty());
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.table");
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap().lease_of(1), Some(&l));
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
    fn a_version_1_json_table_is_migrated_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.table");
        let json = dir.path().join("leases.json");
        // as version 1 wrote it: no last_logged before the first interim record, quarantine
        // entries without a slot
        std::fs::write(
            &json,
            r#"{
"version": 1,
"node": "n1",
"leases": [
  {"job_id":1,"user":"alice","uid":1000,"slot":0,"port_first":20000,"port_last":20255,"mark":65536,"mode":"cgroup","profile":"default","node_addr":"10.0.0.1","since":0},
  {"job_id":3,"user":"bob","uid":1001,"slot":2,"port_first":20512,"port_last":20767,"mark":65538,"mode":"netns","profile":"default","node_addr":"10.0.0.1","since":4,"last_logged":9}
],
"quarantine": [
  {"port_first":20256,"port_last":20511,"until":130,"job_id":2}
]
}
"#,
        )
        .unwrap();
        let mut t = LeaseTable::load(&path, "n1").unwrap();
        assert_eq!(t.leases.len(), 2);
        assert_eq!(t.lease_of(3).unwrap().last_logged, Some(9));
        assert_eq!(t.lease_of(1).unwrap().last_logged, None);
        assert_eq!(
            t.quarantine,
            [Quarantined {
                slot: 1,
                port_first: 20256,
                port_last: 20511,
                until: 130,
                job_id: 2
            }],
            "the quarantined range takes the free slot"
        );
        assert!(!path.exists(), "loading writes nothing");
        // its ports stay in quarantine after the migration
        assert!(matches!(
            t.allocate(&req(4), &pool(), 129),
            Err(LeaseError::PoolFull { .. })
        ));
        t.store(&path).unwrap();
        assert!(!json.exists() && dir.path().join("leases.json.migrated").exists());
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        // a damaged version-1 table is reported by its own name and not migrated
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&json, b"{ not json").unwrap();
        let e = LeaseTable::load(&path, "n1").unwrap_err().to_string();
        assert!(e.contains("leases.json is corrupt"), "{e}");
    }

    #[test]
    fn a_damaged_table_is_dumped_and_restored_after_review() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.table");
        let mut t = LeaseTable::empty("n1");
        for j in 1..=3 {
            t.allocate(&req(j), &pool(), 5).unwrap();
        }
        t.release(2, 6, 120);
        t.store(&path).unwrap();
        let mut b = std::fs::read(&path).unwrap();
        let (entries, whole) = dump(&b, "n1");
        assert_eq!(whole, None);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].quarantine.as_ref().unwrap().job_id, 2);
        // job 3's record torn: reported, still shown
        b[512 + 2 * 256 + 33] ^= 1;
        let (entries, whole) = dump(&b, "n1");
        assert!(whole.unwrap().contains("slot 2: record checksum mismatch"));
        let torn = &entries[2];
        assert_eq!(torn.problem.as_deref(), Some("record checksum mismatch"));
        assert_eq!(torn.lease.as_ref().unwrap().job_id, 3);
        // restore refuses until the admin has reviewed it
        let e = LeaseTable::from_dump("n1", entries.clone()).unwrap_err();
        assert!(e.contains("slot 2: still marked \"problem\""), "{e}");
        let mut fixed = entries.clone();
        fixed[2].problem = None;
        fixed[2].lease.as_mut().unwrap().since = 5;
        let mut r = LeaseTable::from_dump("n1", fixed.clone()).unwrap();
        assert_eq!(r, t);
        r.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        // and checks what it is given as a load would
        fixed[0].lease.as_mut().unwrap().job_id = 3;
        let e = LeaseTable::from_dump("n1", fixed).unwrap_err();
        assert!(e.contains("job 3 holds two leases"), "{e}");
        // JSON lines round trip
        let line = serde_json::to_string(&entries[0]).unwrap();
        assert_eq!(
            serde_json::from_str::<DumpEntry>(&line).unwrap(),
            entries[0]
        );
    }

    #[test]
    fn a_record_holds_an_entry_exactly_when_encoding_the_entry_gives_it() {
        let base = Lease {
            job_id: 7,
            user: "alice".into(),
            uid: 1000,
            slot: 3,
            port_first: 20768,
            port_last: 21023,
            mark: 0x10003,
            mode: Mode::Cgroup,
            profile: "default".into(),
            node_addr: Ipv4Addr::new(10, 99, 0, 11),
            since: 1_700_000_000,
            last_logged: None,
        };
        let variants: Vec<Lease> = vec![
            base.clone(),
            Lease {
                job_id: 8,
                ..base.clone()
            },
            Lease {
                user: "alicf".into(),
                ..base.clone()
            },
            Lease {
                user: "alice2".into(),
                ..base.clone()
            },
            Lease {
                uid: 1001,
                ..base.clone()
            },
            Lease {
                slot: 4,
                ..base.clone()
            },
            Lease {
                port_first: 20767,
                ..base.clone()
            },
            Lease {
                port_last: 21024,
                ..base.clone()
            },
            Lease {
                mark: 0x10004,
                ..base.clone()
            },
            Lease {
                mode: Mode::Netns,
                ..base.clone()
            },
            Lease {
                profile: "defaulu".into(),
                ..base.clone()
            },
            Lease {
                profile: "".into(),
                ..base.clone()
            },
            Lease {
                node_addr: Ipv4Addr::new(10, 99, 0, 12),
                ..base.clone()
            },
            Lease {
                since: 1_700_000_001,
                ..base.clone()
            },
            Lease {
                last_logged: Some(0),
                ..base.clone()
            },
            Lease {
                last_logged: Some(1_700_000_600),
                ..base.clone()
            },
        ];
        for a in &variants {
            let r = LeaseTable::encode_lease(a).unwrap();
            for b in &variants {
                let same = LeaseTable::encode_lease(b).unwrap() == r;
                assert_eq!(disk::holds_lease(&r, b), same, "{a:?} / {b:?}");
            }
            let q = Quarantined {
                slot: a.slot,
                port_first: a.port_first,
                port_last: a.port_last,
                until: a.since,
                job_id: a.job_id,
            };
            assert!(
                !disk::holds_quarantine(&r, &q),
                "a lease's record holds no quarantine"
            );
        }
        let q = Quarantined {
            slot: 3,
            port_first: 20768,
            port_last: 21023,
            until: 125,
            job_id: 7,
        };
        let qs = [
            q.clone(),
            Quarantined {
                slot: 4,
                ..q.clone()
            },
            Quarantined {
                port_first: 1,
                ..q.clone()
            },
            Quarantined {
                port_last: 2,
                ..q.clone()
            },
            Quarantined {
                until: 126,
                ..q.clone()
            },
            Quarantined {
                job_id: 8,
                ..q.clone()
            },
        ];
        for a in &qs {
            let r = LeaseTable::encode_quarantine(a);
            for b in &qs {
                assert_eq!(
                    disk::holds_quarantine(&r, b),
                    LeaseTable::encode_quarantine(b) == r,
                    "{a:?} / {b:?}"
                );
            }
            assert!(!disk::holds_lease(&r, &base));
        }
        assert!(
            !disk::holds_lease(&[0u8; disk::RECORD], &base),
            "a blank record holds nothing"
        );
    }

    #[test]
    fn port_map_agrees_with_comparing_ranges() {
        // blocks of every width and alignment, against the plain overlap test
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut map = PortMap::new();
            let mut held: Vec<(u16, u16)> = Vec::new();
            for _ in 0..20 {
                let lo = (next() % 65536) as u16;
                let width = [1u64, 2, 31, 32, 63, 64, 65, 200, 5000][(next() % 9) as usize];
                let hi = (u64::from(lo) + (next() % width)).min(65535) as u16;
                let plain = held.iter().any(|&(a, b)| a <= hi && lo <= b);
                assert_eq!(
                    map.overlaps(lo, hi),
                    plain,
                    "round {round}: {lo}-{hi} against {held:?}"
                );
                assert_eq!(map.mark(lo, hi), plain, "round {round}: {lo}-{hi}");
                held.push((lo, hi));
            }
        }
        let mut map = PortMap::new();
        assert!(!map.mark(0, 65535));
        assert!(map.overlaps(65535, 65535) && map.overlaps(0, 0));
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(disk::crc32(b""), 0);
        assert_eq!(disk::crc32(b"123456789"), 0xCBF4_3926);
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
        let path = dir.join("leases.table");
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

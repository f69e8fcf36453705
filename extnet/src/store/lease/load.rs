//! Reading the table from its file, fail closed: a file that is not exactly a version-2
//! table of this node, with every checksum right and no two leases sharing a job, a slot or
//! a port, is an error, and the node then grants nothing until an admin repairs it.

use super::format::{self, at, header_at, HEADER, LEASE, MAGIC, NODE_MAX, QUARANTINE, RECORD};
use super::image::Image;
use super::ports::PortMap;
use super::{legacy, LeaseError, LeaseTable, TABLE_VERSION};
use compact_str::CompactString;
use std::path::Path;

/// Why bytes are not a table: `torn` when only a checksum is wrong (a reader without the
/// node lock may have raced a writer; it reads again before calling the table corrupt).
pub(super) struct Damage {
    pub detail: String,
    pub torn: bool,
}

impl Damage {
    fn corrupt(detail: String) -> Damage {
        Damage {
            detail,
            torn: false,
        }
    }

    fn torn(detail: String) -> Damage {
        Damage { detail, torn: true }
    }
}

impl LeaseTable {
    /// Reads the table; a missing file is an empty table (or the node's version-1
    /// `leases.json`, migrated by the next [`LeaseTable::store`]), a damaged one an error
    /// (fail closed).
    pub fn load(path: &Path, node: &str) -> Result<LeaseTable, LeaseError> {
        let mut tries = 0;
        loop {
            let bytes = match Image::read(path)? {
                Some(b) => b,
                None => return Self::load_legacy(&legacy::legacy_path(path), node),
            };
            match Self::parse(&bytes) {
                Ok(mut t) => {
                    if t.node != node {
                        return Err(LeaseError::wrong_node(path, t.node, node));
                    }
                    t.check_consistent()
                        .map_err(|d| LeaseError::corrupt(path, d))?;
                    t.now_on_disk(bytes);
                    return Ok(t);
                }
                Err(d) if d.torn && tries < 2 => tries += 1,
                Err(d) => return Err(LeaseError::corrupt(path, d.detail)),
            }
        }
    }

    /// No two leases share a job, a slot or a port, and no block is empty: what a load
    /// checks of a file, a migration of a version-1 table and a restore of a dump. O(n): one
    /// sort of the job ids, a bit per port; slots are checked by their order when the leases
    /// come sorted by slot (as [`LeaseTable::load`] reads them), else by a sort.
    pub(super) fn check_consistent(&self) -> Result<(), String> {
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

    /// Decodes a version-2 file (the node and consistency are checked by the caller).
    pub(super) fn parse(b: &[u8]) -> Result<LeaseTable, Damage> {
        if b.len() >= MAGIC.len() && &b[..MAGIC.len()] != MAGIC {
            return Err(Damage::corrupt(
                "no EXTNETLT signature at its start: not an extnet lease table".into(),
            ));
        }
        if b.len() < HEADER {
            return Err(Damage::corrupt(format!(
                "{} bytes, shorter than its {HEADER}-byte header: truncated",
                b.len()
            )));
        }
        let version = format::u32_at(b, header_at::VERSION);
        if version != TABLE_VERSION {
            return Err(Damage::corrupt(format!(
                "version {version} (this extnet reads {TABLE_VERSION})"
            )));
        }
        let h = &b[..HEADER];
        if !format::sealed(h) {
            return Err(Damage::torn("header checksum mismatch".into()));
        }
        let (rec, slots, node_len) = (
            format::u32_at(h, header_at::RECORD_SIZE) as usize,
            format::u32_at(h, header_at::SLOTS) as usize,
            format::u16_at(h, header_at::NODE_LEN) as usize,
        );
        if rec != RECORD || node_len > NODE_MAX {
            return Err(Damage::corrupt(format!(
                "header says records of {rec} bytes and a node name of {node_len} (expected {RECORD} and at most {NODE_MAX})"
            )));
        }
        let want = HEADER + slots * RECORD;
        if b.len() != want {
            return Err(Damage::corrupt(format!(
                "{} bytes, but its header says {slots} slots ({want} bytes): truncated or extended",
                b.len()
            )));
        }
        let node = std::str::from_utf8(&h[header_at::NODE..header_at::NODE + node_len])
            .map_err(|_| Damage::corrupt("node name is not UTF-8".into()))?
            .to_owned();
        let mut t = LeaseTable::empty(&node);
        // sized once, with room for the one entry a prolog or an epilog adds: growing a
        // full Vec copies it
        let state = |s: usize| b[format::record_range(s).start + at::STATE];
        t.leases
            .reserve_exact(1 + (0..slots).filter(|&s| state(s) == LEASE).count());
        t.quarantine
            .reserve_exact(1 + (0..slots).filter(|&s| state(s) == QUARANTINE).count());
        for s in 0..slots {
            let r = &b[format::record_range(s)];
            match r[at::STATE] {
                format::FREE => {
                    if r.iter().any(|&x| x != 0) {
                        return Err(Damage::torn(format!(
                            "slot {s}: a free record that is not blank"
                        )));
                    }
                    continue;
                }
                LEASE | QUARANTINE => {}
                other => {
                    return Err(Damage::corrupt(format!(
                        "slot {s}: unknown record state {other}"
                    )))
                }
            }
            if !format::sealed(r) {
                return Err(Damage::torn(format!("slot {s}: record checksum mismatch")));
            }
            let says = format::u32_at(r, at::SLOT);
            if says as usize != s {
                return Err(Damage::corrupt(format!(
                    "slot {s}: record says it is slot {says}"
                )));
            }
            if r[at::STATE] == QUARANTINE {
                t.quarantine.push(format::decode_quarantine(r, s as u32));
                continue;
            }
            let mode = format::mode_of(r[at::MODE]).ok_or_else(|| {
                Damage::corrupt(format!("slot {s}: unknown mode {}", r[at::MODE]))
            })?;
            let [user, profile] = format::names(r).map(|(what, len, field)| {
                let bytes = field
                    .get(..len)
                    .ok_or_else(|| Damage::corrupt(format!("slot {s}: {what} of {len} bytes")))?;
                std::str::from_utf8(bytes)
                    .map(CompactString::from)
                    .map_err(|_| Damage::corrupt(format!("slot {s}: {what} is not UTF-8")))
            });
            t.leases
                .push(format::decode_lease(r, s as u32, mode, user?, profile?));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req, table_file};
    use super::super::Lease;
    use super::*;

    #[test]
    fn store_and_load_round_trip_and_detect_damage() {
        let (_dir, path) = table_file();
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
            let (_dir, p) = table_file();
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

    // Bounded fuzzing of the decoder (proptest): a table file changed anywhere — bytes
    // overwritten, cut short, extended — loads as the table that was stored or is rejected
    // with an error that names the file; it never panics and never reads as another table
    // (a lease that is not there, or one lost, would open or close a job's path out).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Three leases (one of the bulk pool), two blocks in quarantine: the table and its
        /// file's bytes, made once (storing fsyncs).
        fn stored() -> &'static (Vec<Lease>, Vec<u8>) {
            static STORED: std::sync::OnceLock<(Vec<Lease>, Vec<u8>)> = std::sync::OnceLock::new();
            STORED.get_or_init(|| {
                let (_dir, path) = table_file();
                let mut t = LeaseTable::empty("n1");
                t.allocate(&req(7), &pool(), 5).unwrap();
                t.allocate(&req(8), &pool(), 6).unwrap();
                t.allocate(&req(9), &crate::store::lease::fixtures::bulk(), 7)
                    .unwrap();
                t.allocate(&req(10), &pool(), 8).unwrap();
                t.release(8, 20, 120);
                t.release(10, 21, 120);
                t.store(&path).unwrap();
                assert_eq!(t.quarantine.len(), 2);
                (t.leases.clone(), std::fs::read(&path).unwrap())
            })
        }

        fn check(bytes: &[u8]) {
            let (_dir, path) = table_file();
            std::fs::write(&path, &stored().1).unwrap();
            let t = LeaseTable::load(&path, "n1").unwrap();
            assert_eq!(t.leases.len(), stored().0.len());
            std::fs::write(&path, bytes).unwrap();
            match LeaseTable::load(&path, "n1") {
                Ok(loaded) => assert_eq!(loaded, t, "a changed file read as another table"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains(&path.display().to_string()),
                        "names the file: {e}"
                    );
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 250, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn overwritten_bytes(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
                let mut b = stored().1.clone();
                for (i, v) in edits {
                    let n = b.len();
                    b[i % n] = v;
                }
                check(&b);
            }

            #[test]
            fn cut_or_extended(len in 0usize..20_000, fill in any::<u8>()) {
                let mut b = stored().1.clone();
                b.resize(len, fill);
                check(&b);
            }

            #[test]
            fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..4096)) {
                check(&b);
            }
        }
    }
}

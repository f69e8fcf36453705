//! Dump and restore, for an admin repairing a table the prolog refuses: `extnet lease-table
//! dump` prints what a file still holds, damaged or not, one JSON line a record, each with
//! what is wrong with it; `extnet lease-table restore` reads the reviewed lines back into a
//! table, checked as a load checks a file.

use super::format::{self, at, HEADER, LEASE, MAGIC, QUARANTINE, RECORD};
use super::{Lease, LeaseTable, Quarantined};
use compact_str::CompactString;
use extnet_policy::Mode;
use serde::{Deserialize, Serialize};
use std::path::Path;

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
        let r = &bytes[format::record_range(s)];
        if r.iter().all(|&x| x == 0) {
            continue;
        }
        let slot = s as u32;
        let mut problems = Vec::new();
        if !format::sealed(r) {
            problems.push("record checksum mismatch".to_owned());
        }
        let says = format::u32_at(r, at::SLOT);
        if says as usize != s {
            problems.push(format!("record says slot {says}"));
        }
        let mut e = DumpEntry {
            slot,
            lease: None,
            quarantine: None,
            problem: None,
        };
        match r[at::STATE] {
            LEASE => {
                // names cut to their fields, invalid UTF-8 replaced
                let [user, profile] = format::names(r).map(|(_, len, field)| {
                    CompactString::from(String::from_utf8_lossy(&field[..len.min(field.len())]))
                });
                let mode = format::mode_of(r[at::MODE]);
                let lease_mode = mode.unwrap_or(Mode::Cgroup);
                e.lease = Some(format::decode_lease(r, slot, lease_mode, user, profile));
                if mode.is_none() {
                    problems.push(format!("unknown mode {}", r[at::MODE]));
                }
            }
            QUARANTINE => e.quarantine = Some(format::decode_quarantine(r, slot)),
            format::FREE => problems.push("a free record that is not blank".into()),
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
        // what the store would write, so that a restore that cannot be written fails here
        t.whole_file(Path::new("-")).map_err(|e| e.to_string())?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req, table_file};
    use super::*;

    #[test]
    fn a_damaged_table_is_dumped_and_restored_after_review() {
        let (_dir, path) = table_file();
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
}

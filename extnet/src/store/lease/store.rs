//! Writing the table to its file. A change to a file that has room for every slot is
//! written in place: only the records (and header) that changed, then one `fdatasync`, so a
//! job's lease or release costs one record and one sync whatever the number of active jobs.
//! A new file, one that must grow and a migrated version-1 table are written whole: temp
//! file, fsync, rename.

use super::format::{self, at, HEADER, RECORD};
use super::image::Image;
use super::{legacy, LeaseError, LeaseTable};
use crate::store::fs::{write_atomic, FsError};
use std::path::Path;

impl LeaseTable {
    /// Writes the table. In place when the file exists with room for every slot: only the
    /// records (and header) that changed, then one `fdatasync`; nothing at all when nothing
    /// changed. Otherwise (a new file, one that must grow, a version-1 table to migrate) the
    /// whole file: temp file, fsync, rename; a migrated `leases.json` is then renamed to
    /// `leases.json.migrated`.
    pub fn store(&mut self, path: &Path) -> Result<(), LeaseError> {
        use std::os::unix::fs::FileExt;
        let have = self.slots_on_disk();
        let fits = |s: u32| (s as usize) < have;
        if self.on_disk.is_none()
            || !self.leases.iter().all(|l| fits(l.slot))
            || !self.quarantine.iter().all(|q| fits(q.slot))
        {
            return self.store_whole(path);
        }
        let header = format::header(&self.node, have)?;
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
            claim(&mut by_slot, slot, job, path)?;
            let range = format::record_range(slot as usize);
            let o = range.start;
            let was = &old[range];
            if !same(was) {
                let mut r = encode()?;
                if was[..RECORD - 4] != r[..RECORD - 4] {
                    format::seal(&mut r);
                    changes.push((o, r));
                }
            }
            Ok(())
        };
        for l in &self.leases {
            note(l.slot, l.job_id, &|r| format::holds_lease(r, l), &|| {
                format::encode_lease(l)
            })?;
        }
        for q in &self.quarantine {
            note(
                q.slot,
                q.job_id,
                &|r| format::holds_quarantine(r, q),
                &|| Ok(format::encode_quarantine(q)),
            )?;
        }
        for &slot in &self.held_on_disk {
            if by_slot[slot as usize].is_none() {
                let o = format::record_range(slot as usize).start;
                changes.push((o, [0u8; RECORD]));
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
        let new = self.whole_file(path)?;
        write_atomic(path, &new, 0o600)?;
        if self.on_disk.is_none() {
            legacy::retire(path)?;
        }
        self.now_on_disk(Image::Owned(new));
        Ok(())
    }

    /// Notes `image` as the file's bytes, holding what the table holds now.
    pub(super) fn now_on_disk(&mut self, image: Image) {
        self.held_on_disk = self.held_slots();
        self.on_disk = Some(image);
    }

    /// The slots the table holds records for.
    fn held_slots(&self) -> Vec<u32> {
        self.held().map(|(slot, _, _)| slot).collect()
    }

    fn slots_on_disk(&self) -> usize {
        self.on_disk
            .as_ref()
            .map_or(0, |b| (b.len() - HEADER) / RECORD)
    }

    /// Slot `slot`'s record as on disk, if the file has it.
    fn old_record(&self, slot: u32) -> Option<&[u8]> {
        self.on_disk
            .as_ref()?
            .get(format::record_range(slot as usize))
    }

    /// Every slot's record (slot, bytes), leases first. The checksum of a record that did not
    /// change is copied from the file, not computed again.
    fn records(&self) -> Result<Vec<(u32, [u8; RECORD])>, LeaseError> {
        let mut out = Vec::with_capacity(self.leases.len() + self.quarantine.len());
        for l in &self.leases {
            let mut r = format::encode_lease(l)?;
            format::seal_like(&mut r, self.old_record(l.slot));
            out.push((l.slot, r));
        }
        for q in &self.quarantine {
            let mut r = format::encode_quarantine(q);
            format::seal_like(&mut r, self.old_record(q.slot));
            out.push((q.slot, r));
        }
        Ok(out)
    }

    /// The whole file for the table: as many slots as the file has now, or more, grown in
    /// steps of [`format::GROW`]. Two records on one slot are an error naming `path`.
    pub(super) fn whole_file(&self, path: &Path) -> Result<Vec<u8>, LeaseError> {
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
            top.div_ceil(format::GROW) * format::GROW
        };
        let mut by_slot: Vec<Option<u32>> = vec![None; slots];
        for (slot, r) in &records {
            claim(&mut by_slot, *slot, format::u32_at(r, at::JOB_ID), path)?;
        }
        let mut b = vec![0u8; HEADER + slots * RECORD];
        b[..HEADER].copy_from_slice(&format::header(&self.node, slots)?);
        for (slot, r) in &records {
            b[format::record_range(*slot as usize)].copy_from_slice(r);
        }
        Ok(b)
    }
}

/// Notes that job `job`'s entry is on `slot` (one flag per slot in `by_slot`); a second
/// entry on one slot is an error (the table would lose one).
fn claim(by_slot: &mut [Option<u32>], slot: u32, job: u32, path: &Path) -> Result<(), LeaseError> {
    match by_slot[slot as usize].replace(job) {
        Some(other) => Err(LeaseError::corrupt(
            path,
            format!("jobs {other} and {job} share slot {slot}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req, table_file};
    use super::super::{LeaseRequest, Quarantined};
    use super::*;

    #[test]
    fn a_change_rewrites_only_its_records_in_place() {
        let (dir, path) = table_file();
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
                job_id: 2,
                uid: Some(1000),
            }]
        );
        // nothing changed: nothing written
        let mut same = LeaseTable::load(&path, "n1").unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        same.store(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        // the quarantined slot is not reused by another user before its end, then it is
        let mut t = loaded;
        let bob = LeaseRequest {
            user: "bob",
            uid: 2000,
            ..req(4)
        };
        assert_eq!(
            t.allocate(&bob, &pool(), 124)
                .err()
                .map(|e| matches!(e, LeaseError::PoolFull { .. })),
            Some(true)
        );
        assert_eq!(t.allocate(&bob, &pool(), 125).unwrap().0.slot, 1);
        t.store(&path).unwrap();
        assert_eq!(LeaseTable::load(&path, "n1").unwrap(), t);
        assert!(t.quarantine.is_empty());
    }
}

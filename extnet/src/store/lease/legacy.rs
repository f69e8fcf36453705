//! The version-1 table: one JSON file, `leases.json`, that earlier versions rewrote whole
//! (temp file, fsync, rename) for every job. It is read only when no version-2 file exists,
//! and migrated by the next store, which keeps the old file as `leases.json.migrated`.

use super::format::TABLE_VERSION;
use super::image::read_if_exists;
use super::{Lease, LeaseError, LeaseTable, Quarantined};
use crate::store::fs::FsError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The JSON table of earlier versions (`leases.json`), read once and migrated.
pub const LEGACY_VERSION: u32 = 1;

/// The version-1 file beside a table at `path`: `leases.json` for `leases.table`.
pub fn legacy_path(path: &Path) -> PathBuf {
    path.with_extension("json")
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

impl LeaseTable {
    /// The table in the version-1 file at `path`; an empty table when there is none.
    pub(super) fn load_legacy(path: &Path, node: &str) -> Result<LeaseTable, LeaseError> {
        let Some(bytes) = read_if_exists(path)? else {
            return Ok(LeaseTable::empty(node));
        };
        let corrupt = |detail: String| LeaseError::corrupt(path, detail);
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
            return Err(LeaseError::wrong_node(path, old.node, node));
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
                uid: None,
            });
        }
        Ok(t)
    }
}

/// Once the first version-2 file is written at `path`: renames the version-1 file beside it,
/// if there is one, to `leases.json.migrated` (kept for the admin, never read again).
pub(super) fn retire(path: &Path) -> Result<(), FsError> {
    let legacy = legacy_path(path);
    if legacy == path || !legacy.exists() {
        return Ok(());
    }
    let to = legacy.with_extension("json.migrated");
    std::fs::rename(&legacy, &to).map_err(|source| FsError::Io {
        op: "rename the migrated version-1 table",
        path: legacy.clone(),
        source,
    })?;
    tracing::info!(from = %legacy.display(), to = %path.display(), kept = %to.display(), "lease table migrated to version {TABLE_VERSION}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{pool, req, table_file};
    use super::*;

    #[test]
    fn a_version_1_json_table_is_migrated_by_the_next_store() {
        let (dir, path) = table_file();
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
                job_id: 2,
                uid: None,
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
}

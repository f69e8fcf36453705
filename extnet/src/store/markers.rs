//! Per-job lease markers, so that the epilog of a job that has nothing on the node costs a few
//! `stat`s instead of reading the lease table (which grows with the node's active jobs).
//!
//! `<state_dir>/jobs/<job>.lease` is an empty file that exists from before the job's lease is
//! stored in the table until after its release is: the prolog creates it under the node lock
//! before storing the table, the epilog removes it after storing the table without the lease.
//! A job with neither marker, nor state file, nor namespace has nothing on the node.
//!
//! Markers are trusted only once the flag file `<state_dir>/lease-markers` exists: the first
//! prolog of a version that writes markers creates one for every lease already in the table,
//! then the flag. Until then (a node upgraded with jobs running) the epilog reads the table as
//! before. Markers are not fsynced: after a power cut a marker may be missing for a lease in
//! the (fsynced) table, but its job died with the node and `extnet status` shows the lease;
//! nothing is granted by a missing marker, at worst a block stays leased until an admin
//! releases it.

use crate::plan::layout::Layout;
use crate::store::fs::{ensure_dir, FsError};
use crate::store::lease::LeaseTable;
use std::path::PathBuf;

/// The job's marker.
pub fn path(layout: &Layout, job_id: u32) -> PathBuf {
    layout.jobs_dir.join(format!("{job_id}.lease"))
}

/// The flag that says markers are complete for this state directory.
pub fn flag(layout: &Layout) -> PathBuf {
    layout.state_dir.join("lease-markers")
}

fn touch(p: &std::path::Path) -> Result<(), FsError> {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .map(drop)
    };
    match create() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(d) = p.parent() {
                ensure_dir(d)?;
            }
            create().map_err(|source| FsError::Io {
                op: "create",
                path: p.to_owned(),
                source,
            })
        }
        Err(source) => Err(FsError::Io {
            op: "create",
            path: p.to_owned(),
            source,
        }),
    }
}

/// Marks the job as (about to be) holding a lease. Call under the node lock, before the
/// table with the lease is stored. Adopts the table's existing leases first if markers are not
/// trusted yet.
pub fn set(layout: &Layout, table: &LeaseTable, job_id: u32) -> Result<(), FsError> {
    if !flag(layout).exists() {
        for l in &table.leases {
            touch(&path(layout, l.job_id))?;
        }
        touch(&path(layout, job_id))?;
        return touch(&flag(layout));
    }
    touch(&path(layout, job_id))
}

/// Removes the job's marker (after the table without its lease is stored). Absent is fine.
pub fn clear(layout: &Layout, job_id: u32) -> Result<(), FsError> {
    let p = path(layout, job_id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FsError::Io {
            op: "remove",
            path: p,
            source,
        }),
    }
}

/// Whether the job may hold a lease on this node: its marker exists, or markers are not
/// trusted yet and the table has it (or cannot be read: then the epilog must look closer).
pub fn may_hold_lease(layout: &Layout, job_id: u32) -> bool {
    if flag(layout).exists() {
        return path(layout, job_id).exists();
    }
    LeaseTable::load(&layout.lease_table(), &layout.node)
        .map(|t| t.lease_of(job_id).is_some())
        .unwrap_or(true)
}

/// Whether the job may have anything on this node (state file, lease, namespace): false lets
/// the epilog return at once.
pub fn may_have_anything(layout: &Layout, job_id: u32) -> bool {
    layout.job_state(job_id).exists()
        || layout.netns_dir.join(layout.netns_name(job_id)).exists()
        || may_hold_lease(layout, job_id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::lease::Lease;
    use extnet_policy::{Mode, Policy};

    /// Node `n1` with everything under `dir` (the store's unit tests).
    pub(crate) fn layout(dir: &std::path::Path) -> Layout {
        let policy = Policy::from_toml(
            &format!(
                "version = 1\n[node]\ninterface = \"eth0\"\ngateway = \"10.0.0.1\"\ninternal = [\"10.0.0.0/8\"]\nstate_dir = \"{}/%n\"\nnetns_dir = \"{}/netns\"\n",
                dir.display(),
                dir.display()
            ),
            "t",
        )
        .unwrap();
        Layout::new(&policy, "n1")
    }

    fn table_with(job_id: u32) -> LeaseTable {
        let mut t = LeaseTable::empty("n1");
        t.leases.push(Lease {
            job_id,
            user: "u".into(),
            uid: 1000,
            slot: 0,
            port_first: 20000,
            port_last: 20255,
            mark: 0x10000,
            mode: Mode::Cgroup,
            profile: "p".into(),
            node_addr: "10.0.0.5".parse().unwrap(),
            node_addr6: None,
            since: 1,
            last_logged: None,
        });
        t
    }

    #[test]
    fn a_job_with_nothing_on_the_node_is_told_apart_by_markers() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        // no state directory at all: nothing (an unreadable table would say "look closer",
        // a missing one is empty)
        assert!(!may_have_anything(&l, 7));
        set(&l, &LeaseTable::empty("n1"), 7).unwrap();
        assert!(flag(&l).exists());
        assert!(may_hold_lease(&l, 7));
        assert!(may_have_anything(&l, 7));
        assert!(!may_have_anything(&l, 8));
        clear(&l, 7).unwrap();
        clear(&l, 7).unwrap();
        assert!(!may_have_anything(&l, 7));
        // a state file alone (a denied job) is something to remove
        std::fs::write(l.job_state(9), b"{}").unwrap();
        assert!(may_have_anything(&l, 9));
    }

    #[test]
    fn the_first_marker_adopts_the_leases_already_in_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        // before the flag: the table decides
        let mut t = table_with(3);
        t.store(&l.lease_table()).unwrap();
        assert!(may_hold_lease(&l, 3));
        assert!(!may_hold_lease(&l, 4));
        // a corrupt table: look closer
        std::fs::write(l.lease_table(), b"{ not json").unwrap();
        assert!(may_hold_lease(&l, 4));
        table_with(3).store(&l.lease_table()).unwrap();
        // the first prolog that writes markers marks job 3 too
        set(&l, &t, 5).unwrap();
        assert!(path(&l, 3).exists() && path(&l, 5).exists() && flag(&l).exists());
        std::fs::remove_file(l.lease_table()).unwrap();
        assert!(may_hold_lease(&l, 3), "trusted markers, not the table");
        assert!(!may_hold_lease(&l, 4));
    }
}

//! What the lease table's tests share: port pools, a job's request, a place for the file.

use super::LeaseRequest;
use extnet_policy::{Mode, Pool, PortPool};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The default pool: slots 0 to 2, blocks of 256 ports from 20000, 120 s of quarantine.
pub fn pool() -> Pool {
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
        gateway6: None,
    }
}

/// A profile's own pool after `pool()`: slots 3 and 4, blocks of 1024.
pub fn bulk() -> Pool {
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
        gateway6: None,
    }
}

/// Job `job_id`'s request, as alice, in cgroup mode, with the default profile.
pub fn req(job_id: u32) -> LeaseRequest<'static> {
    LeaseRequest {
        job_id,
        user: "alice",
        uid: 1000,
        mode: Mode::Cgroup,
        profile: "default",
        fwmark: 0x10000,
        node_addr: Ipv4Addr::new(10, 0, 0, 1),
        node_addr6: None,
    }
}

/// A new directory and the path of a table file in it (not created); the directory goes
/// when the first element is dropped.
pub fn table_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.table");
    (dir, path)
}

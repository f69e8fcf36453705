//! `lease-table`: what the node's lease table (`extnet::store::lease`) costs the prolog and
//! epilog at 1, 100 and 1000 active leases, half of them released into quarantine as on a busy
//! node: load, allocate, store (temp file, fsync, rename), release and store. In a directory
//! of its own under the temporary directory, removed at the end; no root needed.

use crate::stats::show;
use extnet::store::lease::{LeaseRequest, LeaseTable};
use extnet_policy::{Mode, Pool, PortPool};
use std::net::Ipv4Addr;
use std::time::Instant;

const RUNS: u32 = 50;

pub fn run() {
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
        gateway6: None,
    };
    let req = |job_id, user, uid, mode| LeaseRequest {
        job_id,
        user,
        uid,
        mode,
        profile: "default",
        fwmark: 0x10000,
        node_addr: Ipv4Addr::new(10, 0, 0, 1),
        node_addr6: None,
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
        for i in 0..RUNS {
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
        println!(
            "{active} active leases ({} in quarantine, file {size} bytes):",
            active / 2
        );
        show("  load", load);
        show("  allocate", alloc);
        show("  store", store);
        show("  release+store", release);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

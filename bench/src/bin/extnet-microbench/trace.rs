//! `trace`: `extnet trace PUBLIC:PORT --at TIME` over a month of lease logs of 1000 nodes
//! (a directory of one log per node, as collected), and `--job N` over the same. Synthetic
//! logs: on each node, jobs of 1 to 6 hours back to back in each of its 4 blocks for 30
//! days, an interim record every hour: about 1.3 million records, 400 MB.

use crate::stats::show;
use extnet::store::lease::{rfc3339, LogRecord};
use extnet::store::trace;
use extnet_policy::{Mode, Policy};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

const NODES: u32 = 1000;
const T0: u64 = 1_800_000_000;
const MONTH: u64 = 30 * 86_400;
const RUNS: usize = 5;

fn record(event: &str, job: u32, node: u32, first: u16, unix: u64) -> LogRecord {
    LogRecord {
        time: rfc3339(unix),
        unix,
        event: event.into(),
        job_id: job,
        user: format!("user{}", job % 500),
        uid: 10_000 + job % 500,
        node: format!("n{node}"),
        node_addr: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + node),
        node_addr6: None,
        family: "ipv4".into(),
        proto: "tcp,udp".into(),
        port_first: first,
        port_last: first + 255,
        mark: 0x3_0000,
        mode: Mode::Cgroup,
        profile: "default".into(),
        reason: None,
    }
}

pub fn run() {
    let p = Policy::from_toml(&crate::gateway_render::policy_text(NODES), "bench").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut job = 0u32;
    let mut records = 0usize;
    let mut probe = None;
    for n in 1..=NODES {
        let view = p.for_node(&format!("n{n}")).unwrap();
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(dir.path().join(format!("lease-n{n}.log"))).unwrap(),
        );
        for slot in 0..4 {
            let (first, _) = view.slot_block(slot).unwrap();
            let mut t = T0 + u64::from(slot) * 600;
            while t < T0 + MONTH {
                job += 1;
                let len = 3600 * (1 + u64::from(job % 6));
                let mut lines = vec![record("allocate", job, n, first, t)];
                lines.extend(
                    (1..len / 3600).map(|h| record("interim", job, n, first, t + h * 3600)),
                );
                lines.push(record("release", job, n, first, t + len));
                for r in lines {
                    writeln!(w, "{}", serde_json::to_string(&r).unwrap()).unwrap();
                    records += 1;
                }
                if n == 777 && slot == 2 && probe.is_none() && t > T0 + MONTH / 2 {
                    probe = Some((job, first, t + 60));
                }
                t += len + 180;
            }
        }
    }
    let (probe_job, probe_port, at) = probe.unwrap();
    let entry = p.nat_entries("n777").unwrap()[0].clone();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "{records} records of {NODES} nodes over 30 days, {} MB",
        bytes / 1_000_000
    );
    let logs = vec![dir.path().to_owned()];
    let times = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let (recs, _) = trace::read_records(&logs, "\"node\":\"n777\"", Some("n777")).unwrap();
            let tr = trace::trace(&p, entry.public, probe_port + 7, Some(at), recs).unwrap();
            assert_eq!(
                tr.leases.iter().map(|l| l.job_id).collect::<Vec<_>>(),
                [probe_job]
            );
            t.elapsed()
        })
        .collect();
    show("trace PUBLIC:PORT --at TIME, directory of 1000 logs", times);
    let times = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let (recs, _) =
                trace::read_records(&logs, &format!("\"job_id\":{probe_job},"), None).unwrap();
            let uses = trace::job(&p, probe_job, recs);
            assert_eq!(uses.len(), 1);
            t.elapsed()
        })
        .collect();
    show("trace --job N, directory of 1000 logs", times);
}

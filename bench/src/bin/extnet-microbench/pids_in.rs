//! `pids-in`: what `extnet::kernel::netns::pids_in` costs on this machine, the epilog's search
//! for processes left in a job's namespace: one `readlinkat` per process on the node. It
//! searches this process's own namespace (so it finds at least itself); without root it sees
//! fewer processes' namespaces, and the figure is lower.

use crate::stats::{human, Summary};
use extnet::kernel::netns;
use std::fs::File;
use std::time::{Duration, Instant};

const RUNS: usize = 31;

pub fn run() {
    let me = File::open("/proc/self/ns/net").unwrap();
    let ino = netns::inode(&me);
    let mut found = Vec::new();
    let times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            found = netns::pids_in(ino);
            t.elapsed()
        })
        .collect();
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(found.contains(&(std::process::id() as i32)));
    let s = Summary::of(times);
    println!(
        "pids_in: {procs} processes, {} in this namespace, {s}; per process {}",
        found.len(),
        human(s.median / procs as u32),
    );
}

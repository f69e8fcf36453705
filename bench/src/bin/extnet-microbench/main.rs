//! `extnet-microbench [NAME...]`: extnet's micro-benchmarks on one machine, without the test
//! cluster: what the kernel objects and the lease table cost one job. Each prints its figures
//! (median and spread of many runs); without NAME all of them run, in the order of
//! `--list`. Those that make network namespaces need root: each makes private ones of its
//! own, never touches the machine's, and removes everything it made (without root they are
//! skipped, saying why). `bench/README.md` says what each measures.
//!
//! A debug build's figures only show that a benchmark runs; for figures, build with
//! `--release`.

mod allowlist_bind;
mod counters;
mod gateway_connrate;
mod gateway_forward;
mod gateway_render;
mod lease_table;
mod netns_setup6;
mod per_job_setup;
mod pids_in;
mod pool_routing;
mod stats;
mod trace;
mod watch_repair;

use clap::Parser;
use std::process::ExitCode;

/// One benchmark.
struct Bench {
    name: &'static str,
    about: &'static str,
    /// What it creates that needs root; `None`: it runs as any user.
    root: Option<&'static str>,
    run: fn(),
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "per-job-setup",
        about: "a job's namespace, veth, addresses and routes: extnet against `ip` commands",
        root: Some("network namespaces and mounts"),
        run: per_job_setup::run,
    },
    Bench {
        name: "netns-setup6",
        about: "a netns job's setup and teardown without and with IPv6 on its veth pair",
        root: Some("network namespaces"),
        run: netns_setup6::run,
    },
    Bench {
        name: "pids-in",
        about: "the epilog's search for processes left in a job's namespace",
        root: None,
        run: pids_in::run,
    },
    Bench {
        name: "pool-routing",
        about: "ensure_pool_routing when nothing changed, without and with routed pools",
        root: Some("a network namespace, rules and routes"),
        run: pool_routing::run,
    },
    Bench {
        name: "allowlist-bind",
        about: "binding a slot to its profile's allowlist, at 0, 150 and 2000 bound slots",
        root: Some("network namespaces and nft tables"),
        run: allowlist_bind::run,
    },
    Bench {
        name: "counters",
        about: "accounting: counter reset and read at 1008 slots, base load and reload",
        root: Some("a network namespace and nft tables"),
        run: counters::run,
    },
    Bench {
        name: "watch-repair",
        about: "the node agent: nft flush ruleset until the table is back, its repair alone",
        root: Some("a network namespace, nft tables, rules, links and cgroups"),
        run: watch_repair::run,
    },
    Bench {
        name: "gateway-render",
        about: "a gateway's ruleset for 10 and 27,648 nodes: policy, render, nft -f",
        root: Some("a network namespace and nft tables"),
        run: gateway_render::run,
    },
    Bench {
        name: "gateway-forward",
        about: "iperf3 through a gateway's SNAT, 10 against 27,648 nodes: TCP, UDP packets/s",
        root: Some("network namespaces, nft tables, links and iperf3 processes"),
        run: gateway_forward::run,
    },
    Bench {
        name: "gateway-connrate",
        about: "new TCP connections/s through a gateway's SNAT, 10 against 27,648 nodes",
        root: Some("network namespaces, nft tables, links and iperf3 processes"),
        run: gateway_connrate::run,
    },
    Bench {
        name: "trace",
        about: "extnet trace over a month of lease logs of 1000 nodes",
        root: None,
        run: trace::run,
    },
    Bench {
        name: "lease-table",
        about: "lease table load, allocate, store, release at 1, 100 and 1000 leases",
        root: None,
        run: lease_table::run,
    },
];

#[derive(Parser)]
#[command(
    name = "extnet-microbench",
    about = "extnet's micro-benchmarks on one machine (bench/README.md)"
)]
struct Cli {
    /// The benchmarks to run (all when none); see --list.
    names: Vec<String>,
    /// List the benchmarks and what each measures.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for b in BENCHES {
            println!("{:<16} {}", b.name, b.about);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(unknown) = cli
        .names
        .iter()
        .find(|n| !BENCHES.iter().any(|b| b.name == n.as_str()))
    {
        let names: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
        eprintln!(
            "extnet-microbench: no benchmark {unknown:?}; there are: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut failed = Vec::new();
    for b in BENCHES
        .iter()
        .filter(|b| cli.names.is_empty() || cli.names.iter().any(|n| n == b.name))
    {
        println!("\n{}: {}", b.name, b.about);
        if let Some(creates) = b.root {
            if !support::root::is_root(b.name, creates) {
                continue;
            }
        }
        // a failed check panics with its message; the other benchmarks still run
        if std::panic::catch_unwind(b.run).is_err() {
            failed.push(b.name);
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("extnet-microbench: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

//! `extnet trace PUBLIC:PORT [--at TIME]` and `extnet trace --job N`: who used a public
//! address and port, and what a job used (`extnet::store::trace`).

use anyhow::Context;
use extnet::store::lease::{parse_time, rfc3339};
use extnet::store::trace;
use extnet_policy::Policy;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `ADDRESS:PORT` as the outside saw it.
pub fn parse_target(text: &str) -> anyhow::Result<(Ipv4Addr, u16)> {
    let (a, p) = text.rsplit_once(':').with_context(|| {
        format!("{text:?} is not PUBLIC_ADDRESS:PORT, e.g. 203.0.113.101:20166")
    })?;
    Ok((
        a.parse()
            .with_context(|| format!("{a:?} is not an IPv4 address"))?,
        p.parse()
            .with_context(|| format!("{p:?} is not a port number"))?,
    ))
}

/// The logs to read: `--log` paths, else the policy's lease log of `node`.
fn logs(policy: &Policy, logs: Vec<PathBuf>, node: Option<&str>) -> Vec<PathBuf> {
    if !logs.is_empty() {
        return logs;
    }
    node.map(|n| vec![trace::default_log(policy, n)])
        .unwrap_or_default()
}

pub fn address(
    policy_path: &Path,
    target: &str,
    at: Option<String>,
    log: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let (public, port) = parse_target(target)?;
    let at = at
        .map(|t| {
            parse_time(&t).with_context(|| {
                format!("--at {t:?} is not a time: give YYYY-MM-DDTHH:MM:SSZ (UTC) or Unix seconds")
            })
        })
        .transpose()?;
    let entry = policy.nat_lookup(public, port)?;
    let paths = logs(&policy, log, Some(&entry.node));
    let (records, bad) = trace::read_records(
        &paths,
        &format!("\"node\":\"{}\"", entry.node),
        Some(&entry.node),
    )?;
    let t = trace::trace(&policy, public, port, at, records)?;
    if json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!(
            "{public}:{port} is node {} ({}) port {port}, pool {}, through virtual address {}",
            t.node, t.node_addr, t.pool, t.virtual_address
        );
        if let Some(at) = t.at {
            println!("at {}:", rfc3339(at));
        }
        for l in &t.leases {
            println!(
                "  job {} user {} (uid {}) profile {} block {}-{}: {}",
                l.job_id,
                l.user,
                l.uid,
                l.profile,
                l.port_first,
                l.port_last,
                l.interval_text()
            );
        }
        for u in &t.unknown {
            println!("  unknown: {u}");
        }
    }
    if bad > 0 {
        eprintln!(
            "extnet: warning: {bad} line(s) of the logs are not lease records and were skipped"
        );
    }
    Ok(if t.leases.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn job(
    policy_path: &Path,
    job: u32,
    log: Vec<PathBuf>,
    node: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let paths = logs(&policy, log, node.as_deref());
    anyhow::ensure!(
        !paths.is_empty(),
        "pass the lease logs with --log (a file or a directory of collected logs) or --node"
    );
    let (records, bad) =
        trace::read_records(&paths, &format!("\"job_id\":{job},"), node.as_deref())?;
    let uses = trace::job(&policy, job, records);
    if json {
        println!("{}", serde_json::to_string(&uses)?);
    } else if uses.is_empty() {
        println!("job {job}: no lease in the logs read");
    } else {
        for u in &uses {
            let l = &u.lease;
            match u.public {
                Some(p) => println!(
                    "job {job} on {} ({}): public {p} ports {}-{} (user {}, profile {}): {}",
                    l.node, l.node_addr, l.port_first, l.port_last, l.user, l.profile, l.interval_text()
                ),
                None => println!(
                    "job {job} on {} ({}): ports {}-{}, not in the policy's mapping (a node or port the policy no longer maps): {}",
                    l.node, l.node_addr, l.port_first, l.port_last, l.interval_text()
                ),
            }
        }
    }
    if bad > 0 {
        eprintln!(
            "extnet: warning: {bad} line(s) of the logs are not lease records and were skipped"
        );
    }
    Ok(if uses.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

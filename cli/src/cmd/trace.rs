//! `extnet trace PUBLIC:PORT [--at TIME]` and `extnet trace --job N`: who used a public
//! address and port, and what a job used (`extnet::store::trace`). An IPv6 public address
//! is written `[2001:db8::1]:PORT` or `2001:db8::1 PORT`.

use anyhow::Context;
use extnet::store::lease::{parse_time, rfc3339};
use extnet::store::trace;
use extnet_policy::Policy;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The public address and port as the outside saw them: `ADDRESS:PORT` (IPv4),
/// `[ADDRESS]:PORT` (IPv6), or `ADDRESS PORT` for either family (one argument with a space,
/// or the port as `port`, the next argument).
pub fn parse_target(text: &str, port: Option<&str>) -> anyhow::Result<(IpAddr, u16)> {
    const FORMS: &str =
        "203.0.113.101:20166, [2001:db8::101]:20166 or 2001:db8::101 20166 (address, then port)";
    let text = text.trim();
    let port_of = |p: &str| {
        p.trim()
            .parse::<u16>()
            .with_context(|| format!("{p:?} is not a port number; write {FORMS}"))
    };
    let addr_of = |a: &str| {
        a.trim()
            .parse::<IpAddr>()
            .with_context(|| format!("{a:?} is not an IPv4 or IPv6 address; write {FORMS}"))
    };
    if let Some(p) = port {
        return Ok((addr_of(text)?, port_of(p)?));
    }
    if let Some((a, p)) = text.split_once(char::is_whitespace) {
        return Ok((addr_of(a)?, port_of(p)?));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok((sa.ip(), sa.port()));
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        anyhow::bail!(
            "{text:?} is an IPv6 address without a port; write [{text}]:PORT or {text} PORT"
        );
    }
    let (a, p) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not PUBLIC_ADDRESS:PORT; write {FORMS}"))?;
    match addr_of(a)? {
        IpAddr::V6(a6) => anyhow::bail!(
            "{text:?} is ambiguous: an IPv6 address and a port need brackets; write [{a6}]:{p} or {a6} {p}"
        ),
        a4 => Ok((a4, port_of(p)?)),
    }
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
    port: Option<&str>,
    at: Option<String>,
    log: Vec<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let (public, port) = parse_target(target, port)?;
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
        let node_addr = match t.node_addr6 {
            Some(a6) => format!("{}, {a6}", t.node_addr),
            None => t.node_addr.to_string(),
        };
        println!(
            "{} is node {} ({node_addr}) port {port}, pool {}, through virtual address {}",
            SocketAddr::new(public, port),
            t.node,
            t.pool,
            t.virtual_address
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
                    "job {job} on {} ({}): public {p}{} ports {}-{} (user {}, profile {}): {}",
                    l.node,
                    l.node_addr,
                    u.public6.map_or(String::new(), |a| format!(" and {a}")),
                    l.port_first,
                    l.port_last,
                    l.user,
                    l.profile,
                    l.interval_text()
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

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_of_both_families_parse_in_every_form() {
        let ok = |t: &str, p: Option<&str>| {
            let (a, port) = parse_target(t, p).unwrap();
            format!("{a} {port}")
        };
        assert_eq!(ok("203.0.113.101:20166", None), "203.0.113.101 20166");
        assert_eq!(ok("203.0.113.101 20166", None), "203.0.113.101 20166");
        assert_eq!(ok("203.0.113.101", Some("20166")), "203.0.113.101 20166");
        assert_eq!(ok("[2001:db8::101]:20166", None), "2001:db8::101 20166");
        assert_eq!(ok("2001:db8::101 20166", None), "2001:db8::101 20166");
        assert_eq!(ok(" 2001:db8::101   20166 ", None), "2001:db8::101 20166");
        assert_eq!(ok("2001:db8::101", Some("20166")), "2001:db8::101 20166");
        for (t, p, why) in [
            ("2001:db8::101", None, "IPv6 address without a port"),
            ("2001:db8::101:20166", None, "need brackets"),
            ("2001:db8::1:2016", None, "IPv6 address without a port"),
            ("[2001:db8::101]", None, "not an IPv4 or IPv6 address"),
            ("203.0.113.101", None, "not PUBLIC_ADDRESS:PORT"),
            ("203.0.113.101:http", None, "not a port number"),
            ("2001:db8::101", Some("70000"), "not a port number"),
            ("gw.example:20166", None, "not an IPv4 or IPv6 address"),
        ] {
            let e = format!("{:#}", parse_target(t, p).unwrap_err());
            assert!(e.contains(why), "{t:?} {p:?}: {e}");
        }
    }
}

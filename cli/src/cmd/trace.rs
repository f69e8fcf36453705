//! `extnet trace PUBLIC:PORT [--at TIME]` and `extnet trace --job N`: who used a public
//! address and port, and what a job used (`extnet::store::trace`). An IPv6 public address
//! is written `[2001:db8::1]:PORT` or `2001:db8::1 PORT`.

use anyhow::Context;
use extnet::store::lease::{parse_time, rfc3339};
use extnet::store::trace;
use extnet_policy::gateways::NatLookupError;
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
    node: Option<&str>,
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
    let entry = match policy.nat_lookup(public, port) {
        Ok(e) => e,
        // not translated by a gateway the policy describes: a node's own address
        Err(NatLookupError::NoGateways | NatLookupError::NotPublic(_)) => {
            return node_address(&policy, public, port, at, log, node, json)
        }
        Err(e) => return Err(e.into()),
    };
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
        print_leases(t.at, &t.leases, &t.unknown, false);
    }
    Ok(found(bad, !t.leases.is_empty()))
}

/// The leases that held a port (`at` a time), one line each (`with_node`: with the node and
/// its addresses first), then what the logs cannot tell.
fn print_leases(at: Option<u64>, leases: &[trace::LeaseSpan], unknown: &[String], with_node: bool) {
    if let Some(at) = at {
        println!("at {}:", rfc3339(at));
    }
    for l in leases {
        let node = if with_node {
            format!(
                "node {} ({}{}) ",
                l.node,
                l.node_addr,
                l.node_addr6.map_or(String::new(), |a| format!(", {a}"))
            )
        } else {
            String::new()
        };
        println!(
            "  {node}job {} user {} (uid {}) profile {} block {}-{}: {}",
            l.job_id,
            l.user,
            l.uid,
            l.profile,
            l.port_first,
            l.port_last,
            l.interval_text()
        );
    }
    for u in unknown {
        println!("  unknown: {u}");
    }
}

/// The exit code of a trace (1: nothing found), after a warning for `bad` unreadable lines.
fn found(bad: usize, any: bool) -> ExitCode {
    if bad > 0 {
        eprintln!(
            "extnet: warning: {bad} line(s) of the logs are not lease records and were skipped"
        );
    }
    if any {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `extnet trace NODE_ADDRESS:PORT`: the jobs whose lease had that node address (IPv4:
/// `node_addr`, IPv6: `node_addr6`) and a block holding the port, from the lease logs alone.
fn node_address(
    policy: &Policy,
    address: IpAddr,
    port: u16,
    at: Option<u64>,
    log: Vec<PathBuf>,
    node: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let paths = if !log.is_empty() || node.is_some() {
        logs(policy, log, node)
    } else {
        let this = extnet::job::env::short_hostname();
        extnet::store::accounting::log_files(&policy.log.lease_log, None, this.as_deref())
    };
    anyhow::ensure!(
        !paths.is_empty(),
        "{address} is not a public address of the policy's [gateways], so it is taken as a node's own address; no lease log matches log.lease_log = {:?}: pass the lease logs with --log (a file or a directory of collected logs) or --node",
        policy.log.lease_log
    );
    let (records, bad) = trace::read_records(&paths, &trace::node_needle(address), node)?;
    let t = trace::node_trace(address, port, at, records);
    if json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        println!(
            "{} is a node's own address (not a public address of the policy's [gateways])",
            SocketAddr::new(address, port)
        );
        print_leases(t.at, &t.leases, &t.unknown, true);
    }
    Ok(found(bad, !t.leases.is_empty()))
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
    Ok(found(bad, !uses.is_empty()))
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

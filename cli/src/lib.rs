//! `extnet`: the admin's command. `extnet --help` lists what it does. A library with the
//! program's [`main`], so the crash tests can run it as the program.

use anyhow::Context;
use clap::{Parser, Subcommand};
use extnet::plan::layout::Layout;
use extnet::store::accounting;
use extnet::store::lease::{self, LeaseTable};
use extnet_policy::{JobIdentity, Policy, Request};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "extnet",
    version,
    about = "Per-job external network access for Slurm: the admin's tool"
)]
struct Cli {
    /// The policy file.
    #[arg(long, global = true, default_value = extnet_policy::DEFAULT_PATH)]
    policy: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Active external jobs and port-pool usage on this node.
    Status {
        /// Node name (default: this host's short name, as SLURMD_NODENAME would be).
        #[arg(long)]
        node: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check and explain the policy file.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// The node's base setup (nft table, ip rule, routing table, slot cgroups).
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Per-job traffic records written by the epilogs (log.accounting), summed per job.
    Accounting {
        /// Only this job.
        #[arg(long)]
        job: Option<u32>,
        /// Only this user's jobs.
        #[arg(long)]
        user: Option<String>,
        /// Only records of this node (with a `%n` log template: only its file).
        #[arg(long)]
        node: Option<String>,
        /// One JSON record per job per node instead of the table.
        #[arg(long)]
        json: bool,
        /// Read this file instead of log.accounting (repeatable; for rotated logs).
        #[arg(long)]
        file: Vec<PathBuf>,
    },
    /// The lease log (log.lease_log).
    LeaseLog {
        #[command(subcommand)]
        cmd: LeaseLogCmd,
    },
    /// The node's lease table (<state_dir>/leases.table): inspect and repair a damaged one.
    LeaseTable {
        #[command(subcommand)]
        cmd: LeaseTableCmd,
    },
}

#[derive(Subcommand)]
enum LeaseTableCmd {
    /// Print every record the table still holds, one JSON line each, damaged ones included
    /// (marked "problem"); says on stderr what is wrong with the file as a whole.
    Dump {
        #[arg(long)]
        node: Option<String>,
        /// Read this file instead of the node's table (e.g. a copy moved aside).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Replace the node's table with the entries of a reviewed dump (JSON lines as `dump`
    /// prints them; entries still marked "problem" are refused). Takes the node lock and
    /// checks the entries as every prolog checks the table.
    Restore {
        /// The dump ("-": standard input).
        dump: PathBuf,
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
enum LeaseLogCmd {
    /// Write an `interim` record for every lease whose last record is log.interim_secs old
    /// (run it from a timer on each node, e.g. every 10 minutes).
    Interim {
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate a policy file and summarize what it grants.
    Check {
        /// The file to check (default: --policy).
        file: Option<PathBuf>,
    },
    /// Show the decision for a user and the rule that made it.
    Explain {
        #[arg(long)]
        user: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        qos: Option<String>,
        /// As with --external-net=PROFILE; without it, as with --external-net.
        #[arg(long)]
        profile: Option<String>,
        /// Decide for a job that did not ask (only auto profiles can grant it).
        #[arg(long, conflicts_with = "profile")]
        not_asked: bool,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Load the base now (the prolog also does this on demand).
    Setup {
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove the base (only when no external job runs on the node).
    Teardown {
        #[arg(long)]
        node: Option<String>,
    },
}

fn node_name(n: Option<String>) -> anyhow::Result<String> {
    n.or_else(extnet::job::env::short_hostname)
        .context("cannot tell the node name; pass --node")
}

/// The program, with the process's arguments (`main.rs`; the crash tests run it too).
pub fn main() -> ExitCode {
    // `extnet policy check | head`: end quietly when the reader goes away (as other Unix tools
    // do), instead of panicking on EPIPE
    // SAFETY: restoring the default disposition of SIGPIPE at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("extnet: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Status { node, json } => status(&cli.policy, &node_name(node)?, json),
        Cmd::Accounting {
            job,
            user,
            node,
            json,
            file,
        } => accounting(&cli.policy, job, user, node, json, file),
        Cmd::LeaseLog {
            cmd: LeaseLogCmd::Interim { node },
        } => interim(&cli.policy, &node_name(node)?),
        Cmd::LeaseTable {
            cmd: LeaseTableCmd::Dump { node, file },
        } => table_dump(&cli.policy, &node_name(node)?, file),
        Cmd::LeaseTable {
            cmd: LeaseTableCmd::Restore { dump, node },
        } => table_restore(&cli.policy, &node_name(node)?, &dump),
        Cmd::Policy {
            cmd: PolicyCmd::Check { file },
        } => check(&file.unwrap_or(cli.policy)),
        Cmd::Policy {
            cmd:
                PolicyCmd::Explain {
                    user,
                    account,
                    partition,
                    qos,
                    profile,
                    not_asked,
                },
        } => {
            let policy = Policy::load(&cli.policy)?;
            explain(&policy, user, account, partition, qos, profile, not_asked);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Node {
            cmd: NodeCmd::Setup { node },
        } => {
            let policy = Policy::load(&cli.policy)?;
            let layout = Layout::new(&policy, &node_name(node)?);
            let mut nl = extnet::kernel::netlink::Netlink::open()?;
            let (idx, addr) = extnet::node::node_addr(&policy, &layout, &mut nl)?;
            let loaded = extnet::node::ensure(&policy, &layout, &mut nl, idx, addr, None)?;
            println!(
                "node {}: base {} (address {addr}, {} slots in {} port pool(s))",
                layout.node,
                if loaded { "loaded" } else { "already current" },
                policy.slots(),
                policy.pools.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Node {
            cmd: NodeCmd::Teardown { node },
        } => {
            let policy = Policy::load(&cli.policy)?;
            let layout = Layout::new(&policy, &node_name(node)?);
            let table = LeaseTable::load(&layout.lease_table(), &layout.node)?;
            if !table.leases.is_empty() {
                anyhow::bail!(
                    "{} external jobs still hold leases on {}; end them first",
                    table.leases.len(),
                    layout.node
                );
            }
            let mut nl = extnet::kernel::netlink::Netlink::open()?;
            let errors = extnet::node::teardown(&policy, &layout, &mut nl);
            if errors.is_empty() {
                println!("node {}: base removed", layout.node);
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("teardown left errors:\n  {}", errors.join("\n  "))
            }
        }
    }
}

fn check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let policy = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("{}: valid", file.display());
    print!("{}", extnet_policy::report::summary(&policy));
    // names this host cannot resolve: a typo, or a name only other hosts know (NSS)
    let mut unknown: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for p in &policy.profiles {
        for pr in [&p.allow, &p.deny, &p.auto] {
            for u in pr.users.iter().filter(|u| *u != "*") {
                if nix::unistd::User::from_name(u).ok().flatten().is_none() {
                    unknown
                        .entry(format!("user {u}"))
                        .or_default()
                        .push(&p.name);
                }
            }
            for g in &pr.groups {
                if nix::unistd::Group::from_name(g).ok().flatten().is_none() {
                    unknown
                        .entry(format!("group {g}"))
                        .or_default()
                        .push(&p.name);
                }
            }
        }
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown
            .into_iter()
            .map(|(who, mut profiles)| {
                profiles.dedup();
                format!("{who} (profile {})", profiles.join(", "))
            })
            .collect();
        println!(
            "warning: not known on this host (NSS): {}; check the spelling, or that this host sees the same users and groups as the compute nodes",
            list.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `extnet policy explain`: the decision for a user's job and the rule, in one paragraph.
fn explain(
    policy: &Policy,
    user: String,
    account: Option<String>,
    partition: Option<String>,
    qos: Option<String>,
    profile: Option<String>,
    not_asked: bool,
) {
    // looked up as the prolog does (when a decision needs them); a user unknown here has none
    let groups = nix::unistd::User::from_name(&user)
        .ok()
        .flatten()
        .map(|u| extnet_policy::Groups::lookup(extnet::job::env::group_names, u.gid.as_raw()))
        .unwrap_or_default();
    let id = JobIdentity {
        user,
        groups,
        account,
        partition,
        qos,
    };
    let req = match (profile, not_asked) {
        (Some(p), _) => Request::Profile(p),
        (None, true) => Request::None,
        (None, false) => Request::Any,
    };
    println!("{}", extnet_policy::report::explain(policy, &id, &req));
}

fn status(policy_path: &std::path::Path, node: &str, json: bool) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let layout = Layout::new(&policy, node);
    let table = LeaseTable::load(&layout.lease_table(), node)?;
    let now = lease::now();
    let quarantined = table.quarantine.iter().filter(|q| q.until > now).count();
    let total = policy.slots() as usize;
    let pools = pool_usage(&policy, &table, now);
    // counters of the active slots only (never a listing of the table or a cgroup map)
    let slots: Vec<u32> = table.leases.iter().map(|l| l.slot).collect();
    let counters = extnet::node::counters::read(&slots).map_err(|e| e.to_string());
    let of = |slot: u32| counters.as_ref().ok().and_then(|m| m.get(&slot));
    if json {
        let jobs: Vec<serde_json::Value> = table
            .leases
            .iter()
            .map(|l| {
                let mut v = serde_json::to_value(l).expect("lease serializes");
                v["counters"] = serde_json::to_value(of(l.slot)).expect("counters serialize");
                v
            })
            .collect();
        let mut v = serde_json::json!({
            "node": node,
            // all pools together (every slot of the node)
            "pool": { "blocks": total, "used": table.leases.len(), "quarantined": quarantined,
                      "free": total.saturating_sub(table.leases.len() + quarantined) },
            "pools": pools.iter().map(|u| serde_json::json!({
                "name": u.pool.name(),
                "range": format!("{}-{}", u.pool.ports.first, u.pool.ports.last),
                "block_size": u.pool.ports.block_size,
                "slots": format!("{}-{}", u.pool.slots().start, u.pool.slots().end - 1),
                "gateway": u.pool.gateway.to_string(),
                "route_table": u.pool.route_table,
                "profiles": u.profiles,
                "blocks": u.blocks, "used": u.used, "quarantined": u.quarantined, "free": u.free(),
            })).collect::<Vec<_>>(),
            "jobs": jobs,
        });
        if let Err(e) = &counters {
            v["counters_error"] = e.clone().into();
        }
        v["allowlist_drops"] = match allowlist_drops() {
            Ok(d) => d
                .into_iter()
                .map(|(name, packets, bytes)| serde_json::json!({ "counter": name, "packets": packets, "bytes": bytes }))
                .collect(),
            Err(e) => serde_json::json!({ "error": e }),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "node {node}: {} external jobs; blocks {} used, {} in quarantine, {} free of {total}",
        table.leases.len(),
        table.leases.len(),
        quarantined,
        total.saturating_sub(table.leases.len() + quarantined)
    );
    for u in &pools {
        println!(
            "  pool {}: ports {}-{} in blocks of {}, gateway {}: {} used, {} in quarantine, {} free of {} (profiles: {})",
            u.pool.name(),
            u.pool.ports.first,
            u.pool.ports.last,
            u.pool.ports.block_size,
            u.pool.gateway,
            u.used,
            u.quarantined,
            u.free(),
            u.blocks,
            if u.profiles.is_empty() {
                "none".to_owned()
            } else {
                u.profiles.join(", ")
            }
        );
    }
    let stray: Vec<String> = table
        .leases
        .iter()
        .filter(|l| policy.slot_block(l.slot) != Some((l.port_first, l.port_last)))
        .map(|l| {
            format!(
                "job {} (slot {}, ports {}-{})",
                l.job_id, l.slot, l.port_first, l.port_last
            )
        })
        .collect();
    if !stray.is_empty() {
        println!(
            "warning: leases that no longer match the policy's pools (the pools changed while they ran; their traffic now uses the slot's new block and gateway): {}",
            stray.join(", ")
        );
    }
    if !table.leases.is_empty() {
        println!(
            "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} {:<20}  {:>10} {:>10} {:>6}",
            "JOB",
            "USER",
            "MODE",
            "SLOT",
            "MARK",
            "PORTS",
            "PROFILE",
            "SINCE",
            "OUT",
            "IN",
            "CONNS"
        );
        for l in &table.leases {
            let (out, inn, conns) = match of(l.slot) {
                Some(c) => (
                    human_bytes(c.bytes_out),
                    human_bytes(c.bytes_in),
                    c.connections.to_string(),
                ),
                None => ("?".into(), "?".into(), "?".into()),
            };
            println!(
                "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} {:<20}  {out:>10} {inn:>10} {conns:>6}",
                l.job_id,
                l.user,
                l.mode.to_string(),
                l.slot,
                format!("0x{:x}", l.mark),
                format!("{}-{}", l.port_first, l.port_last),
                l.profile,
                lease::rfc3339(l.since)
            );
        }
        if let Err(e) = &counters {
            println!("traffic counters unavailable: {e}");
        }
    }
    print_allowlist_drops(&policy);
    Ok(ExitCode::SUCCESS)
}

/// One pool's use on a node.
struct PoolUsage<'a> {
    pool: &'a extnet_policy::Pool,
    profiles: Vec<&'a str>,
    blocks: usize,
    used: usize,
    quarantined: usize,
}

impl PoolUsage<'_> {
    fn free(&self) -> usize {
        self.blocks.saturating_sub(self.used + self.quarantined)
    }
}

/// Each pool's blocks in use (leases on its slots) and in quarantine (by ports) at `now`.
fn pool_usage<'a>(policy: &'a Policy, table: &LeaseTable, now: u64) -> Vec<PoolUsage<'a>> {
    policy
        .pools
        .iter()
        .enumerate()
        .map(|(i, pool)| PoolUsage {
            pool,
            profiles: policy.profiles_of_pool(i),
            blocks: pool.ports.blocks() as usize,
            used: table
                .leases
                .iter()
                .filter(|l| pool.slots().contains(&l.slot))
                .count(),
            quarantined: table
                .quarantine
                .iter()
                .filter(|q| q.until > now && pool.ports.contains(q.port_first))
                .count(),
        })
        .collect()
}

/// The allowlists' drop counters of this node's nft table.
fn allowlist_drops() -> Result<Vec<(String, u64, u64)>, String> {
    if !extnet::kernel::nftables::table_exists(extnet::plan::TABLE).map_err(|e| e.to_string())? {
        return Ok(Vec::new());
    }
    extnet::node::allowlist::drops()
}

/// `extnet status`: packets each allowlist dropped on this node (since the table was loaded).
fn print_allowlist_drops(policy: &Policy) {
    if !policy.profiles.iter().any(|p| p.destinations.is_some()) {
        return;
    }
    match allowlist_drops() {
        Ok(d) if d.is_empty() => {
            println!("destination allowlists: nothing dropped (no extnet table loaded yet)")
        }
        Ok(d) => {
            println!("destination allowlists, packets dropped on this node since its table was loaded:");
            for (name, packets, bytes) in d {
                match extnet::plan::ruleset::allowlist::profile_of_counter(&name) {
                    Some(p) => println!("  profile {p}: {packets} packets dropped ({bytes} bytes)"),
                    None => println!("  no binding (fail closed): {packets} packets dropped ({bytes} bytes)"),
                }
            }
        }
        Err(e) => println!("destination allowlist counters unavailable: {e}; run extnet status as root in the node's network namespace"),
    }
}

fn accounting(
    policy_path: &std::path::Path,
    job: Option<u32>,
    user: Option<String>,
    node: Option<String>,
    json: bool,
    file: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let files = if file.is_empty() {
        let policy = Policy::load(policy_path)?;
        let this = extnet::job::env::short_hostname();
        let files = accounting::log_files(&policy.log.accounting, node.as_deref(), this.as_deref());
        if files.is_empty() {
            anyhow::bail!(
                "no accounting log matches log.accounting = {:?}; pass --node or --file",
                policy.log.accounting
            );
        }
        files
    } else {
        file
    };
    let read = accounting::read_records(&files)?;
    if let Some(first) = read.bad.first() {
        eprintln!(
            "extnet: skipped {} lines that are not accounting records (first: {first})",
            read.bad.len()
        );
    }
    let records: Vec<accounting::Record> = read
        .records
        .into_iter()
        .filter(|r| job.is_none_or(|j| r.job_id == j))
        .filter(|r| user.as_ref().is_none_or(|u| &r.user == u))
        .filter(|r| node.as_ref().is_none_or(|n| &r.node == n))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!(
            "no accounting records match (read {})",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>8}  {:<12} {:<12} {:<10} {:<20}  {:>9}  {:>10} {:>10} {:>9} {:>9} {:>6}",
        "JOB",
        "USER",
        "NODES",
        "PROFILE",
        "START",
        "DURATION",
        "OUT",
        "IN",
        "PKTS OUT",
        "PKTS IN",
        "CONNS"
    );
    let mut incomplete = Vec::new();
    for t in accounting::totals(&records) {
        let c = &t.counters;
        println!(
            "{:>8}  {:<12} {:<12} {:<10} {:<20}  {:>9}  {:>10} {:>10} {:>9} {:>9} {:>6}",
            t.job_id,
            t.user,
            t.nodes.join(","),
            t.profiles.join(","),
            lease::rfc3339(t.start),
            duration(t.end.saturating_sub(t.start)),
            human_bytes(c.bytes_out),
            human_bytes(c.bytes_in),
            c.packets_out,
            c.packets_in,
            c.connections
        );
        if !t.incomplete.is_empty() {
            incomplete.push(format!("job {} on {}", t.job_id, t.incomplete.join(",")));
        }
    }
    if !incomplete.is_empty() {
        println!(
            "counters could not be read (counted as zero; see the record's \"error\"): {}",
            incomplete.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `2h05m`, `3m07s`, `42s`.
fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn interim(policy_path: &std::path::Path, node: &str) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let layout = Layout::new(&policy, node);
    let interval = policy.log.interim_secs;
    if interval == 0 {
        println!("node {node}: interim records are off (log.interim_secs = 0)");
        return Ok(ExitCode::SUCCESS);
    }
    let table_path = layout.lease_table();
    if !table_path.exists() && !lease::legacy_path(&table_path).exists() {
        println!("node {node}: no lease table, nothing to record");
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = extnet::store::fs::Lock::acquire(&layout.lock_file())?;
    let mut table = LeaseTable::load(&table_path, node)?;
    let n = table.log_interim(&layout.lease_log, lease::now(), interval)?;
    if n > 0 {
        table.store(&table_path)?;
    }
    println!(
        "node {node}: {n} interim records written to {} ({} leases held, interval {interval} s)",
        layout.lease_log.display(),
        table.leases.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn table_dump(
    policy_path: &std::path::Path,
    node: &str,
    file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let path = match file {
        Some(f) => f,
        None => Layout::new(&Policy::load(policy_path)?, node).lease_table(),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (entries, whole) = lease::dump(&bytes, node);
    let mut out = std::io::stdout().lock();
    for e in &entries {
        use std::io::Write;
        writeln!(out, "{}", serde_json::to_string(e)?)?;
    }
    let damaged = entries.iter().filter(|e| e.problem.is_some()).count();
    match whole {
        None => {
            eprintln!(
                "{}: {} records, the table is sound",
                path.display(),
                entries.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(w) => {
            eprintln!(
                "{}: {w}; {} records shown, {damaged} marked \"problem\". Compare them with the lease log, fix or delete those lines, remove their \"problem\" fields, then `extnet lease-table restore FILE`",
                path.display(),
                entries.len()
            );
            Ok(ExitCode::from(1))
        }
    }
}

fn table_restore(
    policy_path: &std::path::Path,
    node: &str,
    dump: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&Policy::load(policy_path)?, node);
    let text = if dump == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(dump).with_context(|| format!("cannot read {}", dump.display()))?
    };
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        entries.push(
            serde_json::from_str::<lease::DumpEntry>(line).with_context(|| {
                format!(
                    "{} line {}: not an entry of `extnet lease-table dump`",
                    dump.display(),
                    i + 1
                )
            })?,
        );
    }
    let mut table = LeaseTable::from_dump(node, entries)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing was written", dump.display()))?;
    let path = layout.lease_table();
    let _lock = extnet::store::fs::Lock::acquire(&layout.lock_file())?;
    table.store(&path)?;
    println!(
        "node {node}: {} written: {} leases, {} quarantined blocks",
        path.display(),
        table.leases.len(),
        table.quarantine.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `1.5 MiB`-style sizes for tables.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_scales() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}

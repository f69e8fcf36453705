//! `extnet`: the admin's command. `extnet --help` lists what it does.

use anyhow::Context;
use clap::{Parser, Subcommand};
use extnet::layout::Layout;
use extnet::lease::{self, LeaseTable};
use extnet_policy::{decide, Decision, JobIdentity, Policy, Request};
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
    n.or_else(extnet::job::short_hostname)
        .context("cannot tell the node name; pass --node")
}

fn main() -> ExitCode {
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
            let gid = nix::unistd::User::from_name(&user)
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw());
            let groups = gid
                .map(|g| extnet::job::group_names(&user, g))
                .unwrap_or_default();
            let id = JobIdentity {
                user: user.clone(),
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
            let asked = match &req {
                Request::None => "without asking".to_string(),
                Request::Any => "with --external-net".to_string(),
                Request::Profile(p) => format!("with --external-net={p}"),
            };
            let who = format!(
                "A job of user {} (groups: {}; account: {}; partition: {}; qos: {}) {asked}",
                id.user,
                if id.groups.is_empty() {
                    "none found".into()
                } else {
                    id.groups.join(", ")
                },
                id.account.as_deref().unwrap_or("any"),
                id.partition.as_deref().unwrap_or("any"),
                id.qos.as_deref().unwrap_or("any"),
            );
            match decide(&policy, &id, &req) {
                Decision::Granted {
                    profile,
                    auto,
                    rule,
                } => {
                    let mode = policy
                        .profile(&profile)
                        .map(|p| p.mode)
                        .unwrap_or(policy.node.mode);
                    println!(
                        "{who} is GRANTED profile {profile:?} ({mode} mode{}): {rule}.",
                        if auto { ", without asking" } else { "" }
                    );
                }
                Decision::Denied { reason } => println!("{who} is DENIED: {reason}."),
                Decision::NotRequested => {
                    println!("{who} gets NO external access: it did not ask and no profile grants it without asking.")
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Node {
            cmd: NodeCmd::Setup { node },
        } => {
            let policy = Policy::load(&cli.policy)?;
            let layout = Layout::new(&policy, &node_name(node)?);
            let mut nl = extnet::netlink::Netlink::open()?;
            let (idx, addr) = extnet::node::node_addr(&policy, &layout, &mut nl)?;
            let loaded = extnet::node::ensure(&policy, &layout, &mut nl, idx, addr, None)?;
            println!(
                "node {}: base {} (address {addr}, {} slots)",
                layout.node,
                if loaded { "loaded" } else { "already current" },
                policy.ports.blocks()
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
            let mut nl = extnet::netlink::Netlink::open()?;
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
    let n = &policy.node;
    println!("{}: valid", file.display());
    println!(
        "node: default mode {}, interface {}, gateway {}, routing table {}, fwmark 0x{:x}",
        n.mode, n.interface, n.gateway, n.route_table, n.fwmark
    );
    println!(
        "internal (never via the gateway): {}",
        n.internal
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "ports: {}-{} in blocks of {} = {} concurrent external jobs per node; quarantine {} s",
        policy.ports.first,
        policy.ports.last,
        policy.ports.block_size,
        policy.ports.blocks(),
        policy.ports.quarantine_secs
    );
    if policy.profiles.is_empty() {
        println!("profiles: none (nothing is granted)");
    }
    for p in &policy.profiles {
        let who = |pr: &extnet_policy::Principals| {
            let mut v = Vec::new();
            if !pr.users.is_empty() {
                v.push(format!("users {}", pr.users.join(", ")));
            }
            if !pr.groups.is_empty() {
                v.push(format!("groups {}", pr.groups.join(", ")));
            }
            if !pr.accounts.is_empty() {
                v.push(format!("accounts {}", pr.accounts.join(", ")));
            }
            v.join("; ")
        };
        println!(
            "profile {:?} ({} mode): allows {}",
            p.name,
            p.mode,
            who(&p.allow)
        );
        if !p.deny.is_empty() {
            println!("    denies {}", who(&p.deny));
        }
        if !p.auto.is_empty() {
            println!("    grants without asking: {}", who(&p.auto));
        }
        if !p.partitions.is_empty() {
            println!("    only in partitions {}", p.partitions.join(", "));
        }
        if !p.qos.is_empty() {
            println!("    only for QOS {}", p.qos.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(policy_path: &std::path::Path, node: &str, json: bool) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let layout = Layout::new(&policy, node);
    let table = LeaseTable::load(&layout.lease_table(), node)?;
    let now = lease::now();
    let quarantined = table.quarantine.iter().filter(|q| q.until > now).count();
    let total = policy.ports.blocks() as usize;
    if json {
        let v = serde_json::json!({
            "node": node,
            "pool": { "blocks": total, "used": table.leases.len(), "quarantined": quarantined,
                      "free": total.saturating_sub(table.leases.len() + quarantined) },
            "jobs": table.leases,
        });
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
    if !table.leases.is_empty() {
        println!(
            "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} since",
            "JOB", "USER", "MODE", "SLOT", "MARK", "PORTS", "PROFILE"
        );
        for l in &table.leases {
            println!(
                "{:>8}  {:<12} {:<7} {:>5} {:>9}  {:<13} {:<12} {}",
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
    }
    Ok(ExitCode::SUCCESS)
}

//! `extnet`: the admin's command. `extnet --help` lists what it does. A library with the
//! program's [`main`], so the crash tests can run it as the program.
//!
//! This file holds the arguments (clap), [`main`] and the dispatch; each subcommand is a
//! module of `cmd/`:
//!
//! | subcommand                                         | file                 |
//! |----------------------------------------------------|----------------------|
//! | `extnet status`                                    | `cmd/status.rs`      |
//! | `extnet policy check`, `policy explain`            | `cmd/policy.rs`      |
//! | `extnet node setup`/`teardown`/`watch`/`metrics`   | `cmd/node.rs`        |
//! | `extnet accounting`                                | `cmd/accounting.rs`  |
//! | `extnet lease-log interim`                         | `cmd/lease_log.rs`   |
//! | `extnet lease-table dump`, `lease-table restore`   | `cmd/lease_table.rs` |
//! | `extnet reconcile`                                 | `cmd/reconcile.rs`   |
//! | `extnet gateway render`/`--check`/`load`/`metrics` | `cmd/gateway.rs`     |
//! | `extnet trace`                                     | `cmd/trace.rs`       |
//!
//! `cmd/mod.rs` resolves the `--node` default they share; `output.rs` has what they print with
//! (text tables, [`human_bytes`], JSON).

mod cmd;
mod output;

pub use output::human_bytes;

use clap::{CommandFactory, Parser, Subcommand};
use cmd::{gateway_name, node_name};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "extnet",
    version,
    about = "Per-job external network access for Slurm: the admin's tool",
    long_about = "Per-job external network access for Slurm: the admin's tool.\n\n\
        A job that asks (srun --external-net[=PROFILE]) and that the policy grants reaches \
        networks outside the cluster through the site's NAT gateways, from a leased block of \
        source ports recorded in the lease log; every other job stays closed. The SPANK \
        plugin, extnet-prolog(8) and extnet-epilog(8) do that for each job; this command \
        checks and explains the policy, shows what runs on a node, keeps the node's base in \
        place (extnet-node-watch(8), the node agent), renders the NAT gateways' \
        configuration, and traces a public address and port back to the job and user."
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
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
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
    /// The node's base setup (nft tables, ip rules, routing tables, job cgroup root).
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
    /// Tear down the jobs whose epilog never ran, close the leases a reboot ended.
    ///
    /// Tears down jobs Slurm says no longer run on this node (their epilog never ran; the
    /// release record says reason "orphan"), and closes in the lease log the leases a reboot
    /// ended (reason "reboot"). A job with a live step socket in slurmd's spool directory
    /// (SlurmdSpoolDir of slurm.conf) runs; only the others are asked about with squeue. Jobs
    /// Slurm cannot be asked about are left alone. It also drops the records of pinned
    /// namespaces that are gone (extnet status lists them). From a timer: the unit
    /// extnet-reconcile.timer.
    Reconcile {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The slurm.conf squeue reads and SlurmdSpoolDir is taken from (default:
        /// SLURM_CONF, else /etc/slurm/slurm.conf).
        #[arg(long)]
        slurm_conf: Option<PathBuf>,
    },
    /// A NAT gateway's files from the policy's [gateways]: nftables, keepalived, conntrackd.
    Gateway {
        #[command(subcommand)]
        cmd: GatewayCmd,
    },
    /// Who used a public address and port; or, with --job, what a job used.
    ///
    /// The node, job, user, profile and lease interval behind PUBLIC_ADDRESS:PORT, from the
    /// policy's mapping and the lease logs; with --job, the public addresses and ports the
    /// job used. An address the policy's [gateways] do not translate (or any, without
    /// [gateways]) is taken as a node's own IPv4 or IPv6 address and found in the lease
    /// logs alone.
    Trace {
        /// PUBLIC_ADDRESS:PORT as the outside saw it ([IPV6_ADDRESS]:PORT for IPv6), or the
        /// address alone with the port as the next argument; or a node's own address and
        /// port (no [gateways]).
        #[arg(required_unless_present = "job", conflicts_with = "job")]
        target: Option<String>,
        /// The port, when TARGET is the address alone (`extnet trace 2001:db8::101 20166`).
        #[arg(requires = "target")]
        port: Option<String>,
        /// The time (YYYY-MM-DDTHH:MM:SSZ, UTC, or Unix seconds); without it, every lease of
        /// the port's block in the logs.
        #[arg(long)]
        at: Option<String>,
        /// The public addresses and ports this job used.
        #[arg(long)]
        job: Option<u32>,
        /// A lease log, or a directory of collected lease logs (repeatable; default: the
        /// policy's log.lease_log of the node).
        #[arg(long)]
        log: Vec<PathBuf>,
        /// Without --log: the node whose lease log to read (for --job, and for a node's own
        /// address: default every node's log the policy's log.lease_log names).
        #[arg(long)]
        node: Option<String>,
        /// One JSON object instead of the text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum GatewayCmd {
    /// Write the gateway's nftables.conf, keepalived.conf, conntrackd.conf and scripts.
    ///
    /// Pure: the same policy gives the same bytes. With --check, compares the running
    /// gateway and the files with the rendering instead. At boot the unit
    /// extnet-gateway.service renders and loads them before keepalived and conntrackd start.
    Render {
        /// The gateway: a [[gateways.host]] name of the policy (default: this host's name up
        /// to the first dot).
        #[arg(long)]
        host: Option<String>,
        /// Where the files go, and the directory they name each other by.
        #[arg(long, default_value = cmd::gateway::DEFAULT_DIR)]
        out: PathBuf,
        /// Where keepalived's notify script records each VRRP instance's state
        /// (DIR/vrrp/INSTANCE), for `extnet gateway metrics`.
        #[arg(long, value_name = "DIR", default_value = extnet::plan::gateway::STATE_DIR)]
        state_dir: PathBuf,
        /// Write nothing: compare this namespace's nft table and the files in --out with the
        /// rendering, print the differences (exit status 1 when any).
        #[arg(long)]
        check: bool,
    },
    /// This gateway's metrics in Prometheus' text format: VRRP states, translated
    /// connections by public address, conntrack's entries and maximum.
    ///
    /// For node_exporter's textfile collector, from the unit extnet-gateway-metrics.timer
    /// (every minute, when node_exporter's textfile directory exists). Reads no policy. The
    /// translated connections come from one dump of this network namespace's conntrack table
    /// (CAP_NET_ADMIN; without it extnet_gateway_conntrack_dump_ok is 0).
    Metrics {
        /// Replace FILE with them (temp file in its directory, fsync, rename; mode 0644)
        /// instead of printing them.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Where keepalived's notify script records the VRRP states (render's --state-dir).
        #[arg(long, value_name = "DIR", default_value = extnet::plan::gateway::STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Load the host's rendered ruleset into this network namespace (one nft transaction).
    Load {
        /// The gateway: a [[gateways.host]] name of the policy (default: this host's name up
        /// to the first dot).
        #[arg(long)]
        host: Option<String>,
        /// The directory the rendered files are in (the ruleset names nothing in it; the
        /// same as render's).
        #[arg(long, default_value = cmd::gateway::DEFAULT_DIR)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum LeaseTableCmd {
    /// Print every record the table still holds, one JSON line each, damaged ones included
    /// (marked "problem"); says on stderr what is wrong with the file as a whole.
    Dump {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
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
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Subcommand)]
enum LeaseLogCmd {
    /// Write the interim records of the leases held for log.interim_secs.
    ///
    /// Writes an `interim` record for every lease whose last record is log.interim_secs old.
    /// Run it from a timer on each node: the unit extnet-interim.timer runs it every 10
    /// minutes.
    Interim {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
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
        /// The job's user (their groups are looked up as the prolog does).
        #[arg(long)]
        user: String,
        /// The job's Slurm account.
        #[arg(long)]
        account: Option<String>,
        /// The job's partition.
        #[arg(long)]
        partition: Option<String>,
        /// The job's QOS.
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
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove the base (only when no external job runs on the node and no agent watches it).
    Teardown {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
    },
    /// The node agent: keeps the node's base in place.
    ///
    /// Puts the base back within moments when it drifts (a flushed ruleset, a deleted rule or
    /// link, routes lost in a link flap), driven by the kernel's notifications, until SIGTERM
    /// or SIGINT; one log line per repair, to stderr and log.file. At start it closes in the
    /// lease log the leases a reboot ended. It writes the node's metrics for node_exporter
    /// (--metrics-file) at the start, after each repair and every minute. It never tears the
    /// base down. As a service: the unit extnet-node-watch.service.
    Watch {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
        /// Every this many minutes, tear down jobs Slurm says no longer run on the node, as
        /// `extnet reconcile` does (0, the default: never). Needs squeue, its slurm.conf, and
        /// more than the agent's systemd sandbox allows (IP sockets, killing, unmounting):
        /// the unit extnet-reconcile.timer runs `extnet reconcile` instead.
        #[arg(long, default_value_t = 0)]
        reconcile_minutes: u64,
        /// The slurm.conf squeue reads (default: SLURM_CONF, else Slurm's own default).
        #[arg(long)]
        slurm_conf: Option<PathBuf>,
        /// Where the agent writes the node's metrics (as `extnet node metrics` prints them),
        /// after each repair and at each periodic check; node_exporter's textfile collector
        /// reads them there. Skipped, said once, when the directory does not exist.
        #[arg(long, default_value = extnet::node::metrics::DEFAULT_PATH)]
        metrics_file: PathBuf,
    },
    /// The node's metrics in Prometheus' text format, as the node agent writes them.
    ///
    /// Active external jobs and their traffic by profile, port blocks by pool (used, in
    /// quarantine, free), allowlist drops, denied jobs on the node, conntrack's fill, the time
    /// they were taken. The traffic and drop figures need root (the node's nft counters);
    /// without it the file says they could not be read.
    Metrics {
        /// The node (default: this host's name up to the first dot, as SLURMD_NODENAME
        /// would be).
        #[arg(long)]
        node: Option<String>,
        /// Replace FILE with them (temp file in its directory, fsync, rename; mode 0644), for
        /// node_exporter's textfile collector, instead of printing them.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The command line as clap defines it: what `--help` prints, and what the man pages and the
/// shell completions are generated from (`packaging/docgen`), so they cannot drift.
pub fn command() -> clap::Command {
    Cli::command()
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
            // the cause chain once: most library messages quote their cause already
            eprintln!("extnet: {}", extnet::diag::error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// Runs the subcommand: its exit status, or the error `main` prints after "extnet: ".
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Status { node, json } => cmd::status::show(&cli.policy, &node_name(node)?, json),
        Cmd::Policy {
            cmd: PolicyCmd::Check { file },
        } => cmd::policy::check(&file.unwrap_or(cli.policy)),
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
        } => cmd::policy::explain(
            &cli.policy,
            user,
            account,
            partition,
            qos,
            profile,
            not_asked,
        ),
        Cmd::Node {
            cmd: NodeCmd::Setup { node },
        } => cmd::node::setup(&cli.policy, node),
        Cmd::Node {
            cmd: NodeCmd::Teardown { node },
        } => cmd::node::teardown(&cli.policy, node),
        Cmd::Node {
            cmd:
                NodeCmd::Watch {
                    node,
                    reconcile_minutes,
                    slurm_conf,
                    metrics_file,
                },
        } => cmd::node::watch(
            &cli.policy,
            node,
            std::time::Duration::from_secs(reconcile_minutes * 60),
            slurm_conf,
            metrics_file,
        ),
        Cmd::Node {
            cmd: NodeCmd::Metrics { node, output },
        } => cmd::node::metrics(&cli.policy, node, output),
        Cmd::Accounting {
            job,
            user,
            node,
            json,
            file,
        } => cmd::accounting::show(&cli.policy, job, user, node, json, file),
        Cmd::LeaseLog {
            cmd: LeaseLogCmd::Interim { node },
        } => cmd::lease_log::interim(&cli.policy, &node_name(node)?),
        Cmd::LeaseTable {
            cmd: LeaseTableCmd::Dump { node, file },
        } => cmd::lease_table::dump(&cli.policy, &node_name(node)?, file),
        Cmd::LeaseTable {
            cmd: LeaseTableCmd::Restore { dump, node },
        } => cmd::lease_table::restore(&cli.policy, &node_name(node)?, &dump),
        Cmd::Reconcile {
            node,
            dry_run,
            slurm_conf,
        } => cmd::reconcile::run(&cli.policy, &node_name(node)?, dry_run, slurm_conf),
        Cmd::Gateway {
            cmd:
                GatewayCmd::Render {
                    host,
                    out,
                    state_dir,
                    check,
                },
        } => {
            let host = gateway_name(host)?;
            if check {
                cmd::gateway::check(&cli.policy, &host, &out, &state_dir)
            } else {
                cmd::gateway::render(&cli.policy, &host, &out, &state_dir)
            }
        }
        Cmd::Gateway {
            cmd: GatewayCmd::Load { host, out },
        } => cmd::gateway::load(&cli.policy, &gateway_name(host)?, &out),
        Cmd::Gateway {
            cmd: GatewayCmd::Metrics { output, state_dir },
        } => cmd::gateway::metrics(output, &state_dir),
        Cmd::Trace {
            target,
            port,
            at,
            job,
            log,
            node,
            json,
        } => match (target, job) {
            (_, Some(j)) => cmd::trace::job(&cli.policy, j, log, node, json),
            (Some(t), None) => cmd::trace::address(
                &cli.policy,
                &t,
                port.as_deref(),
                at,
                log,
                node.as_deref(),
                json,
            ),
            (None, None) => anyhow::bail!("give PUBLIC_ADDRESS:PORT or --job N"),
        },
    }
}

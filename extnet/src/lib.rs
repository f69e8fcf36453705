//! extnet: per-job external network access for Slurm — the library behind the prolog, the
//! epilog, the SPANK plugin and the admin CLI.
//!
//! Layers, lowest first. A module uses only the layers below its own (never one beside it or
//! above), so each layer can be read and tested on its own:
//!
//! 1. [`diag`]: failpoints for the crash tests, step timings, logging.
//! 2. [`kernel`]: one module per kernel object (rtnetlink link/addr/route/rule, nf_tables,
//!    network namespaces, cgroups, bpf, sysctl). Knows nothing of jobs or policies.
//! 3. [`plan`]: pure functions from the policy to names, paths, marks, port blocks,
//!    addresses and the node's nftables table (with its allowlists and counters). No I/O
//!    except finding the cgroup2 mount; unit-tested without root.
//! 4. [`store`]: what the node keeps on disk, crash-safe: the lease table and lease log, job
//!    state files, lease markers, the accounting log.
//! 5. [`node`]: the node's base (nft tables, `ip rule`s, routing tables, job cgroup root) and the
//!    per-slot elements in it (allowlist bindings, traffic counters); the node's metrics.
//! 6. [`job`]: one job on one node: its identity from Slurm's environment, setup (prolog),
//!    teardown (epilog), its network namespace, limits, and putting a task on its path out
//!    (plugin, inside slurmstepd).
//! 7. [`hook`]: the frame of the prolog and epilog programs (arguments, policy, logging, the
//!    result line, exit status); the binaries in `prolog/` and `epilog/` are its `main`.
//!
//! The policy file itself (types, parsing, validation, decisions) is the `extnet-policy` crate.

pub mod diag;
pub mod hook;
pub mod job;
pub mod kernel;
pub mod node;
pub mod plan;
pub mod store;

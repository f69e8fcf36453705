//! One module per subcommand of `extnet` (the map is in the crate's doc), and the one
//! argument they share.

pub mod accounting;
pub mod gateway;
pub mod lease_log;
pub mod lease_table;
pub mod node;
pub mod policy;
pub mod reconcile;
pub mod status;
pub mod trace;

use anyhow::Context;

/// The node a subcommand is about: `--node`, else this host's short name (as
/// `SLURMD_NODENAME` would be).
pub fn node_name(n: Option<String>) -> anyhow::Result<String> {
    n.or_else(extnet::job::env::short_hostname)
        .context("cannot tell the node name; pass --node")
}

/// The gateway a subcommand is about: `--host`, else this host's short name.
pub fn gateway_name(h: Option<String>) -> anyhow::Result<String> {
    h.or_else(extnet::job::env::short_hostname)
        .context("cannot tell this host's name; pass --host")
}

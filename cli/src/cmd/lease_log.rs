//! `extnet lease-log interim`: an `interim` record in the lease log for every lease held long
//! enough (run from a timer on each node).

use extnet::plan::layout::Layout;
use extnet::store::lease::{self, LeaseTable};
use extnet_policy::Policy;
use std::path::Path;
use std::process::ExitCode;

/// `extnet lease-log interim` on `node`: under the node lock, records every lease whose last
/// lease-log record is `log.interim_secs` old, and stores the table if it wrote any.
pub fn interim(policy_path: &Path, node: &str) -> anyhow::Result<ExitCode> {
    let policy = Policy::load_for_node(policy_path, node)?;
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

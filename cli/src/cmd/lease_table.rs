//! `extnet lease-table dump` and `extnet lease-table restore`: inspect and repair a node's
//! lease table (`<state_dir>/leases.table`) that the prolog refuses.

use anyhow::Context;
use extnet::plan::layout::Layout;
use extnet::store::lease::{self, LeaseTable};
use extnet_policy::Policy;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `extnet lease-table dump`: every record of `file` (default: `node`'s table) as a JSON line
/// on stdout, damaged ones marked "problem"; on stderr whether the table is sound, and what to
/// do when it is not (then the exit status is 1).
pub fn dump(policy_path: &Path, node: &str, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = match file {
        Some(f) => f,
        None => Layout::new(&Policy::load_for_node(policy_path, node)?, node).lease_table(),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (entries, whole) = lease::dump(&bytes, node);
    let mut out = std::io::stdout().lock();
    for e in &entries {
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

/// `extnet lease-table restore`: replaces `node`'s table with the entries of `dump` (a file,
/// or "-" for stdin), under the node lock, once they pass the checks every prolog makes.
pub fn restore(policy_path: &Path, node: &str, dump: &Path) -> anyhow::Result<ExitCode> {
    let layout = Layout::new(&Policy::load_for_node(policy_path, node)?, node);
    let text = if dump == Path::new("-") {
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

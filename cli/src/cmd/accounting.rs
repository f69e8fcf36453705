//! `extnet accounting`: the per-job traffic records the epilogs wrote (`log.accounting`),
//! filtered and summed per job.

use crate::output::{self, human_bytes, Column};
use extnet::store::accounting::{self, Record};
use extnet::store::lease;
use extnet_policy::Policy;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The table of jobs, one line each: the totals of both IP families, then their IPv6 part.
const JOBS: [Column; 14] = [
    Column::right("JOB", 8),
    Column::left("USER", 12).apart(),
    Column::left("NODES", 12),
    Column::left("PROFILE", 10),
    Column::left("START", 20),
    Column::right("DURATION", 9).apart(),
    Column::right("OUT", 10).apart(),
    Column::right("IN", 10),
    Column::right("PKTS OUT", 9),
    Column::right("PKTS IN", 9),
    Column::right("CONNS", 6),
    Column::right("OUT6", 10).apart(),
    Column::right("IN6", 10),
    Column::right("CONNS6", 6),
];

/// `extnet accounting`: the records of `file` (default: the policy's `log.accounting` files
/// of `node` or this host) that match `job`, `user` and `node`, as JSON records or a table of
/// per-job totals.
pub fn show(
    policy_path: &Path,
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
    let records: Vec<Record> = read
        .records
        .into_iter()
        .filter(|r| job.is_none_or(|j| r.job_id == j))
        .filter(|r| user.as_ref().is_none_or(|u| &r.user == u))
        .filter(|r| node.as_ref().is_none_or(|n| &r.node == n))
        .collect();
    if json {
        output::print_json(&records)?;
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
    println!("{}", output::header(&JOBS));
    let mut incomplete = Vec::new();
    for t in accounting::totals(&records) {
        let c = &t.counters;
        println!(
            "{}",
            output::row(
                &JOBS,
                [
                    &t.job_id,
                    &t.user,
                    &t.nodes.join(","),
                    &t.profiles.join(","),
                    &lease::rfc3339(t.start),
                    &duration(t.end.saturating_sub(t.start)),
                    &human_bytes(c.bytes_out),
                    &human_bytes(c.bytes_in),
                    &c.packets_out,
                    &c.packets_in,
                    &c.connections,
                    &human_bytes(c.bytes_out6),
                    &human_bytes(c.bytes_in6),
                    &c.connections6,
                ]
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's lines are those of the format string it replaced.
    #[test]
    fn jobs_table_lines() {
        let format = |cells: [&dyn std::fmt::Display; 14]| {
            let [a, b, c, d, e, f, g, h, i, j, k, l, m, n] = cells;
            format!(
                "{a:>8}  {b:<12} {c:<12} {d:<10} {e:<20}  {f:>9}  {g:>10} {h:>10} {i:>9} {j:>9} {k:>6}  {l:>10} {m:>10} {n:>6}"
            )
        };
        let head = [
            "JOB", "USER", "NODES", "PROFILE", "START", "DURATION", "OUT", "IN", "PKTS OUT",
            "PKTS IN", "CONNS", "OUT6", "IN6", "CONNS6",
        ];
        assert_eq!(
            output::header(&JOBS),
            format(head.each_ref().map(|s| s as &dyn std::fmt::Display))
        );
        let start = lease::rfc3339(1_700_000_000);
        let (out6, in6) = (human_bytes(512), human_bytes(0));
        let cells: [&dyn std::fmt::Display; 14] = [
            &4242u32,
            &"alice",
            &"n1,n2",
            &"downloads",
            &start,
            &duration(7507),
            &human_bytes(1536),
            &human_bytes(0),
            &12u64,
            &3u64,
            &1u64,
            &out6,
            &in6,
            &0u64,
        ];
        assert_eq!(output::row(&JOBS, cells), format(cells));
    }

    #[test]
    fn duration_units() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(187), "3m07s");
        assert_eq!(duration(7507), "2h05m");
    }
}

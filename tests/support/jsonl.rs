//! extnet's JSON-lines logs (the lease log, the accounting log), read back by the tests.

use std::path::Path;

/// The records of the JSON-lines log at `path`, in order; none when there is no such file.
/// Panics on a line that is not JSON, naming the file and the line.
pub fn read(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("log {} has a bad line {line:?}: {e}", path.display()))
        })
        .collect()
}

//! When the machine booted: `btime` in `/proc/stat` (`grep btime /proc/stat`).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("cannot read the boot time from {path}: {detail}")]
pub struct BootTimeError {
    path: String,
    detail: String,
}

/// The boot time of the machine, Unix seconds (`btime` in `/proc/stat`).
pub fn time() -> Result<u64, BootTimeError> {
    time_from(Path::new("/proc/stat"))
}

/// `btime` of a `/proc/stat`-format file at `path`.
pub fn time_from(path: &Path) -> Result<u64, BootTimeError> {
    let err = |detail: String| BootTimeError {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).ok_or_else(|| err("no btime line".into()))
}

fn parse(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn btime_is_read_from_its_line() {
        assert_eq!(
            super::parse("cpu  1 2 3\nintr 5\nbtime 1765000000\nprocesses 9\n"),
            Some(1_765_000_000)
        );
        assert_eq!(super::parse("cpu 1\n"), None);
        assert!(super::time().unwrap() > 1_000_000_000);
    }
}

//! Waiting for the kernel, slurmd or an epilog to get somewhere: a check polled until it
//! holds, with a deadline.

use std::time::{Duration, Instant};

/// Calls `check` every `every` until it returns `Ok`, and returns that value; after
/// `timeout` (counted from the first call) returns the last `Err` instead: what was still
/// wrong.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// [`poll`], and panics with what was still wrong when `timeout` has passed.
pub fn until<T>(timeout: Duration, every: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    poll(timeout, every, check).unwrap_or_else(|e| panic!("{e}"))
}

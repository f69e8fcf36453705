//! Diagnostics shared by every layer: [`failpoint`] (crash tests kill a program at a named
//! point), [`timings`] (wall time of each step of a prolog or epilog, logged with its result)
//! and [`logging`] (stderr and the node's log file).

pub mod failpoint;
pub mod logging;
pub mod timings;

/// `error` and its sources as one line (`outer: inner: ...`), leaving out a source whose text
/// the message before it already contains (most of extnet's messages quote their cause).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut s = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        next = e.source();
    }
    s
}

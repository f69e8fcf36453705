//! Wall time of each step of one prolog or epilog run, logged with the run's result line
//! (`steps=lock:110 lease-load:48 ...`, microseconds), so that an admin who sees slow job
//! starts can tell a slow disk (`lease-store`), a big lease table (`lease-load`) or the kernel
//! (`netns-setup`) apart without a profiler. A step is the time since the previous one.
//!
//! One run per process and no threads (the prolog and epilog are single-threaded programs);
//! marks cost a clock read and a push. Unused in the SPANK plugin.

use std::cell::RefCell;
use std::fmt::Write;
use std::time::Instant;

struct Marks {
    /// `prolog` or `epilog`: the prefix of the failpoints of [`done`].
    program: &'static str,
    last: Instant,
    steps: Vec<(&'static str, u32)>,
}

thread_local! {
    static MARKS: RefCell<Option<Marks>> = const { RefCell::new(None) };
}

/// Starts timing `program` (`prolog` or `epilog`) again: forgets earlier marks.
pub fn start(program: &'static str) {
    MARKS.with(|m| {
        *m.borrow_mut() = Some(Marks {
            program,
            last: Instant::now(),
            steps: Vec::with_capacity(16),
        })
    });
}

/// Ends the step `name`: its time (since [`start`] or the previous step) goes to the result
/// line, and in a crash test `EXTNET_FAILPOINT=<program>-after-<name>` kills the process here
/// ([`super::failpoint`]). The one hook a step of the prolog or epilog needs. Nothing before
/// [`start`] (the plugin, unit tests).
pub fn done(name: &'static str) {
    let program = MARKS.with(|m| {
        let mut m = m.borrow_mut();
        let m = m.as_mut()?;
        let now = Instant::now();
        let us = (now - m.last).as_micros().min(u32::MAX as u128) as u32;
        m.steps.push((name, us));
        m.last = now;
        Some(m.program)
    });
    if let Some(program) = program {
        super::failpoint::after(program, name);
    }
}

/// The steps so far, `name:micros` separated by spaces (empty when none).
pub fn summary() -> String {
    MARKS.with(|m| {
        let mut out = String::new();
        if let Some(m) = m.borrow().as_ref() {
            for (name, us) in &m.steps {
                if !out.is_empty() {
                    out.push(' ');
                }
                let _ = write!(out, "{name}:{us}");
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_listed_in_order_with_their_time() {
        done("before-start");
        assert_eq!(summary(), "");
        start("prolog");
        done("lock");
        std::thread::sleep(std::time::Duration::from_millis(3));
        done("lease-load");
        let s = summary();
        let parts: Vec<(&str, u32)> = s
            .split(' ')
            .map(|p| {
                let (n, us) = p.split_once(':').unwrap();
                (n, us.parse().unwrap())
            })
            .collect();
        assert_eq!(parts.len(), 2, "{s}");
        assert_eq!(parts[0].0, "lock");
        assert_eq!(parts[1].0, "lease-load");
        assert!(parts[1].1 >= 3000, "{s}");
        start("prolog");
        assert_eq!(summary(), "");
    }
}

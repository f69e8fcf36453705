//! Figures of a series of timings.

use std::fmt;
use std::time::Duration;

/// The middle and the spread of a series of timings.
pub struct Summary {
    pub n: usize,
    pub median: Duration,
    pub p10: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

impl Summary {
    /// The figures of `times`; panics when there are none.
    pub fn of(mut times: Vec<Duration>) -> Summary {
        assert!(!times.is_empty(), "no timings");
        times.sort();
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        Summary {
            n: times.len(),
            median: times[times.len() / 2],
            p10: at(0.1),
            p90: at(0.9),
            p99: at(0.99),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "median {:>10}   p10 {:>10}   p90 {:>10}   p99 {:>10}   (n={})",
            human(self.median),
            human(self.p10),
            human(self.p90),
            human(self.p99),
            self.n
        )
    }
}

/// Prints `label` and the figures of `times`, one line.
pub fn show(label: &str, times: Vec<Duration>) {
    println!("{label:<50} {}", Summary::of(times));
}

/// `d` in the unit that suits it: `12.3 us`, `1.234 ms`, `2.345 s`.
pub fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.1} us")
    } else if us < 1e6 {
        format!("{:.3} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

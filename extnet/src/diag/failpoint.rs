//! Failpoints for the crash tests: `EXTNET_FAILPOINT=<name>` makes the prolog or epilog kill
//! itself with SIGKILL when it reaches the step of that name, as a power cut, an OOM kill or
//! slurmd's prolog timeout would. `tests/crash.rs` runs the real binaries with each name and
//! checks that the epilog then leaves nothing behind.
//!
//! Not a way in for users: slurmd builds the prolog's and epilog's environment itself (the job's
//! own variables reach them only as `SPANK_*`), so only root can set it. Unset (production), it
//! costs one environment lookup per process.

use std::sync::OnceLock;

/// Points of the prolog's grant path that the crash tests kill it at, in order (netns-mode
/// points are skipped in cgroup mode). `prolog-after-<step>` is the end of a timed step
/// ([`super::timings::done`]); the others are points inside or between steps ([`hit`]).
pub const PROLOG: &[&str] = &[
    "prolog-after-lock",
    "prolog-after-lease-marker",
    "prolog-after-lease-store",
    "prolog-after-node-ensure",
    "prolog-netns-file-created",
    "prolog-after-netns-created",
    "prolog-after-veth",
    "prolog-after-addresses-routes",
    "prolog-after-lease-log",
    "prolog-before-state-file",
    "prolog-after-state-file",
];

/// Prolog steps that only netns mode reaches.
pub const PROLOG_NETNS_ONLY: &[&str] = &[
    "prolog-netns-file-created",
    "prolog-after-netns-created",
    "prolog-after-veth",
    "prolog-after-addresses-routes",
];

/// Points of the epilog's teardown that the crash tests kill it at, in order.
pub const EPILOG: &[&str] = &[
    "epilog-after-lock",
    "epilog-after-cgroup-teardown",
    "epilog-after-netns-teardown",
    "epilog-after-release-log",
    "epilog-after-lease-store",
    "epilog-before-state-removed",
];

/// The variable that arms a failpoint.
pub const VAR: &str = "EXTNET_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Kills the process with SIGKILL when `EXTNET_FAILPOINT` names this point.
pub fn hit(point: &'static str) {
    debug_assert!(
        PROLOG.contains(&point) || EPILOG.contains(&point),
        "{point}"
    );
    if armed() == Some(point) {
        kill(point);
    }
}

/// Kills the process with SIGKILL when `EXTNET_FAILPOINT` is `<program>-after-<step>`: the
/// end of a timed step ([`super::timings::done`]).
pub fn after(program: &str, step: &str) {
    let Some(armed) = armed() else { return };
    let named = armed
        .strip_prefix(program)
        .and_then(|r| r.strip_prefix("-after-"))
        == Some(step);
    if named {
        kill(armed);
    }
}

fn kill(point: &str) {
    tracing::warn!(
        failpoint = point,
        "{VAR}={point}: killing this process with SIGKILL (crash test)"
    );
    // SAFETY: raise(3) has no memory-safety preconditions; SIGKILL cannot be caught, so the
    // process ends here without unwinding or running destructors, as in a real crash.
    unsafe {
        libc::raise(libc::SIGKILL);
    }
}

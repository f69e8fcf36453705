//! Failpoints for the crash tests: `EXTNET_FAILPOINT=<name>` makes the prolog or epilog kill
//! itself with SIGKILL when it reaches the step of that name, as a power cut, an OOM kill or
//! slurmd's prolog timeout would. `tests/crash.rs` runs the real binaries with each name and
//! checks that the epilog then leaves nothing behind.
//!
//! Not a way in for users: slurmd builds the prolog's and epilog's environment itself (the job's
//! own variables reach them only as `SPANK_*`), so only root can set it. Unset (production), it
//! costs one environment lookup per process.

use std::sync::OnceLock;

/// Steps of the prolog's grant path, in order (netns-mode steps are skipped in cgroup mode).
pub const PROLOG: &[&str] = &[
    "prolog-after-lock",
    "prolog-after-lease-marker",
    "prolog-after-lease-stored",
    "prolog-after-base-ensure",
    "prolog-netns-file-created",
    "prolog-after-netns-created",
    "prolog-after-veth",
    "prolog-after-addresses-routes",
    "prolog-after-allocate-logged",
    "prolog-before-state-stored",
    "prolog-after-state-stored",
];

/// Prolog steps that only netns mode reaches.
pub const PROLOG_NETNS_ONLY: &[&str] = &[
    "prolog-netns-file-created",
    "prolog-after-netns-created",
    "prolog-after-veth",
    "prolog-after-addresses-routes",
];

/// Steps of the epilog's teardown, in order.
pub const EPILOG: &[&str] = &[
    "epilog-after-lock",
    "epilog-after-kill",
    "epilog-after-netns-teardown",
    "epilog-after-release-logged",
    "epilog-after-lease-stored",
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

/// Kills the process with SIGKILL when `EXTNET_FAILPOINT` names this step.
pub fn hit(step: &'static str) {
    debug_assert!(PROLOG.contains(&step) || EPILOG.contains(&step), "{step}");
    if armed() == Some(step) {
        tracing::warn!(
            failpoint = step,
            "{VAR}={step}: killing this process with SIGKILL (crash test)"
        );
        // SAFETY: raise(3) has no memory-safety preconditions; SIGKILL cannot be caught, so
        // the process ends here without unwinding or running destructors, as in a real crash.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

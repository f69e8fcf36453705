//! What one process remembers between SPANK callbacks.
//!
//! srun, sbatch, salloc and slurmstepd each load the plugin; slurmstepd forks one child per
//! task, and each child inherits a copy of this state. The plugin never starts threads and
//! Slurm calls the callbacks one at a time, so the lock is never contended; it exists to avoid
//! `static mut`. Nothing else in the process touches it, so a fork cannot copy it locked.

use crate::placement::{JobRef, Placement};
use extnet_policy::Request;
use std::sync::{Mutex, PoisonError};

#[derive(Debug)]
pub struct Session {
    /// The last `--external-net` value seen by the option callback (local or remote).
    pub request: Request,
    /// Remote: the step's job on this node and what its tasks do, resolved once per step.
    pub resolved: Option<(JobRef, Placement)>,
    /// Task child: the grant was applied to this task.
    pub joined: bool,
    /// Task child: why this task must not run (told to the user in `task_init`).
    pub failure: Option<String>,
}

static SESSION: Mutex<Session> = Mutex::new(Session {
    request: Request::None,
    resolved: None,
    joined: false,
    failure: None,
});

/// Runs `f` on the process's session. Keep `f` short: no Slurm calls inside.
pub fn with<R>(f: impl FnOnce(&mut Session) -> R) -> R {
    // A panic while the lock was held (caught by the guard) leaves plain data behind: go on.
    let mut guard = SESSION.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_panic_while_locked() {
        let r = std::panic::catch_unwind(|| {
            with(|s| {
                s.request = Request::Profile("cern".into());
                panic!("while locked");
            })
        });
        assert!(r.is_err());
        // The lock is poisoned now; the session is still usable and kept its value.
        assert_eq!(with(|s| s.request.clone()), Request::Profile("cern".into()));
        with(|s| s.request = Request::None);
    }
}

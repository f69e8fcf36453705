//! The one guard every C entry point goes through.
//!
//! A panic must not unwind into Slurm (it would abort srun or slurmstepd), and `panic = "abort"`
//! would take slurmstepd down. So each callback runs under `catch_unwind`; an error or a panic
//! is logged and becomes Slurm's error code.

use std::any::Any;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Slurm's success code for SPANK callbacks.
pub const OK: c_int = 0;
/// Slurm's failure code for SPANK callbacks (and option callbacks).
pub const FAILED: c_int = -1;

/// Runs callback `name`: `Ok` → [`OK`]; `Err(message)` → `log_error(message)`, [`FAILED`];
/// panic → `log_error` names the callback and the panic, [`FAILED`].
pub fn run(name: &str, log_error: fn(&str), f: impl FnOnce() -> Result<(), String>) -> c_int {
    // AssertUnwindSafe: after a panic the plugin's only shared state (the session) holds plain
    // values that stay valid, and the callback reports failure.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => OK,
        Ok(Err(message)) => {
            log_error(&message);
            FAILED
        }
        Err(payload) => {
            log_error(&format!(
                "internal error in {name}: {}; please report this to the extnet maintainers",
                panic_message(payload.as_ref())
            ));
            FAILED
        }
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-text payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    fn log(m: &str) {
        LOGGED.with(|l| l.borrow_mut().push(m.to_owned()));
    }

    fn logged() -> Vec<String> {
        LOGGED.with(|l| l.take())
    }

    #[test]
    fn ok_is_zero_and_silent() {
        assert_eq!(run("cb", log, || Ok(())), OK);
        assert!(logged().is_empty());
    }

    #[test]
    fn error_is_logged_and_fails() {
        assert_eq!(run("cb", log, || Err("no".into())), FAILED);
        assert_eq!(logged(), ["no"]);
    }

    #[test]
    fn panic_is_caught_logged_and_fails() {
        let rc = run("slurm_spank_init", log, || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            if i > 2 {
                panic!("boom {i}");
            }
            Ok(())
        });
        assert_eq!(rc, FAILED);
        let l = logged();
        assert_eq!(l.len(), 1);
        assert!(
            l[0].contains("internal error in slurm_spank_init: boom 3"),
            "{}",
            l[0]
        );
    }
}

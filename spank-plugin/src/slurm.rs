//! The thin, safe wrapper around the SPANK API (bindgen's [`extnet_slurm_sys`]): the only place
//! that calls into Slurm. Not built for unit tests: its symbols exist only inside srun, sbatch,
//! salloc and slurmstepd.

use extnet_slurm_sys as sys;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;

/// Which program loaded the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// srun.
    Local,
    /// sbatch or salloc.
    Allocator,
    /// slurmstepd (one per step and node; tasks are its children).
    Remote,
    /// slurmd or the job script context: extnet has no callbacks there.
    Other,
}

/// The context of the plugin stack of this process.
pub fn context() -> Context {
    // SAFETY: spank_context takes no arguments and only reads the loaded stack's type.
    match unsafe { sys::spank_context() } {
        sys::S_CTX_LOCAL => Context::Local,
        sys::S_CTX_ALLOCATOR => Context::Allocator,
        sys::S_CTX_REMOTE => Context::Remote,
        _ => Context::Other,
    }
}

/// A SPANK call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpankError {
    pub call: &'static str,
    pub code: sys::spank_err_t,
}

impl fmt::Display for SpankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: spank_strerror returns a pointer to a static, NUL-terminated string for every
        // value ("Unknown" for codes it does not know).
        let text = unsafe { CStr::from_ptr(sys::spank_strerror(self.code)) };
        write!(
            f,
            "{} failed: {} (error {})",
            self.call,
            text.to_string_lossy(),
            self.code
        )
    }
}

fn check(call: &'static str, code: sys::spank_err_t) -> Result<(), SpankError> {
    if code == sys::ESPANK_SUCCESS {
        Ok(())
    } else {
        Err(SpankError { call, code })
    }
}

/// The handle Slurm passes to one callback.
pub struct Spank {
    raw: sys::spank_t,
}

impl Spank {
    /// # Safety
    /// `raw` must be the handle Slurm passed to the running callback, used only during it.
    pub unsafe fn new(raw: sys::spank_t) -> Spank {
        Spank { raw }
    }

    /// Registers a command line option (only valid in `slurm_spank_init`). Slurm copies the
    /// strings, so `opt` only has to live during the call.
    pub fn register_option(&self, opt: &mut sys::spank_option) -> Result<(), SpankError> {
        // SAFETY: self.raw is the callback's handle; opt points to a valid spank_option whose
        // strings are NUL-terminated and which Slurm copies before returning.
        check("spank_option_register", unsafe {
            sys::spank_option_register(self.raw, opt)
        })
    }

    /// The job id (local and remote contexts).
    pub fn job_id(&self) -> Result<u32, SpankError> {
        let mut id: u32 = 0;
        // SAFETY: for S_JOB_ID spank_get_item writes one uint32_t through the pointer passed
        // as its variadic argument; `id` is a live u32.
        let rc = unsafe { sys::spank_get_item(self.raw, sys::S_JOB_ID, &mut id as *mut u32) };
        check("spank_get_item(S_JOB_ID)", rc)?;
        Ok(id)
    }

    /// True when `name` is set in the step's (job's) environment (remote context only).
    pub fn env_has(&self, name: &CStr) -> Result<bool, SpankError> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: name is NUL-terminated; buf is writable for the length given; Slurm writes
        // at most that many bytes, NUL included.
        let rc = unsafe {
            sys::spank_getenv(
                self.raw,
                name.as_ptr(),
                buf.as_mut_ptr(),
                buf.len() as c_int,
            )
        };
        match rc {
            // The value did not fit: it is there all the same.
            sys::ESPANK_SUCCESS | sys::ESPANK_NOSPACE => Ok(true),
            sys::ESPANK_ENV_NOEXIST => Ok(false),
            code => Err(SpankError {
                call: "spank_getenv",
                code,
            }),
        }
    }

    /// Sets a job control variable (local and allocator contexts): the prolog and epilog see
    /// it as `SPANK_<name>`.
    pub fn job_control_setenv(&self, name: &CStr, value: &str) -> Result<(), SpankError> {
        let value = cstring(value);
        // SAFETY: both strings are NUL-terminated and live during the call; Slurm copies them.
        let rc =
            unsafe { sys::spank_job_control_setenv(self.raw, name.as_ptr(), value.as_ptr(), 1) };
        check("spank_job_control_setenv", rc)
    }
}

/// The plugin's `plugstack.conf` arguments.
///
/// # Safety
/// `av` must be null or point to `ac` valid NUL-terminated strings (as Slurm passes them).
pub unsafe fn args(ac: c_int, av: *const *const c_char) -> Vec<String> {
    if av.is_null() {
        return Vec::new();
    }
    let n = usize::try_from(ac).unwrap_or(0);
    (0..n)
        .filter_map(|i| {
            // SAFETY: i < ac, so av.add(i) is within the array the caller vouches for.
            let p = unsafe { *av.add(i) };
            // SAFETY: a non-null entry is a NUL-terminated string (caller's guarantee).
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// A C string of `s` with NUL bytes dropped (they cannot be passed, and they must not cut a
/// message short).
pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

type LogFn = unsafe extern "C" fn(*const c_char, ...);

fn log(f: LogFn, msg: &str) {
    let msg = cstring(&format!("extnet: {msg}"));
    // SAFETY: a fixed "%s" format with one NUL-terminated string argument: the message can
    // never be read as a format.
    unsafe { f(c"%s".as_ptr(), msg.as_ptr()) }
}

/// Slurm's log at error level (srun/sbatch/salloc: the user's stderr; slurmstepd: slurmd's log).
pub fn error(msg: &str) {
    log(sys::slurm_error, msg)
}

/// Slurm's log at info level. In slurmstepd, `error()` lines are also copied to the step's
/// stderr (srun shows them as `slurmstepd-NODE: error: ...`); info lines are not, unless the
/// user runs `srun -v`.
pub fn info(msg: &str) {
    log(sys::slurm_info, msg)
}

/// Slurm's log at verbose level (`srun -v`, `SlurmdDebug=verbose`).
pub fn verbose(msg: &str) {
    log(sys::slurm_verbose, msg)
}

/// Slurm's log at debug level.
pub fn debug(msg: &str) {
    log(sys::slurm_debug, msg)
}

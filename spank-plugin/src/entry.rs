//! The C entry points Slurm calls, each behind [`guard::run`].
//!
//! Who calls what (Slurm 22.05, `src/common/plugstack.c` and `slurmstepd/mgr.c`):
//!
//! | program | context | callbacks, in order |
//! |---|---|---|
//! | srun | local | `init`, option callback (remote = 0), `init_post_opt` |
//! | sbatch, salloc | allocator | `init`, option callback, `init_post_opt` |
//! | slurmstepd | remote | `init`, option callback (remote = 1, value forwarded by srun, or from the batch job's environment), `init_post_opt`; then per task, in the forked child: `task_init_privileged` (root, stdio not yet the user's), `task_init` (as the user, stderr is the user's, just before exec) |
//!
//! extnet defines no slurmd or job script callbacks, so slurmd and the prolog/epilog context
//! never load it.
//!
//! How a request travels (measured on Slurm 22.05.8):
//!
//! - srun creating a job: the option goes to each step's slurmstepd in the launch message; the
//!   step's environment has no trace of it.
//! - sbatch/salloc: the job's environment gets `SLURM_SPANK__SLURM_SPANK_OPTION_extnet_external_net`
//!   (`(null)` when no value was given) and `SLURM_SPANK_EXTNET_REQUEST`. The batch step's
//!   slurmstepd runs the option callback from the first; every srun inside the allocation runs
//!   it too (local context) and forwards the option to its steps.
//! - The prolog and epilog get `SPANK_EXTNET_REQUEST` and
//!   `SPANK__SLURM_SPANK_OPTION_extnet_external_net`.

use crate::args::{self, Config};
use crate::guard::{self, OK};
use crate::placement::{self, JobRef, Placement};
use crate::request::{ARGINFO_C, JOB_CONTROL_VAR_C, OPTION_C, STEP_REQUEST_VAR_C, USAGE_C};
use crate::slurm::{self, Context, Spank};
use crate::{nodename, request, session};
use extnet_policy::{Policy, Request, Submitter};
use extnet_slurm_sys as sys;
use std::ffi::{c_char, c_int, CStr};

type Argv = *mut *mut c_char;

/// The plugstack.conf arguments.
///
/// # Safety
/// `ac`/`av` as Slurm passes them to a callback.
unsafe fn config(ac: c_int, av: Argv) -> Result<Config, String> {
    // SAFETY: the caller passes Slurm's argument vector of this callback.
    let args = unsafe { slurm::args(ac, av.cast_const().cast()) };
    args::parse(&args).map_err(|e| e.to_string())
}

/// Registers `--external-net[=PROFILE]` in every context that parses or forwards it.
///
/// # Safety
/// Called by Slurm with this callback's handle and arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_init(sp: sys::spank_t, ac: c_int, av: Argv) -> c_int {
    guard::run("slurm_spank_init", slurm::error, || {
        // SAFETY: Slurm's arguments of this callback.
        unsafe { config(ac, av) }?;
        if slurm::context() == Context::Other {
            return Ok(());
        }
        // SAFETY: sp is this callback's handle, used only during it.
        let spank = unsafe { Spank::new(sp) };
        let mut opt = sys::spank_option {
            // Slurm copies these strings and never writes through the pointers.
            name: OPTION_C.as_ptr().cast_mut(),
            arginfo: ARGINFO_C.as_ptr().cast_mut(),
            usage: USAGE_C.as_ptr().cast_mut(),
            // 2: optional argument (`--external-net` or `--external-net=PROFILE`).
            has_arg: 2,
            val: 0,
            cb: Some(external_net_option),
        };
        spank
            .register_option(&mut opt)
            .map_err(|e| format!("cannot register --{}: {e}", request::OPTION))
    })
}

/// `--external-net[=PROFILE]`: srun/sbatch/salloc check the value (a bad one makes them refuse
/// the option); slurmstepd learns that the step asked.
///
/// # Safety
/// Called by Slurm; `optarg` is null or a NUL-terminated string.
unsafe extern "C" fn external_net_option(
    _val: c_int,
    optarg: *const c_char,
    remote: c_int,
) -> c_int {
    guard::run("the --external-net option", slurm::error, || {
        let value = (!optarg.is_null()).then(|| {
            // SAFETY: non-null optarg is a NUL-terminated string owned by Slurm for the call.
            unsafe { CStr::from_ptr(optarg) }
                .to_string_lossy()
                .into_owned()
        });
        match request::parse_value(value.as_deref()) {
            Ok(r) => {
                session::with(|s| s.request = r);
                Ok(())
            }
            Err(e) => {
                if remote != 0 {
                    // The step asked, even if badly (srun checks values, so only a hand-set
                    // environment gets here): remember that it asked, so that a missing
                    // decision fails its tasks instead of passing unnoticed.
                    session::with(|s| s.request = Request::Any);
                }
                Err(e.to_string())
            }
        }
    })
}

/// srun/sbatch/salloc: hand the request to the prolog, and refuse early a profile the site
/// does not have. slurmstepd: decide once per step what its tasks do.
///
/// # Safety
/// Called by Slurm with this callback's handle and arguments.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_init_post_opt(sp: sys::spank_t, ac: c_int, av: Argv) -> c_int {
    guard::run("slurm_spank_init_post_opt", slurm::error, || {
        // SAFETY: Slurm's arguments of this callback.
        let config = unsafe { config(ac, av) }?;
        // SAFETY: sp is this callback's handle, used only during it.
        let spank = unsafe { Spank::new(sp) };
        match slurm::context() {
            Context::Local | Context::Allocator => submit(&spank, &config),
            Context::Remote => {
                let resolved = resolve(&spank, &config);
                session::with(|s| s.resolved = Some(resolved));
                Ok(())
            }
            Context::Other => Ok(()),
        }
    })
}

/// Passes the request to the prolog (`SPANK_EXTNET_REQUEST`) and gives early advice: a profile
/// the site does not have, or a request no job of this user could be granted, is refused
/// before the job is queued. This is advice only, on the user's side: the prolog decides.
fn submit(spank: &Spank, config: &Config) -> Result<(), String> {
    let request = session::with(|s| s.request.clone());
    let Some(value) = request::env_value(&request) else {
        return Ok(());
    };
    spank
        .job_control_setenv(JOB_CONTROL_VAR_C, value)
        .map_err(|e| format!("cannot pass --{} to the job: {e}", request::OPTION))?;
    let policy = match Policy::load(&config.policy) {
        Ok(p) => p,
        Err(e) => {
            // Not readable here (a login node without the file, say): the prolog decides.
            slurm::verbose(&format!("no early check of --{}: {e}", request::OPTION));
            return Ok(());
        }
    };
    if let Request::Profile(name) = &request {
        if policy.profile(name).is_none() {
            let names: Vec<&str> = policy.profiles.iter().map(|p| p.name.as_str()).collect();
            return Err(request::unknown_profile_message(name, &names));
        }
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let Some((user, gid)) = extnet::job::env::user_of_uid(uid) else {
        slurm::verbose(&format!(
            "no early check of --{}: uid {uid} has no name through NSS here",
            request::OPTION
        ));
        return Ok(());
    };
    let groups = match extnet::job::env::group_names(&user, gid) {
        Ok(g) => g,
        Err(e) => {
            slurm::verbose(&format!(
                "no early check of --{}: the groups of {user} cannot be looked up here: {e}",
                request::OPTION
            ));
            return Ok(());
        }
    };
    let who = Submitter { groups, user };
    // Account, partition and QOS are not known here: refuse only what no job of this user
    // could get.
    match extnet_policy::possible(&policy, &who, &request) {
        Ok(()) => Ok(()),
        Err(reason) => Err(request::early_denial_message(
            &request,
            &reason,
            &config.policy,
        )),
    }
}

/// slurmstepd: the step's job on this node and what its tasks must do.
fn resolve(spank: &Spank, config: &Config) -> (JobRef, Placement) {
    let asked = session::with(|s| s.request != Request::None)
        || spank.env_has(STEP_REQUEST_VAR_C).unwrap_or_else(|e| {
            slurm::debug(&format!(
                "cannot look for {}: {e}",
                STEP_REQUEST_VAR_C.to_string_lossy()
            ));
            false
        });
    let job = spank
        .job_id()
        .map_err(|e| e.to_string())
        .and_then(|job_id| {
            let node =
                nodename::name().map_err(|e| format!("cannot tell this node's name: {e}"))?;
            Ok(JobRef { job_id, node })
        });
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            let unknown = JobRef {
                job_id: 0,
                node: String::new(),
            };
            let p = if asked {
                Placement::Fail(format!("cannot check external network access: {e}"))
            } else {
                Placement::Unchecked(format!("no external network access for this step: {e}"))
            };
            return (unknown, p);
        }
    };
    let placement = placement::choose(&job, asked, placement::lookup(&config.policy, &job));
    let placement = placement::settle(&config.policy, &job, placement);
    match &placement {
        Placement::Join(g) => slurm::debug(&format!(
            "job {} on {}: granted profile {} ({} mode, slot {}, ports {}-{})",
            job.job_id, job.node, g.profile, g.mode, g.slot, g.port_first, g.port_last
        )),
        Placement::Stay { grant: g, cgroup } => slurm::debug(&format!(
            "job {} on {}: granted profile {} (cgroup mode, slot {}, ports {}-{}) in Slurm's cgroup {}",
            job.job_id,
            job.node,
            g.profile,
            g.slot,
            g.port_first,
            g.port_last,
            cgroup.display()
        )),
        Placement::Fail(m) => slurm::verbose(&format!("the tasks of this step will not run: {m}")),
        Placement::Unchecked(m) | Placement::Notice(m) => slurm::verbose(m),
        Placement::Nothing => {}
    }
    (job, placement)
}

/// The task, as root before exec: join the grant. Failures are remembered for
/// [`slurm_spank_task_init`], which can tell the user.
///
/// # Safety
/// Called by Slurm with this callback's handle and arguments, in the forked task.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_task_init_privileged(
    sp: sys::spank_t,
    ac: c_int,
    av: Argv,
) -> c_int {
    let rc = guard::run("slurm_spank_task_init_privileged", slurm::error, || {
        let (job, placement) = match session::with(|s| s.resolved.clone()) {
            Some(r) => r,
            None => {
                // init_post_opt always runs first in slurmstepd; resolve here if it did not.
                // SAFETY: Slurm's arguments of this callback.
                let config = unsafe { config(ac, av) }?;
                // SAFETY: sp is this callback's handle, used only during it.
                let spank = unsafe { Spank::new(sp) };
                let r = resolve(&spank, &config);
                session::with(|s| s.resolved = Some(r.clone()));
                r
            }
        };
        match placement {
            Placement::Join(grant) => match extnet::job::task::join(&grant, std::process::id()) {
                Ok(()) => {
                    session::with(|s| s.joined = true);
                    slurm::debug(&format!(
                        "task {} of job {} joined profile {} ({} mode, slot {})",
                        std::process::id(),
                        job.job_id,
                        grant.profile,
                        grant.mode,
                        grant.slot
                    ));
                }
                Err(e) => {
                    let m = placement::join_failed(&job, &e);
                    session::with(|s| s.failure = Some(m));
                }
            },
            // the step bound Slurm's job cgroup, in which this task already is
            Placement::Stay { .. } => session::with(|s| s.joined = true),
            Placement::Fail(m) => session::with(|s| s.failure = Some(m)),
            Placement::Nothing | Placement::Unchecked(_) | Placement::Notice(_) => {}
        }
        Ok(())
    });
    if rc != OK {
        session::with(|s| {
            s.failure.get_or_insert_with(|| {
                "internal error while applying the job's external network access (see the slurmd log)".into()
            });
        });
    }
    // Always go on to task_init: only there is stderr the user's, so only there can the user
    // be told why the task does not run.
    OK
}

/// The task, as the user, just before exec: a task that must not run says why and ends.
///
/// # Safety
/// Called by Slurm in the forked task.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn slurm_spank_task_init(_sp: sys::spank_t, _ac: c_int, _av: Argv) -> c_int {
    let mut refusal: Option<String> = None;
    let mut notice: Option<String> = None;
    let rc = guard::run("slurm_spank_task_init", slurm::error, || {
        // a job that did not ask and runs without what it would have got unasked
        notice = session::with(|s| match &s.resolved {
            Some((_, Placement::Notice(m))) => Some(m.clone()),
            _ => None,
        });
        refusal = session::with(|s| {
            s.failure.take().or_else(|| match &s.resolved {
                Some((_, Placement::Fail(m))) => Some(m.clone()),
                Some((_, Placement::Join(_) | Placement::Stay { .. })) if !s.joined => Some(
                    "internal error: this task was not put on its job's external network path"
                        .into(),
                ),
                _ => None,
            })
        });
        Ok(())
    });
    if rc != OK {
        refusal.get_or_insert_with(|| {
            "internal error while checking this task's external network access (see the slurmd log)".into()
        });
    }
    match refusal {
        Some(m) => refuse_task(&m),
        None => {
            if let Some(m) = notice {
                write_stderr(format!("extnet: note: {m}\n").as_bytes());
            }
            OK
        }
    }
}

/// Tells the user why on the task's stderr, notes it in the slurmd log, and ends the task.
///
/// The note is at info level: slurmstepd copies its error lines to the step's stderr, and the
/// user would read the message twice.
fn refuse_task(message: &str) -> ! {
    write_stderr(format!("extnet: {message}\n").as_bytes());
    slurm::info(&format!(
        "task {} not started: {message}",
        std::process::id()
    ));
    // Not `return -1`: Slurm ignores a failing callback of a plugin that plugstack.conf loads
    // as `optional` and would exec the task anyway. A task that must not run ends here,
    // whatever the keyword: fail closed.
    // SAFETY: _exit ends this forked task child at once, as slurmstepd does itself when a
    // required plugin fails here; it runs no atexit handlers of the parent's and touches
    // nothing of the parent slurmstepd.
    unsafe { libc::_exit(1) }
}

/// Writes all of `bytes` to fd 2 (the task's stderr), retrying partial writes and EINTR; gives
/// up silently on other errors (the message is in the slurmd log too).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: bytes is a valid readable slice for its length; fd 2 may be closed, in which
        // case write fails with EBADF and we stop.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(n) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return,
        }
    }
}

//! The shared body of the `extnet-prolog` and `extnet-epilog` binaries.

use crate::job::JobEnv;
use crate::layout::Layout;
use extnet_policy::{expand, Policy, Request};
use std::path::PathBuf;
use std::process::ExitCode;

/// Which program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    Prolog,
    Epilog,
}

fn usage(name: &str) -> String {
    format!(
        "usage: {name} [--policy PATH]\n\nRun by slurmd as root for every job (slurm.conf: Prolog=/Epilog=).\n--policy PATH  the policy file (default {})",
        extnet_policy::DEFAULT_PATH
    )
}

/// Runs the prolog or epilog with the process's arguments and environment.
///
/// Exit status: 0 for every decision, including denials and failed setups (recorded for the
/// job's tasks); 1 only for node faults that need an admin (slurmd then drains the node).
pub fn main(prog: Prog) -> ExitCode {
    ExitCode::from(run(prog))
}

/// The binaries' C `main` (`#![no_main]`): the same as [`main`] without the Rust runtime's
/// start-up, which probes the main thread's stack (reading `/proc/self/maps`) and installs a
/// signal stack, ~0.15 ms on a program that runs for every job on every node. What that
/// start-up would do and matters here is done here: SIGPIPE ignored (a closed stderr is an
/// error, not death), stdout flushed at the end, a panic caught and turned into exit 1.
pub fn c_main(prog: Prog) -> std::ffi::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = std::panic::catch_unwind(|| run(prog)).unwrap_or(1);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code.into()
}

fn run(prog: Prog) -> u8 {
    let name = match prog {
        Prog::Prolog => "extnet-prolog",
        Prog::Epilog => "extnet-epilog",
    };
    let mut policy_path = PathBuf::from(extnet_policy::DEFAULT_PATH);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--policy" => match args.next() {
                Some(p) => policy_path = PathBuf::from(p),
                None => {
                    eprintln!("{name}: --policy needs a path\n{}", usage(name));
                    return 2;
                }
            },
            "--version" => {
                println!("{name} {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            "-h" | "--help" => {
                println!("{}", usage(name));
                return 0;
            }
            other => {
                eprintln!("{name}: unknown argument {other:?}\n{}", usage(name));
                return 2;
            }
        }
    }
    let job = match JobEnv::from_env(|k| std::env::var(k).ok()) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{name}: {e}");
            return 1;
        }
    };
    let policy = match Policy::load(&policy_path) {
        Ok(p) => p,
        Err(e) => {
            // Nothing is granted. The job's tasks fail with the same reason in the plugin if
            // the job asked; a job that did not ask runs without external access.
            crate::logging::init(name, None);
            if job.request != Request::None || prog == Prog::Epilog {
                tracing::error!(job_id = job.job_id, node = %job.node, "{e}");
            }
            return 0;
        }
    };
    // a job that did not ask, with no auto profile: nothing to do, no log line
    if prog == Prog::Prolog && job.request == Request::None && !policy.has_auto() {
        return 0;
    }
    let layout = Layout::new(&policy, &job.node);
    // a job with nothing on this node (it did not ask, or was denied before a lease)
    if prog == Prog::Epilog && !crate::leasemark::may_have_anything(&layout, job.job_id) {
        return 0;
    }
    crate::logging::init(name, Some(expand(&policy.log.file, &job.node)));
    let started = std::time::Instant::now();
    crate::steps::start();
    let result = match prog {
        Prog::Prolog => crate::prolog::run(&policy, &layout, &job).map(|r| format!("{r:?}")),
        Prog::Epilog => crate::epilog::run(&policy, &layout, &job).map(|r| format!("{r:?}")),
    };
    match result {
        Ok(r) => {
            tracing::info!(job_id = job.job_id, node = %job.node, user = %job.user, micros = started.elapsed().as_micros() as u64, steps = %crate::steps::summary(), "{name}: {r}");
            0
        }
        Err(e) => {
            tracing::error!(job_id = job.job_id, node = %job.node, steps = %crate::steps::summary(), "{name} failed: {e:#}");
            1
        }
    }
}

/// The C `main` of `extnet-prolog` / `extnet-epilog` (crates with `#![no_main]`):
/// `extnet::c_main!(Prolog);` defines `main` calling [`c_main`] for that program.
#[macro_export]
macro_rules! c_main {
    ($prog:ident) => {
        #[no_mangle]
        pub extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::binmain::c_main($crate::binmain::Prog::$prog)
        }
    };
}

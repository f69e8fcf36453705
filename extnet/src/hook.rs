//! The frame of the two programs slurmd runs for every job on every node, `extnet-prolog` and
//! `extnet-epilog` (crates `prolog/` and `epilog/`, which own their `main` and their flow):
//! arguments, the policy, logging, the result line with each step's time, the exit status.
//!
//! Exit status: 0 for every decision, including denials and failed setups (recorded for the
//! job's tasks); 1 only for node faults that need an admin (slurmd then drains the node); 2 for
//! a bad command line.

use crate::diag::{error_chain, logging, timings};
use crate::job::env::JobEnv;
use crate::job::JobError;
use extnet_policy::{expand, Policy};
use std::ffi::c_int;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Instant;

/// What a program says of itself: `--help` prints it, and the man pages
/// (`packaging/docgen`) are made from it with [`OPTIONS`], [`EXIT_STATUS`] and the job's
/// variables ([`crate::job::env::VARIABLES`]): one definition, so they cannot drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// `extnet-prolog`, `extnet-epilog`.
    pub name: &'static str,
    /// One line: what the program is.
    pub about: &'static str,
    /// Paragraphs (separated by an empty line) of what it does.
    pub description: &'static str,
}

/// One option of the prolog's and epilog's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDoc {
    /// `--LONG`.
    pub long: &'static str,
    /// The value's name (`--policy PATH`).
    pub value: &'static str,
    pub help: &'static str,
    pub default: &'static str,
}

/// The options of both programs, besides `--help` (`-h`) and `--version`. [`Args::parse`]
/// takes exactly these (a unit test checks).
pub const OPTIONS: &[OptionDoc] = &[OptionDoc {
    long: "policy",
    value: "PATH",
    help: "The policy file.",
    default: extnet_policy::DEFAULT_PATH,
}];

/// The exit statuses of both programs and what they mean to slurmd.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Every decision, a denial and a failed setup included: the job's tasks fail with the reason on their stderr (the prolog), or the job's lease is released (the epilog). Also --help and --version."),
    (1, "A node fault that needs an admin (a damaged lease table, an incomplete environment, a kernel refusing the node's base): slurmd drains the node."),
    (2, "A bad command line."),
];

/// The command line of the prolog and the epilog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `--policy PATH`, default [`extnet_policy::DEFAULT_PATH`].
    pub policy: PathBuf,
}

/// What `--help` prints, from [`Program`] and [`OPTIONS`].
pub fn usage(p: &Program) -> String {
    let mut s = format!("{}\n\nusage: {}", p.about, p.name);
    for o in OPTIONS {
        s += &format!(" [--{} {}]", o.long, o.value);
    }
    s += "\n\n";
    for para in p.description.split("\n\n") {
        s += &para.split_whitespace().collect::<Vec<_>>().join(" ");
        s += "\n\n";
    }
    s += "options:\n";
    for o in OPTIONS {
        s += &format!(
            "  --{} {}  {} (default {})\n",
            o.long, o.value, o.help, o.default
        );
    }
    s += "  -h, --help     print this help\n  --version      print the version\n";
    s
}

impl Args {
    /// Parses the arguments after the program name. `--help` and `--version` print and give
    /// `Err(0)`; a bad argument prints the usage and gives `Err(2)`.
    pub fn parse(p: &Program, args: impl IntoIterator<Item = String>) -> Result<Args, u8> {
        let name = p.name;
        let mut policy = PathBuf::from(extnet_policy::DEFAULT_PATH);
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "--policy" => match args.next() {
                    Some(v) => policy = PathBuf::from(v),
                    None => {
                        eprintln!("{name}: --policy needs a path\n{}", usage(p));
                        return Err(2);
                    }
                },
                "--version" => {
                    println!("{name} {}", env!("CARGO_PKG_VERSION"));
                    return Err(0);
                }
                "-h" | "--help" => {
                    print!("{}", usage(p));
                    return Err(0);
                }
                other => {
                    eprintln!("{name}: unknown argument {other:?}\n{}", usage(p));
                    return Err(2);
                }
            }
        }
        Ok(Args { policy })
    }
}

/// The program's arguments and the job as slurmd describes it in the environment, each read
/// once. `Err` is the exit status: `--help` and `--version` (0), a bad command line (2), an
/// incomplete environment (1, a node fault).
pub fn begin(p: &Program) -> Result<(Args, JobEnv), u8> {
    let name = p.name;
    let args = Args::parse(p, std::env::args().skip(1))?;
    let job = JobEnv::from_env(|k| std::env::var(k).ok()).map_err(|e| {
        eprintln!("{name}: {e}");
        1
    })?;
    Ok((args, job))
}

/// The policy, or `None` when it cannot be loaded: then nothing is granted. The job's tasks
/// fail with the same reason in the plugin if the job asked; `log` says whether this program
/// logs the reason too (the epilog always, the prolog when the job asked).
pub fn load_policy(name: &'static str, args: &Args, job: &JobEnv, log: bool) -> Option<Policy> {
    match Policy::load_for_node(&args.policy, &job.node) {
        Ok(p) => Some(p),
        Err(e) => {
            logging::init(name, None);
            if log {
                tracing::error!(job_id = job.job_id, node = %job.node, "{e}");
            }
            None
        }
    }
}

/// Runs `body` for the job with logging to the policy's `log.file` and step timings, and logs
/// the result line (`micros`, `steps=`). Returns the exit status.
pub fn run_logged<R: Debug>(
    name: &'static str,
    policy: &Policy,
    job: &JobEnv,
    body: impl FnOnce() -> Result<R, JobError>,
) -> u8 {
    logging::init(name, Some(expand(&policy.log.file, &job.node)));
    let started = Instant::now();
    timings::start(name.trim_start_matches("extnet-"));
    match body() {
        Ok(r) => {
            tracing::info!(job_id = job.job_id, node = %job.node, user = %job.user, micros = started.elapsed().as_micros() as u64, steps = %timings::summary(), "{name}: {r:?}");
            0
        }
        Err(e) => {
            tracing::error!(job_id = job.job_id, node = %job.node, steps = %timings::summary(), "{name} failed: {}", error_chain(&e));
            1
        }
    }
}

/// The programs' C `main` body (`#![no_main]`): `run` without the Rust runtime's start-up,
/// which probes the main thread's stack (reading `/proc/self/maps`) and installs a signal
/// stack in a program that runs for every job on every node. What that start-up would do and
/// matters here is done here: SIGPIPE ignored (a closed stderr is an error, not death),
/// stdout flushed at the end, a panic caught and turned into exit 1.
pub fn c_main(run: fn() -> u8) -> c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = std::panic::catch_unwind(run).unwrap_or(1);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code.into()
}

/// Defines the C `main` of a program crate with `#![no_main]`: `extnet::c_main!(run)` calls
/// [`c_main`] with `run: fn() -> u8`.
#[macro_export]
macro_rules! c_main {
    ($run:path) => {
        #[no_mangle]
        pub extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::hook::c_main($run)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Program = Program {
        name: "extnet-test",
        about: "A test program.",
        description: "First   paragraph,\n    wrapped.\n\nSecond.",
    };

    fn parse(args: &[&str]) -> Result<Args, u8> {
        Args::parse(&P, args.iter().map(|a| a.to_string()))
    }

    /// Every documented option is taken, and nothing else: the man pages made from
    /// [`OPTIONS`] say what the parser does.
    #[test]
    fn the_parser_takes_exactly_the_documented_options() {
        for o in OPTIONS {
            let flag = format!("--{}", o.long);
            assert!(parse(&[&flag, "/x"]).is_ok(), "{flag} is documented");
            assert_eq!(parse(&[&flag]), Err(2), "{flag} without its {}", o.value);
            assert_eq!(o.default, extnet_policy::DEFAULT_PATH);
        }
        assert_eq!(
            parse(&["--policy", "/etc/p.toml"]).unwrap().policy,
            PathBuf::from("/etc/p.toml")
        );
        assert_eq!(
            parse(&[]).unwrap().policy,
            PathBuf::from(extnet_policy::DEFAULT_PATH)
        );
        assert_eq!(parse(&["--polcy", "/x"]), Err(2));
        assert_eq!(parse(&["--help"]), Err(0));
        assert_eq!(parse(&["--version"]), Err(0));
    }

    #[test]
    fn usage_lists_the_options_and_joins_the_description() {
        let u = usage(&P);
        assert!(
            u.starts_with("A test program.\n\nusage: extnet-test [--policy PATH]"),
            "{u}"
        );
        assert!(u.contains("First paragraph, wrapped.\n\nSecond.\n"), "{u}");
        assert!(
            u.contains(&format!(
                "--policy PATH  The policy file. (default {})",
                extnet_policy::DEFAULT_PATH
            )),
            "{u}"
        );
    }
}

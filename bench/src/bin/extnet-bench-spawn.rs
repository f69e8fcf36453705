//! `extnet-bench-spawn STDERR_FILE PROGRAM [ARGS...]`: runs PROGRAM once with this process's
//! environment (stdin and stdout on /dev/null, stderr to STDERR_FILE) and prints
//! `<wall ns> <ru_maxrss KiB> <exit code or 128+signal>`.
//!
//! Why a separate, small process: Linux counts the memory a child inherits from its parent
//! between fork and exec in the child's `ru_maxrss`. Started from this launcher (about 1 MiB)
//! rather than from extnet-bench (several MiB), a short-lived program's
//! peak is its own unless it stays below this floor, which the `/bin/true` row shows.

use std::fs::File;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(stderr), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: extnet-bench-spawn STDERR_FILE PROGRAM [ARGS...]");
        return ExitCode::from(2);
    };
    let stderr = match File::create(&stderr) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "extnet-bench-spawn: create {}: {e}",
                stderr.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let child = match Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("extnet-bench-spawn: run {}: {e}", program.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not reaped yet (std's Child reaps only when asked to); the
    // pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    drop(child);
    if r != pid {
        eprintln!(
            "extnet-bench-spawn: wait4: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(2);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    println!("{} {} {code}", wall.as_nanos(), ru.ru_maxrss);
    ExitCode::SUCCESS
}

//! The root check of the kernel and crash tests (and of the micro-benchmarks that make
//! namespaces): a test that cannot run here is skipped with a visible reason.

use std::io::Write as _;

/// True when running as root. Otherwise says that `test` is skipped because it needs root to
/// create `creates` ([`skip`]) and returns false; the caller then returns at once.
pub fn is_root(test: &str, creates: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(test, &format!("needs root (it creates {creates})"));
    false
}

/// Writes `skipped: TEST WHY` to stderr.
///
/// To the stderr stream itself, not with `eprintln!`: libtest captures what the print macros
/// write in a test that passes, and a skipped test passes, so the reason would never show. One
/// write of the whole line, so that tests skipped at once on several threads do not mix their
/// lines.
pub fn skip(test: &str, why: &str) {
    let line = format!("skipped: {test} {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

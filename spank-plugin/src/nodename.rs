//! This node's Slurm name, inside slurmstepd.
//!
//! slurmstepd puts `SLURMD_NODENAME` (slurmd's configured node name) into its *own* process
//! environment as soon as it has read slurmd's configuration (Slurm 22.05 `slurmstepd.c`,
//! `setenvf(NULL, "SLURMD_NODENAME", ...)`; seen in the disassembly of 22.05.8's slurmstepd).
//! The task's copy inherits it. The *step's* environment (`spank_getenv`) is not used: it is
//! what the user's srun sent, and slurmstepd writes `SLURMD_NODENAME` into it only in
//! `exec_task`, after `task_init_privileged`. An srun inside a batch job would bring the batch
//! node's name there. When the variable is missing: the short host name, as slurmd assumes by
//! default.

use std::ffi::{c_char, OsString};

/// The name from `SLURMD_NODENAME` in the process environment, else the short host name.
pub fn name() -> Result<String, String> {
    from(std::env::var_os("SLURMD_NODENAME"), hostname)
}

/// [`name`] with its inputs as parameters.
pub fn from(
    env: Option<OsString>,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    if let Some(v) = env.filter(|v| !v.is_empty()) {
        return v
            .into_string()
            .map_err(|v| format!("SLURMD_NODENAME {v:?} is not UTF-8"));
    }
    let host = hostname()?;
    match host.split('.').next() {
        Some(short) if !short.is_empty() => Ok(short.to_owned()),
        _ => Err(format!(
            "SLURMD_NODENAME is not set and the host name {host:?} is empty"
        )),
    }
}

/// gethostname(2).
pub fn hostname() -> Result<String, String> {
    let mut buf = [0 as c_char; 256];
    // SAFETY: buf is writable for buf.len() bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return Err(format!(
            "gethostname failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Truncated names may lack the NUL: never read past the buffer.
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).map_err(|e| format!("the host name is not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unused() -> Result<String, String> {
        panic!("hostname must not be asked")
    }

    #[test]
    fn slurmd_nodename_wins() {
        assert_eq!(from(Some("n1".into()), unused), Ok("n1".into()));
    }

    #[test]
    fn falls_back_to_the_short_host_name() {
        assert_eq!(
            from(None, || Ok("n7.cluster.example".into())),
            Ok("n7".into())
        );
        assert_eq!(from(Some("".into()), || Ok("n8".into())), Ok("n8".into()));
        assert!(from(None, || Ok(String::new())).is_err());
        assert!(from(None, || Err("x".into())).is_err());
    }

    #[test]
    fn this_host_has_a_name() {
        assert!(!hostname().unwrap().is_empty());
    }
}

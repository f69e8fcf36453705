//! extnet's SPANK plugin, `libextnet_spank.so`, loaded by srun, sbatch, salloc and slurmstepd
//! from one line of `plugstack.conf`:
//!
//! ```text
//! required /usr/lib/slurm/libextnet_spank.so policy=/etc/slurm/extnet.toml
//! ```
//!
//! It must be `required`: Slurm ignores failures of an `optional` plugin, so srun would accept a
//! bad `--external-net` value. (Task placement fails closed either way.)
//!
//! One job, as the plugin sees it:
//!
//! 1. **Submit** (srun, sbatch, salloc). `--external-net[=PROFILE]` is checked ([`request`]) and
//!    handed to the prolog as the job control variable `EXTNET_REQUEST` (the prolog sees
//!    `SPANK_EXTNET_REQUEST`). A profile the site does not have is refused before the job
//!    queues, when the policy file is readable there. The prolog decides; this is advice.
//! 2. **Step start** (slurmstepd, once per step and node). The job's decision is read from the
//!    state file the prolog wrote ([`placement`]), on the node named by slurmstepd ([`nodename`]).
//! 3. **Task start** (the forked task, root, before exec): a granted task joins the job's
//!    cgroup or network namespace (`extnet::job::task::join`).
//! 4. **Just before exec** (the task, as the user): a task that was denied, whose grant could
//!    not be applied, or whose job asked but has no decision, prints why on its stderr and
//!    ends. Never fail open.
//!
//! Modules: [`args`] (`plugstack.conf` arguments), [`request`] (the option's values),
//! [`placement`] (decision → what a task does), [`nodename`] (this node's name), [`guard`] (the
//! panic guard every entry point goes through), `session` (what a process remembers between
//! callbacks), and, outside unit tests, `entry` (the C entry points) and `slurm` (the thin
//! wrapper around bindgen's SPANK API). The plugin starts no threads: it runs inside forked
//! processes.

pub mod args;
pub mod guard;
pub mod nodename;
pub mod placement;
pub mod request;
// Its task fields are used only by `entry`, which unit tests do not build.
#[cfg_attr(test, allow(dead_code))]
mod session;

// The entry points call into Slurm, whose symbols exist only inside the programs that load the
// plugin: unit tests build without them.
#[cfg(not(test))]
mod entry;
#[cfg(not(test))]
mod slurm;

use std::ffi::c_uint;

// What Slurm's plugin loader reads (`SPANK_PLUGIN(extnet, 1)` in C): the name, the type, and
// the Slurm version built against. Slurm refuses a plugin of another major.minor release.
// The name also names the option's environment variable (`_SLURM_SPANK_OPTION_extnet_external_net`).

/// `const char plugin_name[]`.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static plugin_name: [u8; 7] = *b"extnet\0";

/// `const char plugin_type[]`.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static plugin_type: [u8; 6] = *b"spank\0";

/// `const unsigned int plugin_version`.
#[allow(non_upper_case_globals)]
#[unsafe(no_mangle)]
pub static plugin_version: c_uint = extnet_slurm_sys::SLURM_VERSION_NUMBER;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn plugin_identity() {
        assert_eq!(CStr::from_bytes_with_nul(&plugin_name).unwrap(), c"extnet");
        assert_eq!(CStr::from_bytes_with_nul(&plugin_type).unwrap(), c"spank");
        // 22.05.x is 0x160500 | micro.
        assert_eq!(
            plugin_version >> 8,
            extnet_slurm_sys::SLURM_VERSION_NUMBER >> 8
        );
    }
}

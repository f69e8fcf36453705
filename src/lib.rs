//! Raw bindings to Slurm's SPANK API (`<slurm/spank.h>`, `<slurm/slurm_version.h>`), generated
//! by the workspace's `build.rs` from the headers installed on the build machine. Only the SPANK
//! plugin (`spank-plugin/`) depends on this crate, so everything else builds without Slurm's
//! headers. The safe wrapper is `spank-plugin/src/slurm.rs`.

#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/slurm_bindings.rs"));

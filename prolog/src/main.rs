//! `extnet-prolog`: slurm.conf `Prolog=`. See `extnet::prolog`.
//!
//! Its own C `main` (see `extnet::binmain::c_main`): this runs for every job on every node, and
//! the Rust runtime's start-up would be a tenth of its cost for a job that did not ask.
#![no_main]

#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    extnet::binmain::c_main(extnet::binmain::Prog::Prolog)
}

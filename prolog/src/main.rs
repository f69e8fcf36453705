//! `extnet-prolog`: slurm.conf `Prolog=`. See `extnet::prolog`; its C `main` (no Rust runtime
//! start-up) is `extnet::binmain::c_main`.
#![no_main]

extnet::c_main!(Prolog);

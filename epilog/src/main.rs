//! `extnet-epilog`: slurm.conf `Epilog=`. See `extnet::epilog`; its C `main` (no Rust runtime
//! start-up) is `extnet::binmain::c_main`.
#![no_main]

extnet::c_main!(Epilog);

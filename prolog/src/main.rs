//! `extnet-prolog`'s C `main` (no Rust runtime start-up: see `extnet::hook::c_main`); the
//! program is [`extnet_prolog::main`].
#![no_main]

extnet::c_main!(extnet_prolog::main);

//! `extnet-prolog`: slurm.conf `Prolog=`. See `extnet::prolog`.
fn main() -> std::process::ExitCode {
    extnet::binmain::main(extnet::binmain::Prog::Prolog)
}

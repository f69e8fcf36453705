//! `extnet-epilog`: slurm.conf `Epilog=`. See `extnet::epilog`.
fn main() -> std::process::ExitCode {
    extnet::binmain::main(extnet::binmain::Prog::Epilog)
}

//! `extnet`, the admin's command: see [`extnet_cli::main`].

fn main() -> std::process::ExitCode {
    extnet_cli::main()
}

//! `kubex-credd`: the daemon, and the commands that need the network or the keychain (`login`,
//! `logout`, `get --no-daemon`, `doctor`, `service`). `kubex-cred` hands those over to it.
use std::process::ExitCode;

fn main() -> ExitCode {
    kubex_credd::error::finish(kubex_credd::cli::credd::run())
}

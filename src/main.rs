//! `kubex-cred`: what users run. Talks to the daemon's socket; hands the other commands to `kubex-credd`.
use std::process::ExitCode;

fn main() -> ExitCode {
    kubex_cred::error::finish(kubex_cred::cli::front::run())
}

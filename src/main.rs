use std::process::ExitCode;

fn main() -> ExitCode {
    kubex_cred::error::finish(kubex_cred::cli::run_front())
}

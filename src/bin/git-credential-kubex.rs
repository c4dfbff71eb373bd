//! What git runs for `credential.helper=kubex`: `git-credential-kubex get|store|erase|capability`.
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(operation) = std::env::args().nth(1) else {
        eprintln!(
            "kubex-cred: usage: git-credential-kubex get|store|erase|capability (git runs this for credential.helper=kubex)"
        );
        return ExitCode::from(2);
    };
    kubex_cred::error::finish(kubex_cred::cli::front::git::run(&operation))
}

//! What git runs for `credential.helper=kubex`: `git-credential-kubex get|store|erase|capability`.
#![allow(clippy::print_stdout)]
use std::process::ExitCode;

const USAGE: &str = "usage: git-credential-kubex get|store|erase|capability\n\n\
    git runs it for `git config --global credential.https://HOST.helper kubex`: it answers with a\n\
    Kubex token for the hosts of kubex-cred's profiles, and nothing for any other host.\n\
    See `kubex-cred --help` and docs/git.md.\n";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("git-credential-kubex {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(operation) => kubex_cred::error::finish(kubex_cred::cli::front::git::run(operation)),
        None => {
            eprintln!("kubex-cred: usage: git-credential-kubex get|store|erase|capability (see --help)");
            ExitCode::from(2)
        }
    }
}

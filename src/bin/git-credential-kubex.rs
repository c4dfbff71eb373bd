//! git's credential helper. Until the git issue lands it serves no host: git moves on to the next helper.
#![allow(clippy::print_stdout)]
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("capability") {
        println!("version 0");
    }
    ExitCode::SUCCESS
}

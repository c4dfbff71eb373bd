use std::process::ExitCode;

fn main() -> ExitCode {
    match kubex_cred::cli::run_front() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubex-cred: {e}");
            e.exit_code()
        }
    }
}

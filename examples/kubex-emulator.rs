//! Runs the Kubex Authorize emulator by hand, so anyone can try kubex-cred without a Kubex account.
//!
//! `cargo run --example kubex-emulator -- --port 8080 --user apiUser:apiPassword --lifetime 5m`
#![allow(clippy::print_stdout)]

#[path = "../tests/support/emulator/mod.rs"]
mod emulator;

use std::time::Duration;

fn main() {
    let mut port = 0u16;
    let mut users: Vec<(String, String)> = Vec::new();
    let mut options = emulator::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage("--port takes a number")),
            "--user" => {
                let v = value();
                let (n, p) = v.split_once(':').unwrap_or_else(|| usage("--user takes NAME:PASSWORD"));
                users.push((n.to_owned(), p.to_owned()));
            }
            "--lifetime" => {
                options.lifetime = humantime::parse_duration(&value())
                    .unwrap_or_else(|_| usage("--lifetime takes a duration such as 5m"))
            }
            "--clock-offset" => {
                options.clock_offset =
                    value().parse().unwrap_or_else(|_| usage("--clock-offset takes seconds, e.g. -3600"))
            }
            "--base-path" => options.base_path = value(),
            "--help" | "-h" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if users.is_empty() {
        users.push(("apiUser".into(), "apiPassword".into()));
    }
    let refs: Vec<(&str, &str)> = users.iter().map(|(n, p)| (n.as_str(), p.as_str())).collect();
    let emu = emulator::Emulator::start_on(port, options, &refs);
    println!("{}", emu.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: kubex-emulator [--port N] [--user NAME:PASSWORD]... [--lifetime 5m] [--clock-offset SECS] [--base-path /api/v2]"
    );
    std::process::exit(2)
}

//! The round-trip floor `scripts/bench` shows beside the fronts: a program built as they are that
//! only connects to the daemon's socket, sends the request line the script gives it
//! (`KUBEX_BENCH_REQUEST`), and reads the answer to its end. Built with rustc alone.
use std::io::{Read, Write};

fn main() {
    let socket = std::env::var_os("KUBEX_BENCH_SOCKET").expect("KUBEX_BENCH_SOCKET");
    let request = std::env::var("KUBEX_BENCH_REQUEST").expect("KUBEX_BENCH_REQUEST");
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.write_all(format!("{request}\n").as_bytes()).expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    assert!(answer.starts_with(b"{") && answer.windows(7).any(|w| w == b"\"token\""), "no token");
}

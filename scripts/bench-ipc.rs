//! The round-trip floor `scripts/bench` shows beside the fronts: a program built as they are that
//! only connects to the daemon's socket, sends the request line the script gives it
//! (`KUBEX_BENCH_REQUEST`), and reads the answer line, polling for it for up to 0.3 ms before it
//! sleeps, as the client does (`client::spin_for_answer`). Built with rustc alone.
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

fn main() {
    let socket = std::env::var_os("KUBEX_BENCH_SOCKET").expect("KUBEX_BENCH_SOCKET");
    let request = std::env::var("KUBEX_BENCH_REQUEST").expect("KUBEX_BENCH_REQUEST");
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    stream.write_all(format!("{request}\n").as_bytes()).expect("write");
    stream.set_nonblocking(true).expect("non-blocking");
    let start = Instant::now();
    let (mut answer, mut buf) = (Vec::new(), [0u8; 4096]);
    while !answer.ends_with(b"\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < Duration::from_micros(300) => {
                std::thread::yield_now()
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => stream.set_nonblocking(false).expect("blocking"),
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(answer.starts_with(b"{") && answer.windows(7).any(|w| w == b"\"token\""), "no token");
}

//! Load generator for `scripts/bench`: concurrent clients on the daemon's socket, against the
//! bundled Kubex emulator. Run it inside a throwaway keyring session (scripts/bench sets one up).
//!
//! `loadgen load --clients 16 --seconds 10 --lifetime 3s`: throughput, latency, Authorize calls.
//! `loadgen hold --connections 1000`: the daemon's RSS idle and with that many connections open.
//! `loadgen proxy --clients 16 --seconds 5`: `kubex-cred proxy` on a Unix socket against calling
//! the emulator directly with a token: requests/s and latency of each, one connection per request
//! (as curl makes them).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "../tests/support/emulator/mod.rs"]
mod emulator;

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubex_cred::client::Paths;
use kubex_cred::protocol::{Body, Op, Overrides};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let bin = flag("--bin", "target/release/kubex-cred");
    let lifetime = humantime::parse_duration(&flag("--lifetime", "3s")).expect("--lifetime");
    let emu = emulator::Emulator::start(emulator::Options { lifetime, ..Default::default() }, &[("apiUser", "pw")]);
    let mut login = Command::new(&bin)
        .args(["login", "--url", &emu.origin(), "--user", "apiUser", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubex-cred login");
    login.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(login.wait().unwrap().success(), "login failed: is a Secret Service running?");
    let config = kubex_cred::config::config_path().expect("config path");
    let get = Op::Get { config, profile: Overrides::default(), min_ttl_ms: 0, at_most_half_life: false };
    // Start the daemon the way users do, and warm it.
    assert!(Command::new(&bin).arg("get").stdout(Stdio::null()).status().unwrap().success());
    match args.first().map(String::as_str) {
        Some("load") => {
            load(&emu, &get, flag("--clients", "16").parse().unwrap(), flag("--seconds", "10").parse().unwrap())
        }
        Some("hold") => hold(&bin, flag("--connections", "1000").parse().unwrap()),
        Some("proxy") => {
            proxy(&emu, &bin, flag("--clients", "16").parse().unwrap(), flag("--seconds", "5").parse().unwrap())
        }
        _ => panic!(
            "usage: loadgen load|hold|proxy [--clients N] [--seconds S] [--lifetime 3s] [--connections N] [--bin PATH]"
        ),
    }
    let _ = Command::new(&bin).arg("stop").stderr(Stdio::null()).status();
}

fn load(emu: &emulator::Emulator, get: &Op, clients: usize, seconds: u64) {
    let calls_before = emu.authorize_calls();
    let tokens = Arc::new(Mutex::new(HashSet::new()));
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (get, tokens) = (get.clone(), tokens.clone());
            std::thread::spawn(move || {
                let (mut latencies, mut errors, mut last) = (Vec::new(), 0u64, String::new());
                while Instant::now() < until {
                    let t = Instant::now();
                    match kubex_cred::client::call(&get, false, Duration::from_secs(10)).map(|r| r.map(|r| r.body)) {
                        Ok(Some(Body::Token { token, .. })) => {
                            let token = token.expose().clone();
                            latencies.push(t.elapsed());
                            if token != last {
                                tokens.lock().unwrap().insert(token.clone());
                                last = token;
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (all, errors, elapsed) = gather(workers, start);
    let pct = |p: f64| percentile(&all, p);
    let calls = emu.authorize_calls() - calls_before;
    let distinct = tokens.lock().unwrap().len();
    println!(
        "clients={clients} requests={} throughput_per_s={:.0} p50_us={} p99_us={} errors={errors} authorize_calls={calls} tokens_served={distinct} rollovers={}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50).as_micros(),
        pct(0.99).as_micros(),
        distinct.saturating_sub(1)
    );
}

fn hold(bin: &str, connections: usize) {
    let status = kubex_cred::client::call(&Op::Status, false, Duration::from_secs(10)).unwrap();
    let Some(Body::Status(status)) = status.map(|r| r.body) else { panic!("no daemon") };
    let pid = status.daemon.unwrap().pid;
    let idle = rss_kib(pid);
    let socket = Paths::new().unwrap().socket;
    let mut held = Vec::new();
    for _ in 0..connections {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(s) => held.push(s),
            Err(e) => {
                println!("connect failed after {} connections: {e}", held.len());
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let loaded = rss_kib(pid);
    // Another client is still served while the connections are held.
    let t = Instant::now();
    let ok = Command::new(bin).arg("get").stdout(Stdio::null()).status().unwrap().success();
    println!(
        "rss_idle_kib={idle} rss_with_{}_connections_kib={loaded} get_while_held_ok={ok} get_while_held_ms={}",
        held.len(),
        t.elapsed().as_millis()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A connection to send one request on.
trait Stream: std::io::Read + Write {}
impl<T: std::io::Read + Write> Stream for T {}

/// `clients` threads sending `GET /echo` for `seconds`, each on a new connection from `connect`;
/// (requests/s, p50 µs, p99 µs, failures).
fn hammer(
    clients: usize,
    seconds: u64,
    request: Arc<Vec<u8>>,
    connect: Arc<dyn Fn() -> std::io::Result<Box<dyn Stream>> + Send + Sync>,
) -> (f64, u128, u128, u64) {
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (request, connect) = (request.clone(), connect.clone());
            std::thread::spawn(move || {
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                while Instant::now() < until {
                    let t = Instant::now();
                    let mut answer = Vec::new();
                    let ok = connect()
                        .and_then(|mut s| {
                            s.write_all(&request)?;
                            s.read_to_end(&mut answer)
                        })
                        .is_ok_and(|_| answer.starts_with(b"HTTP/1.1 200"));
                    if ok { latencies.push(t.elapsed()) } else { failures += 1 }
                }
                (latencies, failures)
            })
        })
        .collect();
    let (all, failures, elapsed) = gather(workers, start);
    let pct = |p: f64| percentile(&all, p);
    (all.len() as f64 / elapsed, pct(0.50).as_micros(), pct(0.99).as_micros(), failures)
}

fn proxy(emu: &emulator::Emulator, bin: &str, clients: usize, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut proxy = Command::new(bin)
        .args(["proxy", "--listen", &format!("unix:{}", socket.display())])
        .stderr(Stdio::null())
        .spawn()
        .expect("run kubex-cred proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the proxy did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = Command::new(bin).arg("get").output().unwrap().stdout;
    let token = String::from_utf8(token).unwrap();
    let origin = emu.origin();
    let host = origin.trim_start_matches("http://").to_owned();
    let direct = Arc::new(
        format!(
            "GET /api/v2/echo HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token.trim()
        )
        .into_bytes(),
    );
    let proxied = Arc::new(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec());
    let tcp: Arc<dyn Fn() -> std::io::Result<Box<dyn Stream>> + Send + Sync> =
        Arc::new(move || Ok(Box::new(std::net::TcpStream::connect(&host)?) as Box<dyn Stream>));
    let unix_socket = socket.clone();
    let unix: Arc<dyn Fn() -> std::io::Result<Box<dyn Stream>> + Send + Sync> =
        Arc::new(move || Ok(Box::new(std::os::unix::net::UnixStream::connect(&unix_socket)?) as Box<dyn Stream>));
    let calls = emu.authorize_calls();
    let (d_rate, d_p50, d_p99, d_fail) = hammer(clients, seconds, direct, tcp);
    let (p_rate, p_p50, p_p99, p_fail) = hammer(clients, seconds, proxied, unix);
    println!(
        "clients={clients} direct_per_s={d_rate:.0} direct_p50_us={d_p50} direct_p99_us={d_p99} direct_failures={d_fail} \
         proxy_per_s={p_rate:.0} proxy_p50_us={p_p50} proxy_p99_us={p_p99} proxy_failures={p_fail} \
         added_p50_us={} authorize_calls={}",
        p_p50 as i128 - d_p50 as i128,
        emu.authorize_calls() - calls
    );
    let _ = Command::new("kill").arg(proxy.id().to_string()).status();
    let _ = proxy.wait();
}

/// The workers' latencies (sorted) and failures, and the seconds since `start`.
fn gather(workers: Vec<std::thread::JoinHandle<(Vec<Duration>, u64)>>, start: Instant) -> (Vec<Duration>, u64, f64) {
    let (mut all, mut failures) = (Vec::new(), 0);
    for w in workers {
        let (latencies, failed) = w.join().unwrap();
        all.extend(latencies);
        failures += failed;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    (all, failures, elapsed)
}

/// The `p` quantile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

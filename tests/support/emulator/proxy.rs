//! An HTTP CONNECT proxy for the tests of `HTTPS_PROXY`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::http::{Io, read_request};

/// An HTTP CONNECT proxy on 127.0.0.1 that tunnels to `127.0.0.1:PORT` or `kubex.test:PORT` (a
/// name only it resolves, to 127.0.0.1), records each CONNECT, and counts every connection.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    connects: Arc<Mutex<Vec<String>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy address");
        let connects = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, counted) = (connects.clone(), connections.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else { continue };
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut boxed: Box<dyn Io> = Box::new(client);
                        let Some(req) = read_request(&mut boxed).await else { return };
                        let Some(port) = req.path.strip_prefix("127.0.0.1:").or(req.path.strip_prefix("kubex.test:"))
                        else {
                            return;
                        };
                        if req.method != "CONNECT" {
                            return;
                        }
                        seen.lock().expect("lock").push(req.path.clone());
                        let target = format!("127.0.0.1:{port}");
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { return };
                        if boxed.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                            return;
                        }
                        let _ = tokio::io::copy_bidirectional(&mut boxed, &mut upstream).await;
                    });
                }
            });
        });
        ConnectProxy { addr, connects, connections, _thread: thread }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections it accepted, whatever they asked.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The `host:port` of each tunnel asked for.
    pub fn connects(&self) -> Vec<String> {
        self.connects.lock().expect("lock").clone()
    }
}

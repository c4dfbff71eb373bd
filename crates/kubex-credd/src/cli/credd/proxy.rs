//! `kubex-cred proxy --listen unix:PATH` and `kubex-cred exec --proxy -- CMD…`: the authenticating
//! proxy (`crate::proxy`) with its tokens from the daemon, on a Unix socket until SIGTERM/SIGINT,
//! or on a loopback port for the life of CMD, which runs as this process's child (signals passed
//! on, its exit status passed back).

use std::sync::Arc;

use super::api::Daemon;
use crate::cli::args::{ExecArgs, ProxyArgs};
use crate::cli::front::cannot_run;
use crate::error::{Error, Result};
use crate::kubex::Client;
use crate::proxy::{Gate, Log, Proxy, Tokens as _, listen};
use crate::{client, config};
use reqwest::Url;

/// The proxy of the profile `profile` resolves to, and its API base.
fn proxy(profile: Option<String>, gate: Gate, log: Log) -> Result<(Arc<Proxy>, Url)> {
    let resolved = config::resolve(profile.clone())?;
    let client = Client::for_api(&resolved, config::timeout()?)?;
    let tokens = Arc::new(Daemon { profile });
    // A token now, so that a profile that cannot get one fails with get's exit code at once.
    tokens.current()?;
    let base = resolved.url.clone();
    Ok((Arc::new(Proxy::new(resolved.url, client, gate, tokens, log)), base))
}

/// `proxy --listen unix:PATH`: serves until SIGTERM or SIGINT.
pub fn serve(args: ProxyArgs) -> Result<()> {
    let path = listen::unix_path(&args.listen)?;
    let (proxy, base) = proxy(args.profile, Gate::Open, Log::Every)?;
    let runtime = crate::runtime::current_thread()?;
    runtime.block_on(async {
        // Signals first: a SIGTERM right after the socket appears still removes it.
        let stop = stopped()?;
        let listener = listen::unix(&path)?;
        eprintln!("kubex-cred proxy: serving {base} on {}", path.display());
        listen::serve(listener, proxy, stop).await;
        eprintln!("kubex-cred proxy: stopped");
        Ok(())
    })
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C on other platforms).
fn stopped() -> Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let failed = |e: std::io::Error| Error::unexpected(format!("cannot handle signals: {e}"));
        let (mut term, mut int) =
            (signal(SignalKind::terminate()).map_err(failed)?, signal(SignalKind::interrupt()).map_err(failed)?);
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// `exec --proxy -- CMD…`: CMD runs with `KUBEX_API_URL=http://127.0.0.1:PORT` and a per-run secret
/// in `KUBEX_TOKEN`; this process serves the proxy until CMD ends, then exits with its status
/// (128+N when signal N ended it; 127 or 126 when it could not be run).
pub fn exec(args: ExecArgs) -> Result<()> {
    let (program, rest) = args.command.split_first().ok_or_else(|| Error::usage("exec needs a command"))?;
    let gate = Gate::random()?;
    let Gate::Secret(secret) = &gate else { return Err(Error::unexpected("the proxy has no secret")) };
    let secret = secret.clone();
    let (proxy, _) = proxy(args.profile, gate, Log::Failures)?;
    let runtime = crate::runtime::current_thread()?;
    let code = runtime.block_on(async {
        let (listener, addr) = listen::loopback()?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(rest)
            .env(client::TOKEN_VARIABLE, secret.expose())
            .env(client::API_URL_VARIABLE, format!("http://{addr}"));
        for (name, value) in not_through_a_proxy() {
            command.env(name, value);
        }
        let mut child = command.spawn().map_err(|e| cannot_run(program, &e))?;
        drop(command);
        drop(secret);
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(listen::serve(listener, proxy, async {
            let _ = finished.await;
        }));
        let status = wait_passing_signals(&mut child).await?;
        let _ = done.send(());
        Ok::<_, Error>(exit_code(status))
    })?;
    drop(runtime);
    std::process::exit(code)
}

/// With an HTTP proxy set in the environment (`HTTP_PROXY`, `ALL_PROXY`, lower or upper case),
/// `NO_PROXY` and `no_proxy` gain `127.0.0.1`: curl, Python and Go would otherwise send the
/// command's requests for `KUBEX_API_URL` to that proxy, which cannot reach this one.
fn not_through_a_proxy() -> Vec<(&'static str, String)> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"].into_iter().any(set) {
        return Vec::new();
    }
    ["NO_PROXY", "no_proxy"]
        .into_iter()
        .map(|name| {
            let before = std::env::var(name).unwrap_or_default();
            let value = if before.trim().is_empty() { "127.0.0.1".to_owned() } else { format!("{before},127.0.0.1") };
            (name, value)
        })
        .collect()
}

/// Waits for `child`, passing on the signals a job runner or `kill` sends this process. SIGINT and
/// SIGQUIT typed at the terminal reach CMD directly (it is in the terminal's foreground group too),
/// so they are passed on only when this process is not in that group.
async fn wait_passing_signals(child: &mut tokio::process::Child) -> Result<std::process::ExitStatus> {
    let failed = |e: std::io::Error| Error::unexpected(format!("cannot wait for the command: {e}"));
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
        use rustix::process::Signal;
        use tokio::signal::unix::{SignalKind, signal};
        for (kind, number, from_terminal) in [
            (SignalKind::terminate(), Signal::TERM, false),
            (SignalKind::hangup(), Signal::HUP, false),
            (SignalKind::user_defined1(), Signal::USR1, false),
            (SignalKind::user_defined2(), Signal::USR2, false),
            (SignalKind::window_change(), Signal::WINCH, true),
            (SignalKind::interrupt(), Signal::INT, true),
            (SignalKind::quit(), Signal::QUIT, true),
        ] {
            let mut signals = signal(kind).map_err(failed)?;
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    if !(from_terminal && in_terminal_foreground()) {
                        let _ = rustix::process::kill_process(pid, number);
                    }
                }
            });
        }
    }
    child.wait().await.map_err(failed)
}

/// Whether this process's group is the foreground group of the terminal on stdin.
#[cfg(unix)]
fn in_terminal_foreground() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin()).is_ok_and(|group| group == rustix::process::getpgrp())
}

/// As a shell reports it: the exit code, or 128+N for a signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return 128 + signal;
    }
    status.code().unwrap_or(1)
}

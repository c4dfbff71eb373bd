//! Token files: the daemon keeps a profile's current token in a file for sidecars and tools that
//! read files (`kubex-cred daemon --sink FILE`, or `sink = "FILE"` in a profile), and
//! `kubex-cred get --output FILE` writes one once.
//!
//! A file is always replaced whole (a temporary file beside it, then a rename), mode 0600, and
//! never holds an expired token: a fresh token is written when 40% of the current one's life is
//! left, and if none can be had, the file is removed when its token enters its last 10% (the part
//! the daemon never serves either). A reader sees a valid token or no file.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;
use crate::fs::write_private;
use crate::token::{Moment, Stamp, Token};

/// How long to wait before asking again after a failure.
const RETRY: Duration = Duration::from_secs(1);

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::warn!(sink = %path.display(), "no fresh token: removed the token file before its token expires")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(sink = %path.display(), "cannot remove the token file: {e}"),
    }
}

/// Keeps `path` holding a valid token from `get(min_ttl)`, forever.
pub async fn keep<F, Fut>(path: PathBuf, get: F)
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = Result<Token, Error>>,
{
    // What the file holds; `None` at first: a file left by an earlier run is not trusted.
    let mut written: Option<Token> = None;
    let mut first = true;
    loop {
        let mut wait = RETRY;
        match get(Duration::ZERO).await {
            Ok(mut token) => {
                let life = token.lifetime();
                if token.remaining(Moment::now()) < life * 4 / 10 {
                    // Time for a fresh one; the broker mints since the cached one cannot meet this.
                    match get(life * 6 / 10).await {
                        Ok(fresh) => token = fresh,
                        Err(failure) => {
                            tracing::info!(sink = %path.display(), "no fresh token yet: {failure}")
                        }
                    }
                }
                if written.as_ref().map(Token::jwt) != Some(token.jwt()) {
                    match write_private(&path, token.jwt().as_bytes()) {
                        Ok(()) => {
                            tracing::info!(sink = %path.display(), "wrote a fresh token");
                            written = Some(token.clone());
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                let left = token.remaining(Moment::now()).saturating_sub(life * 4 / 10);
                if !left.is_zero() {
                    wait = left;
                }
            }
            Err(failure) => {
                tracing::warn!(sink = %path.display(), "no token: {failure}");
                if first {
                    remove(&path);
                }
            }
        }
        first = false;
        if let Some(token) = &written {
            let usable = token.remaining(Moment::now()).saturating_sub(token.lifetime() / 10);
            if usable.is_zero() {
                remove(&path);
                written = None;
            } else {
                wait = wait.min(usable);
            }
        }
        super::timer::sleep_until(Stamp::now().after(wait.max(Duration::from_millis(50))), Stamp::now).await;
    }
}

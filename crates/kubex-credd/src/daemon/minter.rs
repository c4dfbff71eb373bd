//! What mints a token in the daemon: the Kubex client, one per CA bundle; a fake in unit tests.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use crate::secret::SecretString;

use crate::config::Profile;
use crate::error::Error;
use crate::kubex::{AuthError, Client};
use crate::sync::Locked as _;
use crate::token::Token;

/// What Kubex answered; the outer error is the client's own setup (a CA bundle that cannot be read,
/// exit 2), which no hold or backoff applies to.
pub type MintFuture<'a> = Pin<Box<dyn Future<Output = Result<Result<Token, AuthError>, Error>> + Send + 'a>>;

/// Mints a token for a profile with a password, waiting at most `limit` for Kubex. Called only by
/// `guarded::mint`, which holds the account's lock and files the outcome.
pub trait Minter: Send + Sync {
    fn mint<'a>(&'a self, profile: &'a Profile, password: &'a SecretString, limit: Duration) -> MintFuture<'a>;

    /// Forgets what it set up (`SIGHUP`): CA bundles are read again.
    fn reload(&self) {}

    /// How many HTTP clients it keeps (`status`).
    fn clients(&self) -> usize {
        0
    }
}

/// How many HTTP clients (one per CA bundle) the daemon keeps, the least recently used let go first.
pub const MAX_CLIENTS: usize = 8;

/// Mints with one HTTP client per CA bundle (and per whether the instance is on this machine: no
/// proxy then), set up again when the bundle's file changes.
#[derive(Debug)]
pub struct KubexMinter {
    /// Least recently used first.
    clients: Mutex<Vec<Cached>>,
    timeout: Duration,
}

#[derive(Debug, Clone)]
struct Cached {
    key: (Option<PathBuf>, bool),
    /// The CA file as it was when read.
    version: Option<crate::fs::FileVersion>,
    client: Client,
}

impl KubexMinter {
    pub fn new(timeout: Duration) -> KubexMinter {
        KubexMinter { clients: Mutex::new(Vec::new()), timeout }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Vec<Cached>> {
        self.clients.locked()
    }

    fn client(&self, profile: &Profile) -> Result<Client, Error> {
        let key = (profile.ca_cert.clone(), crate::config::is_loopback(&profile.url));
        let version = profile.ca_cert.as_deref().and_then(crate::fs::file_version);
        let mut clients = self.cached();
        if let Some(i) = clients.iter().position(|c| c.key == key) {
            let cached = clients.remove(i);
            if cached.version == version {
                clients.push(cached.clone());
                return Ok(cached.client);
            }
            tracing::info!("the CA bundle changed: reading it again");
        }
        let client = Client::for_profile(profile, self.timeout)?;
        clients.push(Cached { key, version, client: client.clone() });
        if clients.len() > MAX_CLIENTS {
            clients.remove(0);
        }
        Ok(client)
    }
}

impl Minter for KubexMinter {
    fn mint<'a>(&'a self, profile: &'a Profile, password: &'a SecretString, limit: Duration) -> MintFuture<'a> {
        Box::pin(async move {
            let client = self.client(profile)?;
            Ok(client.authorize(&profile.authorize_url(), &profile.user, password, limit).await)
        })
    }

    fn reload(&self) {
        self.cached().clear();
    }

    fn clients(&self) -> usize {
        self.cached().len()
    }
}

//! What mints a token in the daemon: the Kubex client, one per CA bundle; a fake in unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::SecretString;

use crate::config::Profile;
use crate::error::Error;
use crate::kubex::{AuthError, Client};
use crate::token::Token;

/// What Kubex answered; the outer error is the client's own setup (a CA bundle that cannot be read,
/// exit 2), which no hold or backoff applies to.
pub type MintFuture<'a> = Pin<Box<dyn Future<Output = Result<Result<Token, AuthError>, Error>> + Send + 'a>>;

/// Mints a token for a profile with a password.
pub trait Minter: Send + Sync {
    fn mint<'a>(&'a self, profile: &'a Profile, password: &'a SecretString) -> MintFuture<'a>;
}

/// Mints with one HTTP client per CA bundle.
#[derive(Debug)]
pub struct KubexMinter {
    /// By CA bundle, and whether the instance is on this machine (no proxy then).
    clients: Mutex<HashMap<(Option<PathBuf>, bool), Client>>,
    timeout: Duration,
}

impl KubexMinter {
    pub fn new(timeout: Duration) -> KubexMinter {
        KubexMinter { clients: Mutex::new(HashMap::new()), timeout }
    }

    fn client(&self, profile: &Profile) -> Result<Client, Error> {
        let key = (profile.ca_cert.clone(), crate::config::is_loopback(&profile.url));
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = Client::for_profile(profile, self.timeout)?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl Minter for KubexMinter {
    fn mint<'a>(&'a self, profile: &'a Profile, password: &'a SecretString) -> MintFuture<'a> {
        Box::pin(async move {
            let client = self.client(profile)?;
            Ok(client.authorize(&profile.authorize_url(), &profile.user, password).await)
        })
    }
}

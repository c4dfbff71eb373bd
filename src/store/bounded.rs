//! Every call to the platform keychain bounded: connect, search, read, write and delete each run on
//! a worker thread of their account's lane, and the caller waits at most its patience. A keychain
//! that stops answering (a stopped process, an unlock prompt nobody sees) costs a command its
//! patience, never its life. Calls for one account run in order (a stuck write cannot land after a
//! later delete); a read, search or connect still in flight is joined by the next identical call
//! instead of being asked again; other accounts and other password sources are never held up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::KeychainError;
use super::SecretStore;
use super::keychain::{OsKeychain, accounts, has_entry};

/// How long scripts and the daemon wait for the keychain, at most (a shorter `KUBEX_CRED_TIMEOUT`
/// shortens it, so the answer comes within the client's patience).
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long `login` and `logout` at a terminal wait: time for the user to answer an unlock prompt.
pub const INTERACTIVE_PATIENCE: Duration = Duration::from_secs(60);

/// The patience of a command: [`INTERACTIVE_PATIENCE`] for a person at a terminal, else
/// [`PATIENCE`] or `timeout` when shorter.
pub fn patience(timeout: Duration, interactive: bool) -> Duration {
    if interactive { INTERACTIVE_PATIENCE } else { timeout.min(PATIENCE) }
}

/// What a call asks of the keychain.
#[derive(Debug)]
enum Op {
    Connect,
    Get,
    Set(SecretString),
    Delete,
    /// Whether an entry exists, without an unlock prompt (`has_entry`).
    Search,
    /// Every account with an entry (`accounts`).
    List,
}

impl Op {
    /// Calls that change nothing: one in flight answers every identical call that comes after it.
    fn joins(&self, other: &Op) -> bool {
        matches!((self, other), (Op::Connect, Op::Connect) | (Op::Get, Op::Get) | (Op::Search, Op::Search))
    }
}

#[derive(Debug, Clone)]
enum Answer {
    Connected,
    Password(SecretString),
    Stored,
    Deleted(bool),
    Presence(&'static str),
    /// `None`: this platform's store cannot list its entries.
    Accounts(Option<Vec<String>>),
}

#[derive(Debug)]
struct Job {
    op: Op,
    outcome: Mutex<Option<Result<Answer, KeychainError>>>,
    done: Condvar,
}

/// The platform keychain, opened on first use (and again after it went away), with a lane of
/// calls per account.
#[derive(Debug, Default)]
pub struct Keychain {
    store: Arc<Mutex<Option<Arc<OsKeychain>>>>,
    /// Each account's calls, the one running first; a lane exists while its worker runs.
    lanes: Arc<Mutex<HashMap<String, VecDeque<Arc<Job>>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The lanes of calls that concern no one account.
const CONNECT_LANE: &str = "";
const LIST_LANE: &str = "\0list";

impl Keychain {
    /// This process's keychain: every caller shares its lanes, so a call in flight is joined.
    pub fn shared() -> &'static Keychain {
        static SHARED: OnceLock<Keychain> = OnceLock::new();
        SHARED.get_or_init(Keychain::default)
    }

    /// Queues `op` on the account's lane (or joins the identical call last in it).
    fn start(&self, account: &str, op: Op) -> Arc<Job> {
        let mut lanes = lock(&self.lanes);
        let fresh = !lanes.contains_key(account);
        let lane = lanes.entry(account.to_owned()).or_default();
        if let Some(last) = lane.back().filter(|last| last.op.joins(&op)) {
            return last.clone();
        }
        let job = Arc::new(Job { op, outcome: Mutex::new(None), done: Condvar::new() });
        lane.push_back(job.clone());
        if fresh {
            let (store, lanes, account) = (self.store.clone(), self.lanes.clone(), account.to_owned());
            std::thread::spawn(move || work(&store, &lanes, &account));
        }
        job
    }

    /// Waits for a call's outcome until `deadline`; `None` if it did not come.
    fn wait(job: &Job, deadline: Instant) -> Option<Result<Answer, KeychainError>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = lock(&job.outcome);
        let (outcome, _) = job
            .done
            .wait_timeout_while(outcome, left, |o| o.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        outcome.clone()
    }

    fn call(&self, account: &str, op: Op, patience: Duration) -> Result<Answer, KeychainError> {
        let deadline = Instant::now() + patience;
        let retry = matches!(op, Op::Get);
        let job = self.start(account, op);
        match Self::wait(&job, deadline) {
            // A read that waited on a keychain which has since gone (and maybe come back) failed:
            // one fresh read, within the same patience.
            Some(Err(KeychainError::Unavailable { .. })) if retry && Instant::now() < deadline => {
                let again = self.start(account, Op::Get);
                Self::wait(&again, deadline).unwrap_or_else(|| Err(late(patience)))
            }
            Some(outcome) => outcome,
            None => Err(late(patience)),
        }
    }

    /// Connects to the keychain (what `login` and `logout` check before anything else).
    pub fn connect(&self, patience: Duration) -> Result<(), KeychainError> {
        self.call(CONNECT_LANE, Op::Connect, patience).map(drop)
    }

    pub fn get(&self, account: &str, patience: Duration) -> Result<SecretString, KeychainError> {
        match self.call(account, Op::Get, patience)? {
            Answer::Password(password) => Ok(password),
            other => Err(unexpected(&other)),
        }
    }

    pub fn set(&self, account: &str, password: &SecretString, patience: Duration) -> Result<(), KeychainError> {
        self.call(account, Op::Set(password.clone()), patience).map(drop)
    }

    pub fn delete(&self, account: &str, patience: Duration) -> Result<bool, KeychainError> {
        match self.call(account, Op::Delete, patience)? {
            Answer::Deleted(found) => Ok(found),
            other => Err(unexpected(&other)),
        }
    }

    /// Every account the keychain holds an entry for; `None` where the store cannot list them.
    pub fn accounts(&self, patience: Duration) -> Result<Option<Vec<String>>, KeychainError> {
        match self.call(LIST_LANE, Op::List, patience)? {
            Answer::Accounts(accounts) => Ok(accounts),
            other => Err(unexpected(&other)),
        }
    }

    /// Whether the keychain holds an entry for each account (`stored`, `missing`, `unknown`), all
    /// asked at once and waited for together: `unknown` for what did not answer within `patience`.
    pub fn presence(&self, accounts: &[String], patience: Duration) -> Vec<&'static str> {
        let deadline = Instant::now() + patience;
        let jobs: Vec<Arc<Job>> = accounts.iter().map(|account| self.start(account, Op::Search)).collect();
        jobs.iter()
            .map(|job| match Self::wait(job, deadline) {
                Some(Ok(Answer::Presence(state))) => state,
                _ => "unknown",
            })
            .collect()
    }
}

/// Runs the lane's calls in order until it is empty, then lets the lane go.
fn work(store: &Mutex<Option<Arc<OsKeychain>>>, lanes: &Mutex<HashMap<String, VecDeque<Arc<Job>>>>, account: &str) {
    loop {
        let job = {
            let mut all = lock(lanes);
            match all.get(account).and_then(|lane| lane.front().cloned()) {
                Some(job) => job,
                None => {
                    all.remove(account);
                    return;
                }
            }
        };
        let outcome = run(store, account, &job.op);
        *lock(&job.outcome) = Some(outcome);
        job.done.notify_all();
        if let Some(lane) = lock(lanes).get_mut(account) {
            lane.pop_front();
        }
    }
}

fn run(store: &Mutex<Option<Arc<OsKeychain>>>, account: &str, op: &Op) -> Result<Answer, KeychainError> {
    match op {
        Op::Search => return Ok(Answer::Presence(has_entry(account))),
        Op::List => return accounts().transpose().map(Answer::Accounts),
        _ => {}
    }
    let keychain = {
        let mut store = lock(store);
        match store.as_ref() {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(OsKeychain::open()?);
                *store = Some(k.clone());
                k
            }
        }
    };
    let outcome = match op {
        Op::Connect => Ok(Answer::Connected),
        Op::Get => keychain.get(account).map(Answer::Password),
        Op::Set(password) => keychain.set(account, password).map(|()| Answer::Stored),
        Op::Delete => keychain.delete(account).map(Answer::Deleted),
        Op::Search | Op::List => unreachable!("answered above"),
    };
    // A keychain that went away is opened again by the next call (a restarted session bus).
    if matches!(outcome, Err(KeychainError::Unavailable { .. })) {
        *lock(store) = None;
    }
    outcome
}

/// The failure of a call that did not answer within its patience.
fn late(patience: Duration) -> KeychainError {
    KeychainError::Unavailable {
        why: format!(
            "the keychain did not answer within {} s; an unlock prompt may be waiting for you",
            patience.as_secs_f64().ceil()
        ),
        hint: "unlock your keychain, then try again",
    }
}

fn unexpected(answer: &Answer) -> KeychainError {
    let what = match answer {
        Answer::Connected => "a connection",
        Answer::Password(_) => "a password",
        Answer::Stored => "a write",
        Answer::Deleted(_) => "a deletion",
        Answer::Presence(_) => "a search",
        Answer::Accounts(_) => "a list",
    };
    KeychainError::Unavailable { why: format!("the keychain answered with {what}"), hint: "try again" }
}

/// The platform keychain as a [`SecretStore`], each call waiting at most `patience`.
#[derive(Debug, Clone, Copy)]
pub struct Bounded {
    pub patience: Duration,
}

impl SecretStore for Bounded {
    fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
        Keychain::shared().get(account, self.patience)
    }

    fn set(&self, account: &str, password: &SecretString) -> Result<(), KeychainError> {
        Keychain::shared().set(account, password, self.patience)
    }

    fn delete(&self, account: &str) -> Result<bool, KeychainError> {
        Keychain::shared().delete(account, self.patience)
    }
}

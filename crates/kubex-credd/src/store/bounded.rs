//! Every call to the platform keychain bounded: connect, search, read, write and delete each run on
//! a worker thread of their account's lane, and the caller waits at most its patience. A keychain
//! that stops answering (a stopped process, an unlock prompt nobody sees) costs a command its
//! patience, never its life. Calls for one account run in order (a stuck write cannot land after a
//! later delete); a read, search or connect still in flight is joined by the next identical call
//! instead of being asked again; other accounts and other password sources are never held up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::protocol::PasswordState;
use crate::secret::SecretString;

use super::KeychainError;
use super::SecretStore;
use super::keychain::{OsKeychain, accounts, has_entry};
use crate::sync::Locked as _;

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
    Presence(PasswordState),
    /// `None`: this platform's store cannot list its entries.
    Accounts(Option<Vec<String>>),
}

#[derive(Debug)]
struct Job {
    op: Op,
    outcome: Mutex<Option<Result<Answer, KeychainError>>>,
    done: Condvar,
}

/// What the lanes call: the platform's keychain and its search (a fake in unit tests).
trait Backend: Send + Sync {
    fn open(&self) -> Result<Arc<dyn SecretStore>, KeychainError>;
    fn has_entry(&self, account: &str) -> PasswordState;
    fn accounts(&self) -> Option<Result<Vec<String>, KeychainError>>;
}

struct Platform;

impl Backend for Platform {
    fn open(&self) -> Result<Arc<dyn SecretStore>, KeychainError> {
        Ok(Arc::new(OsKeychain::open()?))
    }

    fn has_entry(&self, account: &str) -> PasswordState {
        has_entry(account)
    }

    fn accounts(&self) -> Option<Result<Vec<String>, KeychainError>> {
        accounts()
    }
}

/// The store once opened; `None` until then, and again after it went away.
type Opened = Arc<Mutex<Option<Arc<dyn SecretStore>>>>;
/// Each account's calls, the one running first; a lane exists while its worker runs.
type Lanes = Arc<Mutex<HashMap<String, VecDeque<Arc<Job>>>>>;

/// The platform keychain, opened on first use (and again after it went away), with a lane of
/// calls per account.
pub struct Keychain {
    backend: Arc<dyn Backend>,
    store: Opened,
    lanes: Lanes,
}

impl Default for Keychain {
    fn default() -> Self {
        Keychain::on(Arc::new(Platform))
    }
}

impl std::fmt::Debug for Keychain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keychain").field("lanes", &self.lanes.locked().len()).finish()
    }
}

/// The lanes of calls that concern no one account.
const CONNECT_LANE: &str = "";
const LIST_LANE: &str = "\0list";

impl Keychain {
    fn on(backend: Arc<dyn Backend>) -> Keychain {
        Keychain { backend, store: Arc::default(), lanes: Arc::default() }
    }

    /// This process's keychain: every caller shares its lanes, so a call in flight is joined.
    pub fn shared() -> &'static Keychain {
        static SHARED: OnceLock<Keychain> = OnceLock::new();
        SHARED.get_or_init(Keychain::default)
    }

    /// Queues `op` on the account's lane (or joins the identical call last in it).
    fn start(&self, account: &str, op: Op) -> Arc<Job> {
        let mut lanes = self.lanes.locked();
        let fresh = !lanes.contains_key(account);
        let lane = lanes.entry(account.to_owned()).or_default();
        if let Some(last) = lane.back().filter(|last| last.op.joins(&op)) {
            return last.clone();
        }
        let job = Arc::new(Job { op, outcome: Mutex::new(None), done: Condvar::new() });
        lane.push_back(job.clone());
        if fresh {
            let (backend, store, lanes) = (self.backend.clone(), self.store.clone(), self.lanes.clone());
            let account = account.to_owned();
            std::thread::spawn(move || work(&*backend, &store, &lanes, &account));
        }
        job
    }

    /// Waits for a call's outcome until `deadline`; `None` if it did not come.
    fn wait(job: &Job, deadline: Instant) -> Option<Result<Answer, KeychainError>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = job.outcome.locked();
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
    pub fn presence(&self, accounts: &[String], patience: Duration) -> Vec<PasswordState> {
        let deadline = Instant::now() + patience;
        let jobs: Vec<Arc<Job>> = accounts.iter().map(|account| self.start(account, Op::Search)).collect();
        jobs.iter()
            .map(|job| match Self::wait(job, deadline) {
                Some(Ok(Answer::Presence(state))) => state,
                _ => PasswordState::Unknown,
            })
            .collect()
    }
}

/// Runs the lane's calls in order until it is empty, then lets the lane go.
fn work(backend: &dyn Backend, store: &Opened, lanes: &Lanes, account: &str) {
    loop {
        let job = {
            let mut all = lanes.locked();
            match all.get(account).and_then(|lane| lane.front().cloned()) {
                Some(job) => job,
                None => {
                    all.remove(account);
                    return;
                }
            }
        };
        // A panic in the keychain library (it happens when the process is out of descriptors)
        // is a failure of this call, not a worker gone silent until every caller's deadline.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(backend, store, account, &job.op)))
            .unwrap_or_else(|_| {
                Err(KeychainError::Unavailable {
                    why: "the keychain library failed (out of file descriptors?)".to_owned(),
                    hint: "try again",
                })
            });
        *job.outcome.locked() = Some(outcome);
        job.done.notify_all();
        if let Some(lane) = lanes.locked().get_mut(account) {
            lane.pop_front();
        }
    }
}

fn run(backend: &dyn Backend, store: &Opened, account: &str, op: &Op) -> Result<Answer, KeychainError> {
    match op {
        Op::Search => return Ok(Answer::Presence(backend.has_entry(account))),
        Op::List => return backend.accounts().transpose().map(Answer::Accounts),
        _ => {}
    }
    let keychain = {
        let mut store = store.locked();
        match store.as_ref() {
            Some(k) => k.clone(),
            None => {
                let k = backend.open()?;
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
        *store.locked() = None;
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A keychain whose calls for `u@a` wait until the test lets each go (others pass at once),
    /// and which logs every call in the order it was carried out.
    #[derive(Default)]
    struct Gated {
        log: Mutex<Vec<String>>,
        gate: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl Gated {
        fn pass(&self, what: String) {
            if what.ends_with(" u@a")
                && let Some(gate) = self.gate.locked().as_ref()
            {
                let _ = gate.recv();
            }
            self.log.locked().push(what);
        }
    }

    struct Fake(Arc<Gated>);

    impl SecretStore for Fake {
        fn get(&self, account: &str) -> Result<SecretString, KeychainError> {
            self.0.pass(format!("get {account}"));
            Ok(SecretString::from("pw"))
        }
        fn set(&self, account: &str, _: &SecretString) -> Result<(), KeychainError> {
            self.0.pass(format!("set {account}"));
            Ok(())
        }
        fn delete(&self, account: &str) -> Result<bool, KeychainError> {
            self.0.pass(format!("delete {account}"));
            Ok(true)
        }
    }

    impl Backend for Fake {
        fn open(&self) -> Result<Arc<dyn SecretStore>, KeychainError> {
            Ok(Arc::new(Fake(self.0.clone())))
        }
        fn has_entry(&self, _: &str) -> PasswordState {
            PasswordState::Stored
        }
        fn accounts(&self) -> Option<Result<Vec<String>, KeychainError>> {
            None
        }
    }

    /// A keychain whose calls each wait for one `()` on the returned sender.
    fn gated() -> (Keychain, Arc<Gated>, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel();
        let gated = Arc::new(Gated { gate: Mutex::new(Some(rx)), ..Gated::default() });
        (Keychain::on(Arc::new(Fake(gated.clone()))), gated, tx)
    }

    const SHORT: Duration = Duration::from_millis(50);

    fn wait_for(gated: &Gated, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while gated.log.locked().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        gated.log.locked().clone()
    }

    #[test]
    fn a_stuck_write_times_out_and_a_later_delete_still_lands_after_it() {
        let (keychain, gated, go) = gated();
        let password = SecretString::from("pw");
        let late = keychain.set("u@a", &password, SHORT).expect_err("no answer in time");
        assert!(late.to_string().contains("did not answer within"), "{late}");
        keychain.delete("u@a", SHORT).expect_err("queued behind the write");
        go.send(()).expect("let the write go");
        go.send(()).expect("let the delete go");
        assert_eq!(wait_for(&gated, 2), ["set u@a", "delete u@a"], "in the order they were asked");
    }

    #[test]
    fn reads_in_flight_are_joined_and_other_accounts_are_not_held_up() {
        let (keychain, gated, go) = gated();
        keychain.get("u@a", SHORT).expect_err("stuck");
        keychain.get("u@a", SHORT).expect_err("joined the stuck read");
        // Another account's lane is its own: it answers while u@a's read is still stuck.
        keychain.get("v@b", Duration::from_secs(10)).expect("not held up");
        assert_eq!(*gated.log.locked(), ["get v@b"]);
        go.send(()).expect("let u@a's read go");
        let log = wait_for(&gated, 2);
        assert_eq!(log, ["get v@b", "get u@a"], "one read of u@a for its two callers");
        std::thread::sleep(SHORT);
        assert_eq!(gated.log.locked().len(), 2, "no second read of u@a");
    }
}

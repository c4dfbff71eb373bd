//! Token slots, one per profile's account and password source: the cache, one mint at a time for
//! all who wait, the background refresh, and applying the policy (`policy`) to each outcome,
//! together with the holds other processes left in the holds file. Only this file waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::minter::Minter;
use super::notify::{Event, Notifier};
use super::policy::{self, Decision, Hold};
use crate::config::Profile;
use crate::error::Error;
use crate::holds::Holds;
use crate::protocol::ProfileStatus;
use crate::store::Passwords;
use crate::token::{Moment, Token};

#[derive(Debug)]
struct SlotState {
    profile: Profile,
    token: Option<Token>,
    hold: Hold,
    failures: u32,
    refreshing: bool,
    mints: u64,
    /// The lifetime of the last token minted, here or (from the holds file) by another process.
    lifetime: Option<Duration>,
    /// When it was last asked for (the broker's counter), to let the least recently used go.
    used: u64,
}

#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held by the one mint in flight; everybody else waits for its outcome.
    mint_lock: tokio::sync::Mutex<()>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The token slots, by [`Profile::slot`]: one per account (user at instance) and password source,
/// so two profiles of one account never share a password, a hold or a token.
pub struct Broker {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    uses: std::sync::atomic::AtomicU64,
    passwords: Arc<dyn Passwords>,
    minter: Arc<dyn Minter>,
    notifier: Arc<dyn Notifier>,
    holds: Holds,
    /// Both local clocks (`Moment::now`; tests pass their own): token lives are counted on both,
    /// holds on the suspend-counting one, the holds file's waits on the wall clock.
    clock: fn() -> Moment,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("slots", &self.slots().len()).finish()
    }
}

impl Broker {
    pub fn new(
        passwords: Arc<dyn Passwords>,
        minter: Arc<dyn Minter>,
        notifier: Arc<dyn Notifier>,
        holds: Holds,
        clock: fn() -> Moment,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            slots: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
            passwords,
            minter,
            notifier,
            holds,
            clock,
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot(&self, profile: &Profile) -> Arc<Slot> {
        let used = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut slots = self.slots();
        if !slots.contains_key(&profile.slot()) && slots.len() >= MAX_SLOTS {
            evict_one(&mut slots);
        }
        let slot = slots.entry(profile.slot()).or_insert_with(|| {
            Arc::new(Slot {
                state: Mutex::new(SlotState {
                    profile: profile.clone(),
                    token: None,
                    hold: Hold::None,
                    failures: 0,
                    refreshing: false,
                    mints: 0,
                    lifetime: None,
                    used,
                }),
                mint_lock: tokio::sync::Mutex::new(()),
            })
        });
        let mut state = slot.state();
        state.used = used;
        if state.profile != *profile {
            state.profile = profile.clone();
        }
        drop(state);
        slot.clone()
    }

    /// Forgets what it set up outside the slots (`SIGHUP`): CA bundles are read again.
    pub fn reload(&self) {
        self.minter.reload();
    }

    /// How many slots and HTTP clients it keeps (`status`).
    pub fn sizes(&self) -> (usize, usize) {
        (self.slots().len(), self.minter.clients())
    }

    /// A token for the profile valid for at least `min_ttl`, minting once for all who wait.
    pub async fn get(self: &Arc<Self>, profile: &Profile, min_ttl: Duration) -> Result<Token, Error> {
        let slot = self.slot(profile);
        if let Some(answer) = self.answer(&slot, min_ttl) {
            return answer;
        }
        // The wait and the mint run in a task of their own: a caller that goes away (its client
        // left) does not cancel the mint that others wait for.
        let (broker, profile) = (self.clone(), profile.clone());
        tokio::spawn(async move { broker.wait_or_mint(&slot, &profile, min_ttl).await })
            .await
            .map_err(|e| Error::unexpected(format!("the mint task failed: {e}")))?
    }

    async fn wait_or_mint(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        profile: &Profile,
        min_ttl: Duration,
    ) -> Result<Token, Error> {
        let _minting = slot.mint_lock.lock().await;
        if let Some(answer) = self.answer(slot, min_ttl) {
            return answer;
        }
        if let Some(error) = policy::unmeetable(min_ttl, self.lifetime(slot, min_ttl).await, &profile.url) {
            return Err(error);
        }
        let token = self.mint_once(slot).await?;
        let left = token.remaining((self.clock)());
        if left < min_ttl {
            return Err(policy::min_ttl_error(min_ttl, &profile.url, left));
        }
        Ok(token)
    }

    /// The lifetime of the slot's tokens, if known here or from the holds file (only looked up
    /// for a `min_ttl`, so that one no token can meet is refused without a mint).
    async fn lifetime(&self, slot: &Slot, min_ttl: Duration) -> Option<Duration> {
        let (known, account) = {
            let s = slot.state();
            (s.lifetime, s.profile.account())
        };
        if known.is_some() || min_ttl.is_zero() {
            return known;
        }
        let holds = self.holds.clone();
        let filed = blocking(move || holds.lifetime(&account)).await.unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        slot.state().lifetime = filed;
        filed
    }

    /// Serves from the slot or fails from its hold; `None` means a mint is needed.
    fn answer(self: &Arc<Self>, slot: &Arc<Slot>, min_ttl: Duration) -> Option<Result<Token, Error>> {
        let decision = {
            let mut s = slot.state();
            let decision = policy::decide(s.token.as_ref(), &s.hold, s.refreshing, (self.clock)(), min_ttl);
            if let Decision::Serve { refresh: true, .. } = decision {
                s.refreshing = true;
            }
            decision
        };
        match decision {
            Decision::Serve { token, refresh } => {
                if refresh {
                    self.spawn_refresh(slot.clone());
                }
                Some(Ok(token))
            }
            Decision::Fail(error) => Some(Err(error)),
            Decision::Mint => None,
        }
    }

    fn spawn_refresh(self: &Arc<Self>, slot: Arc<Slot>) {
        let broker = self.clone();
        tokio::spawn(async move {
            if let Ok(_minting) = slot.mint_lock.try_lock() {
                let _ = broker.mint_once(&slot).await;
            }
            slot.state().refreshing = false;
        });
    }

    /// One Authorize call, unless the password read is one Kubex rejected or the account must
    /// wait, here or (the holds file, checked right before the call) in any other process.
    async fn mint_once(&self, slot: &Slot) -> Result<Token, Error> {
        let (profile, hold) = {
            let s = slot.state();
            (s.profile.clone(), s.hold.clone())
        };
        let passwords = self.passwords.clone();
        let reading = profile.clone();
        let password = blocking(move || passwords.read(&reading)).await?;
        let print = policy::fingerprint(&password);
        if let Some(error) = policy::rejected_again(&hold, print) {
            return Err(error);
        }
        let (account, source) = (profile.account(), profile.source.to_string());
        let holds = self.holds.clone();
        let (checking, checked) = (account.clone(), password.clone());
        let wall = (self.clock)().wall;
        match blocking(move || holds.check(&checking, &checked, wall)).await {
            Ok(Some(held)) => {
                let (hold, error) = policy::from_file(held, print, (self.clock)().at);
                tracing::info!(profile = %profile.name, "not sent: {error}");
                slot.state().hold = hold;
                return Err(error);
            }
            Ok(None) => {}
            // The state directory is not writable or readable: the holds of this process still apply.
            Err(e) => tracing::warn!("{e}"),
        }
        tracing::debug!(profile = %profile.name, "minting a token");
        let result = self.minter.mint(&profile, &password).await?;
        let now = (self.clock)();
        let (outcome, to_file, event) = {
            let mut s = slot.state();
            match result {
                Ok(token) => {
                    s.token = Some(token.clone());
                    s.hold = Hold::None;
                    s.failures = 0;
                    s.mints += 1;
                    s.lifetime = Some(token.lifetime());
                    (Ok(token), None, None)
                }
                Err(e) => {
                    let error = Error::from(e.clone());
                    tracing::info!(profile = %profile.name, code = error.code(), "mint failed: {error}");
                    let after = policy::after_failure(&s.hold, s.failures, &e, print, now.at, fastrand::f64());
                    s.hold = after.hold;
                    s.failures = after.failures;
                    (Err(error), policy::to_file(&e), after.event)
                }
            }
        };
        if let Some(kind) = event {
            self.notifier.notify(Event::new(kind, &profile));
        }
        let (holds, wall) = (self.holds.clone(), now.wall);
        let filed = match (&outcome, to_file) {
            (Ok(token), _) => {
                let lifetime = token.lifetime();
                blocking(move || holds.succeeded(&account, &source, None, lifetime)).await
            }
            (Err(_), Some(held)) => blocking(move || holds.record(&account, &source, &password, &held, wall)).await,
            (Err(_), None) => Ok(()),
        };
        if let Err(e) = filed {
            tracing::warn!("{e}");
        }
        outcome
    }

    /// Drops the slot of an account's password source, or of all its sources: its token and any
    /// hold (after `login` or `logout`).
    pub fn forget(&self, account: &str, source: Option<&str>) -> bool {
        let mut slots = self.slots();
        let before = slots.len();
        slots.retain(|_, slot| {
            let s = slot.state();
            s.profile.account() != account || source.is_some_and(|source| s.profile.source.to_string() != source)
        });
        slots.len() != before
    }

    /// Drops a cached token of the account if it is this one (a consumer said the server refused it).
    pub fn erase(&self, account: &str, jwt: &str) -> bool {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        slots.iter().any(|slot| {
            let mut s = slot.state();
            let current = s.profile.account() == account && s.token.as_ref().is_some_and(|t| t.jwt() == jwt);
            if current {
                s.token = None;
            }
            current
        })
    }

    /// Every slot's state, never a token.
    pub fn status(&self) -> Vec<ProfileStatus> {
        let now = (self.clock)();
        let mut list: Vec<ProfileStatus> = self
            .slots()
            .values()
            .map(|slot| {
                let s = slot.state();
                let (state, retry_in_s, last_error) = policy::state(s.token.as_ref(), &s.hold, s.refreshing, now);
                let token = s.token.as_ref().filter(|t| policy::servable(t, now, Duration::ZERO));
                ProfileStatus {
                    state,
                    expires_ms: token.map(Token::expires_local_ms),
                    remaining_s: token.map(|t| t.remaining(now).as_secs()),
                    retry_in_s,
                    last_error,
                    mints: s.mints,
                    ..s.profile.idle_status()
                }
            })
            .collect();
        list.sort_by(|a, b| a.profile.cmp(&b.profile));
        list
    }
}

/// How many profiles' slots the daemon keeps; past it the least recently used idle slot goes (what
/// must outlive it, a rejection or a wait, is in the holds file).
pub const MAX_SLOTS: usize = 64;

/// Lets the least recently used slot go that no mint or refresh is using.
fn evict_one(slots: &mut HashMap<String, Arc<Slot>>) {
    let idle = slots
        .iter()
        .filter(|(_, slot)| slot.mint_lock.try_lock().is_ok() && !slot.state().refreshing)
        .min_by_key(|(_, slot)| slot.state().used)
        .map(|(key, _)| key.clone());
    if let Some(key) = idle {
        slots.remove(&key);
    }
}

/// Runs blocking work (a password source, the holds file) off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::unexpected(format!("a blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use secrecy::SecretString;

    use super::*;
    use crate::daemon::minter::MintFuture;
    use crate::daemon::notify::Kind;
    use crate::kubex::AuthError;
    use crate::store::{MemoryStore, SecretStore};

    // The test clock, in milliseconds; each test runs on its own thread-local copy.
    thread_local! {
        static NOW_MS: AtomicU64 = const { AtomicU64::new(1_000_000) };
    }

    /// The test clock on both of its faces.
    fn now() -> Moment {
        let ms = Duration::from_millis(NOW_MS.with(|n| n.load(Ordering::SeqCst)));
        Moment { at: crate::token::Stamp::from_duration(ms), wall: std::time::UNIX_EPOCH + ms }
    }

    fn advance(d: Duration) {
        NOW_MS.with(|n| n.fetch_add(d.as_millis() as u64, Ordering::SeqCst));
    }

    /// Mints 100-second tokens on the test clock, or fails as told.
    struct FakeKubex {
        calls: AtomicU32,
        answer: Mutex<Result<(), AuthError>>,
        delay: Duration,
    }

    impl Minter for FakeKubex {
        fn mint<'a>(&'a self, _: &'a Profile, _: &'a SecretString) -> MintFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let sent = now();
                tokio::time::sleep(self.delay).await;
                if let Err(e) = self.answer.lock().expect("lock").clone() {
                    return Ok(Err(e));
                }
                // iat 1000 s, exp 1101 s: a 100 s lifetime after the truncation second.
                let claims = r#"{"iat":1000,"exp":1101}"#;
                use base64::Engine;
                let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
                let jwt = format!(
                    "{}.{}.{}",
                    b64(r#"{"alg":"HS512"}"#),
                    b64(claims),
                    b64(&format!("sig{}", self.calls.load(Ordering::SeqCst)))
                );
                Ok(Ok(Token::from_authorize(jwt, 1_101_000, None, sent).expect("valid token")))
            })
        }
    }

    /// Records the events the broker reports.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl Notifier for Recorder {
        fn notify(&self, event: Event) {
            self.0.lock().expect("lock").push(event);
        }
    }

    struct Fixture {
        broker: Arc<Broker>,
        kubex: Arc<FakeKubex>,
        store: Arc<MemoryStore>,
        events: Arc<Recorder>,
        profile: Profile,
        _state: tempfile::TempDir,
    }

    fn fixture(delay: Duration) -> Fixture {
        let url = crate::config::base_url("https://acme.example.com").expect("url");
        let profile = Profile::new("p".into(), url, "u".into(), None);
        let store = Arc::new(MemoryStore::default());
        store.set(&profile.account(), &SecretString::from("pw")).expect("set");
        let kubex = Arc::new(FakeKubex { calls: AtomicU32::new(0), answer: Mutex::new(Ok(())), delay });
        let events = Arc::new(Recorder::default());
        let state = tempfile::tempdir().expect("state dir");
        let holds = Holds::in_dir(state.path().to_path_buf());
        let broker = Broker::new(store.clone(), kubex.clone(), events.clone(), holds, now);
        Fixture { broker, kubex, store, events, profile, _state: state }
    }

    impl Fixture {
        fn calls(&self) -> u32 {
            self.kubex.calls.load(Ordering::SeqCst)
        }
        fn fail_with(&self, e: AuthError) {
            *self.kubex.answer.lock().expect("lock") = Err(e);
        }
        /// How many events of each kind were reported: (rejected, expired).
        fn events(&self) -> (usize, usize) {
            let events = self.events.0.lock().expect("lock");
            let rejected = events.iter().filter(|e| e.kind == Kind::Rejected).count();
            (rejected, events.len() - rejected)
        }
        fn succeed(&self) {
            *self.kubex.answer.lock().expect("lock") = Ok(());
        }
        async fn get(&self) -> Result<Token, Error> {
            self.broker.get(&self.profile, Duration::ZERO).await
        }
    }

    fn url() -> String {
        "https://acme.example.com/api/v2/authorize".into()
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_on_a_cold_slot_share_one_mint() {
        let f = Arc::new(fixture(Duration::from_millis(200)));
        let gets: Vec<_> = (0..50)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move { f.get().await })
            })
            .collect();
        let mut tokens = Vec::new();
        for get in gets {
            tokens.push(get.await.expect("task"));
        }
        assert_eq!(f.calls(), 1);
        let first = tokens[0].as_ref().expect("token").jwt().to_owned();
        assert!(tokens.iter().all(|t| t.as_ref().expect("token").jwt() == first));
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresh_window_serves_at_once_and_refreshes_once_in_the_background() {
        let f = fixture(Duration::from_millis(10));
        let first = f.get().await.expect("token").jwt().to_owned();
        advance(Duration::from_secs(60)); // 40% left: no refresh yet
        assert_eq!(f.get().await.expect("token").jwt(), first);
        assert_eq!(f.calls(), 1);
        advance(Duration::from_secs(20)); // 20% left: serve, refresh once
        for _ in 0..10 {
            assert_eq!(f.get().await.expect("served at once").jwt(), first);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(f.calls(), 2, "exactly one background refresh");
        assert_ne!(f.get().await.expect("token").jwt(), first, "the refreshed token is served next");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_nobody_asks_for_does_not_mint() {
        let f = fixture(Duration::ZERO);
        f.get().await.expect("token");
        advance(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(f.calls(), 1, "no timer refreshes an idle slot");
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_ten_percent_is_never_served() {
        let f = fixture(Duration::ZERO);
        f.fail_with(AuthError::Server { url: url(), status: 503 });
        // No token and a failing server: the error, then a backoff hold.
        assert_eq!(f.get().await.expect_err("down").code(), 7);
        f.succeed();
        advance(policy::BACKOFF_MAX);
        let first = f.get().await.expect("token").jwt().to_owned();
        f.fail_with(AuthError::Server { url: url(), status: 500 });
        advance(Duration::from_secs(91)); // 9 s of 100 left
        let err = f.get().await.expect_err("in the last 10%");
        assert_eq!(err.code(), 7);
        assert!(!err.to_string().contains(&first));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_password_is_not_sent_again_until_it_changes() {
        let f = fixture(Duration::ZERO);
        f.fail_with(AuthError::Rejected { url: url(), user: "u".into() });
        for _ in 0..20 {
            assert_eq!(f.get().await.expect_err("rejected").code(), 4);
        }
        assert_eq!(f.calls(), 1);
        advance(Duration::from_secs(3600));
        assert_eq!(f.get().await.expect_err("still rejected").code(), 4);
        assert_eq!(f.calls(), 1, "time alone does not retry a rejected password");
        assert_eq!(f.events(), (1, 0), "one notification for 21 refusals of one password");
        f.store.set(&f.profile.account(), &SecretString::from("also wrong")).expect("set");
        assert_eq!(f.get().await.expect_err("rejected again").code(), 4);
        assert_eq!(f.events(), (2, 0), "another password rejected is another event");
        f.succeed();
        f.store.set(&f.profile.account(), &SecretString::from("new")).expect("set");
        f.get().await.expect("the new password is tried");
        assert_eq!(f.calls(), 3);
        assert_eq!(f.events(), (2, 0));
        let events = f.events.0.lock().expect("lock");
        assert!(events[0].body().contains("kubex-cred login --profile p"), "{}", events[0].body());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_waits_as_told_with_one_request_per_wait() {
        let f = fixture(Duration::ZERO);
        f.fail_with(AuthError::RateLimited { url: url(), retry_after: Duration::from_secs(40), capped: None });
        let err = f.get().await.expect_err("429");
        assert_eq!(err.code(), 6);
        advance(Duration::from_secs(39));
        let err = f.get().await.expect_err("still waiting");
        assert!(err.to_string().ends_with("try again in 1 s"), "{err}");
        assert_eq!(f.calls(), 1);
        advance(Duration::from_secs(1));
        f.succeed();
        f.get().await.expect("after the wait");
        assert_eq!(f.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_back_off_and_a_valid_token_keeps_being_served() {
        let f = fixture(Duration::ZERO);
        let first = f.get().await.expect("token").jwt().to_owned();
        f.fail_with(AuthError::Server { url: url(), status: 500 });
        advance(Duration::from_secs(80)); // refresh window
        assert_eq!(f.get().await.expect("served").jwt(), first);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(f.calls(), 2, "the background refresh failed");
        for _ in 0..5 {
            assert_eq!(f.get().await.expect("still served through the outage").jwt(), first);
        }
        assert_eq!(f.calls(), 2, "no retry during the backoff");
        f.succeed();
        advance(Duration::from_secs(5)); // past the first backoff (at most 1.25 s)
        assert_eq!(f.get().await.expect("served").jwt(), first);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_ne!(f.get().await.expect("recovered").jwt(), first, "recovered without user action");
    }

    #[tokio::test(start_paused = true)]
    async fn subscription_expired_holds_ten_minutes() {
        let f = fixture(Duration::ZERO);
        f.fail_with(AuthError::Expired { url: url(), user: "u".into() });
        for _ in 0..5 {
            assert_eq!(f.get().await.expect_err("403").code(), 5);
        }
        assert_eq!(f.calls(), 1);
        advance(policy::EXPIRED_HOLD);
        assert_eq!(f.get().await.expect_err("still 403 after the hold").code(), 5);
        assert_eq!(f.calls(), 2);
        assert_eq!(f.events(), (0, 1), "one notification while the subscription stays expired");
        advance(policy::EXPIRED_HOLD);
        f.succeed();
        f.get().await.expect("asks again after the hold");
        f.fail_with(AuthError::Expired { url: url(), user: "u".into() });
        advance(Duration::from_secs(95));
        assert_eq!(f.get().await.expect_err("expired again").code(), 5);
        assert_eq!(f.events(), (0, 2), "an expiry after a success is a new event");
    }

    #[tokio::test(start_paused = true)]
    async fn min_ttl_mints_a_fresher_token() {
        let f = fixture(Duration::ZERO);
        let first = f.get().await.expect("token").jwt().to_owned();
        advance(Duration::from_secs(30));
        let t = f.broker.get(&f.profile, Duration::from_secs(80)).await.expect("fresh");
        assert_ne!(t.jwt(), first);
        assert_eq!(f.broker.get(&f.profile, Duration::from_secs(500)).await.expect_err("too long").code(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn forget_and_erase_drop_the_token() {
        let f = fixture(Duration::ZERO);
        let first = f.get().await.expect("token").jwt().to_owned();
        assert!(!f.broker.erase(&f.profile.account(), "other"));
        assert!(f.broker.erase(&f.profile.account(), &first));
        let second = f.get().await.expect("token").jwt().to_owned();
        assert_ne!(first, second);
        assert!(f.broker.forget(&f.profile.account(), None));
        assert_eq!(f.broker.status().len(), 0);
    }
}

//! The broker through its async slots, with a fake Kubex, an in-memory store and a paused clock.
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::secret::SecretString;

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
    fn mint<'a>(&'a self, _: &'a Profile, _: &'a SecretString, _: Duration) -> MintFuture<'a> {
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

/// A broker with a fake Kubex (`delay` per mint), an in-memory store holding the profile's
/// password, a recorder of notifications and a holds file in a temporary directory; the server's
/// tests use it too.
pub(crate) struct Fixture {
    pub(crate) broker: Arc<Broker>,
    kubex: Arc<FakeKubex>,
    store: Arc<MemoryStore>,
    events: Arc<Recorder>,
    pub(crate) profile: Profile,
    _state: tempfile::TempDir,
}

pub(crate) fn fixture(delay: Duration) -> Fixture {
    let url = crate::config::base_url("https://acme.example.com").expect("url");
    let profile = Profile::new("p".into(), url, "u".into(), None);
    let store = Arc::new(MemoryStore::default());
    store.set(&profile.account(), &SecretString::from("pw")).expect("set");
    let kubex = Arc::new(FakeKubex { calls: AtomicU32::new(0), answer: Mutex::new(Ok(())), delay });
    let events = Arc::new(Recorder::default());
    let state = tempfile::tempdir().expect("state dir");
    let holds = Holds::in_dir(state.path().join("state"));
    let broker = Broker::new(store.clone(), kubex.clone(), events.clone(), holds, Duration::from_secs(10), now);
    Fixture { broker, kubex, store, events, profile, _state: state }
}

impl Fixture {
    pub(crate) fn calls(&self) -> u32 {
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
        let e = f.get().await.expect_err("403");
        assert_eq!(e.code(), 5, "{e}");
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
    assert_eq!(f.broker.reject(&f.profile.account(), "other"), Rejection::NotCurrent);
    assert_eq!(f.broker.reject(&f.profile.account(), &first), Rejection::Dropped);
    let second = f.get().await.expect("token").jwt().to_owned();
    assert_ne!(first, second);
    assert!(f.broker.forget(&f.profile.account(), None));
    assert_eq!(f.broker.status().len(), 0);
}

//! Token slots, one per profile's account and password source: the cache, one mint at a time for
//! all who wait, the background refresh, and applying the policy (`policy`) to each outcome,
//! together with the holds other processes left in the holds file. Only this file waits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::guarded::{self, Budget, Guarded};
use super::minter::Minter;
use super::notify::{Event, Notifier};
use super::policy::{self, Decision, Hold, Want};
use crate::config::{Profile, SlotKey};
use crate::error::{Error, Exit};
use crate::holds::{Holds, Purpose};
use crate::protocol::{ProfileStatus, Rejection};
use crate::store::Passwords;
use crate::sync::Locked as _;
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
    /// Why the last mint failed, if it did.
    last_error: Option<Error>,
}

#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    /// Held by the one mint in flight; everybody else waits for its outcome.
    mint_lock: tokio::sync::Mutex<()>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.locked()
    }
}

/// The token slots, by [`Profile::slot`]: one per account (user at instance) and password source,
/// so two profiles of one account never share a password, a hold or a token.
pub struct Broker {
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    /// When a token of each account was last dropped because a consumer said the API refused it.
    rejected: Mutex<HashMap<String, crate::token::Stamp>>,
    uses: std::sync::atomic::AtomicU64,
    passwords: Arc<dyn Passwords>,
    minter: Arc<dyn Minter>,
    notifier: Arc<dyn Notifier>,
    holds: Holds,
    /// `KUBEX_CRED_TIMEOUT`: what a mint's budget is made of (`guarded::Budget`).
    timeout: Duration,
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
        timeout: Duration,
        clock: fn() -> Moment,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            slots: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
            uses: std::sync::atomic::AtomicU64::new(0),
            passwords,
            minter,
            notifier,
            holds,
            timeout,
            clock,
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<SlotKey, Arc<Slot>>> {
        self.slots.locked()
    }

    fn slot(&self, profile: &Profile) -> Arc<Slot> {
        let used = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = profile.slot();
        let mut slots = self.slots();
        if !slots.contains_key(&key) && slots.len() >= MAX_SLOTS {
            evict_one(&mut slots);
        }
        let slot = slots.entry(key).or_insert_with(|| {
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
                    last_error: None,
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

    /// The holds file it checks before every mint (`status` shows it for profiles without a slot).
    pub fn holds(&self) -> &Holds {
        &self.holds
    }

    /// How many slots and HTTP clients it keeps (`status`).
    pub fn sizes(&self) -> (usize, usize) {
        (self.slots().len(), self.minter.clients())
    }

    /// A token for the profile valid for at least `min_ttl`, minting once for all who wait.
    pub async fn get(self: &Arc<Self>, profile: &Profile, min_ttl: Duration) -> Result<Token, Error> {
        self.get_as(profile, Want::AtLeast(min_ttl)).await
    }

    /// A token for the profile that meets `want`, minting once for all who wait.
    pub async fn get_as(self: &Arc<Self>, profile: &Profile, want: Want) -> Result<Token, Error> {
        let slot = self.slot(profile);
        if let Some(answer) = self.without_minting(&slot, want) {
            return answer;
        }
        // The wait and the mint run in a task of their own: a caller that goes away (its client
        // left) does not cancel the mint that others wait for.
        let (broker, profile) = (self.clone(), profile.clone());
        tokio::spawn(async move { broker.wait_or_mint(&slot, &profile, want).await })
            .await
            .map_err(|e| Error::unexpected(format!("the mint task failed: {e}")))?
    }

    async fn wait_or_mint(self: &Arc<Self>, slot: &Arc<Slot>, profile: &Profile, want: Want) -> Result<Token, Error> {
        let _minting = slot.mint_lock.lock().await;
        if let Some(answer) = self.without_minting(slot, want) {
            return answer;
        }
        if let Want::AtLeast(min_ttl) = want
            && let Some(error) = policy::unmeetable(min_ttl, self.lifetime(slot, min_ttl).await, &profile.url)
        {
            return Err(error);
        }
        let token = self.mint_once(slot).await?;
        let left = token.remaining((self.clock)());
        if left < want.of(&token) {
            return Err(policy::min_ttl_error(want.of(&token), &profile.url, left));
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
    fn without_minting(self: &Arc<Self>, slot: &Arc<Slot>, want: Want) -> Option<Result<Token, Error>> {
        let decision = {
            let mut s = slot.state();
            let decision = policy::decide(s.token.as_ref(), &s.hold, s.refreshing, (self.clock)(), want);
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

    /// One mint attempt; its failure stays on the slot for `status` (the holds set by Kubex's
    /// answers say more, but a password source or state directory that failed is shown too).
    async fn mint_once(&self, slot: &Slot) -> Result<Token, Error> {
        let minted = self.mint_attempt(slot).await;
        slot.state().last_error = minted.as_ref().err().cloned();
        minted
    }

    /// One Authorize call, unless the password read is one Kubex rejected or the account must
    /// wait, here or (the holds file, read again under the account's lock) in any other process.
    /// Reading the password, waiting for the lock and the call share one budget.
    async fn mint_attempt(&self, slot: &Slot) -> Result<Token, Error> {
        let budget = Budget::from(std::time::Instant::now(), self.timeout);
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
        let wall = (self.clock)().wall;
        let guarded =
            guarded::mint(&*self.minter, &self.holds, &profile, &password, Purpose::Get, wall, budget).await?;
        let result = match guarded {
            Guarded::Answer(result) => result,
            Guarded::Barred(barred) => {
                let (hold, error) = policy::from_file(barred, print, (self.clock)().at);
                tracing::info!(profile = %profile.name, "not sent: {error}");
                slot.state().hold = hold;
                return Err(error);
            }
        };
        let now = (self.clock)();
        let (outcome, event) = {
            let mut s = slot.state();
            match result {
                Ok(token) => {
                    s.token = Some(token.clone());
                    s.hold = Hold::None;
                    s.failures = 0;
                    s.mints += 1;
                    s.lifetime = Some(token.lifetime());
                    (Ok(token), None)
                }
                Err(e) => {
                    let error = Error::from(e.clone());
                    tracing::info!(profile = %profile.name, code = error.code(), "mint failed: {error}");
                    let after = policy::after_failure(&s.hold, s.failures, &e, print, now.at, fastrand::f64());
                    // The first answer says when Kubex is asked again, as every later one does.
                    let error = match &after.hold {
                        Hold::Until { until, .. } if error.kind() != Exit::RateLimited => {
                            error.retry_in(until.saturating_sub(now.at))
                        }
                        _ => error,
                    };
                    s.hold = after.hold;
                    s.failures = after.failures;
                    (Err(error), after.event)
                }
            }
        };
        if let Some(kind) = event {
            self.notifier.notify(Event::new(kind, &profile));
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

    /// A consumer said the API refused this token of the account (git's `erase`, `reject`): it is
    /// dropped if it is still current, unless a token of the account was dropped so less than a
    /// cooldown ago (`policy::reject_cooldown`). Never mints: the next `get` does.
    pub fn reject(&self, account: &str, jwt: &str) -> Rejection {
        let now = (self.clock)().at;
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        let Some(slot) = slots.into_iter().find(|slot| {
            let s = slot.state();
            s.profile.account() == account && s.token.as_ref().is_some_and(|t| t.jwt() == jwt)
        }) else {
            return Rejection::NotCurrent;
        };
        let mut s = slot.state();
        let cooldown = policy::reject_cooldown(s.lifetime);
        let mut rejected = self.rejected.locked();
        if let Some(last) = rejected.get(account)
            && now.saturating_sub(*last) < cooldown
        {
            let retry_in_s = cooldown.saturating_sub(now.saturating_sub(*last)).as_secs().max(1);
            return Rejection::TooSoon { retry_in_s };
        }
        rejected.retain(|_, last| now.saturating_sub(*last) < policy::REJECT_COOLDOWN);
        rejected.insert(account.to_owned(), now);
        s.token = None;
        Rejection::Dropped
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
                    last_error: last_error.or_else(|| s.last_error.as_ref().map(ToString::to_string)),
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
fn evict_one(slots: &mut HashMap<SlotKey, Arc<Slot>>) {
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
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::unexpected(format!("a blocking task failed: {e}")))?
}

#[cfg(test)]
pub(crate) mod tests;

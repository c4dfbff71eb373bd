//! The holds file on its own: what each outcome files, what each hold refuses, and every state of
//! the directory or the file that must fail closed.
use super::*;

fn holds() -> (tempfile::TempDir, Holds) {
    let dir = tempfile::tempdir().expect("tempdir");
    let holds = Holds::in_dir(dir.path().join("state"));
    (dir, holds)
}

fn pw(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn rejected() -> Barred {
    Barred::Rejected(Error::new(Exit::Rejected, "Kubex rejected the password"))
}

/// `begin` as a `get` from `source`: `Ok(attempt)` to send, `Err(held)` when held back.
fn begin(
    h: &Holds,
    account: &str,
    source: &str,
    password: &str,
    now: SystemTime,
) -> std::result::Result<Attempt, Barred> {
    match h.begin(account, source, &pw(password), Purpose::Get, now, soon()).expect("the file is usable") {
        Begun::Go(attempt) => Ok(attempt),
        Begun::Barred(held) => Err(held),
    }
}

/// Sends `password` once and files `outcome`.
fn send(h: &Holds, account: &str, source: &str, password: &str, outcome: &Outcome) {
    let attempt = begin(h, account, source, password, SystemTime::now()).expect("not held");
    attempt.finish(outcome, SystemTime::now()).expect("filed");
}

fn is_rejected(h: &Holds, account: &str, password: &str) -> bool {
    match begin(h, account, "keychain", password, SystemTime::now()) {
        Ok(attempt) => {
            attempt.finish(&Outcome::NotSent, SystemTime::now()).expect("filed");
            false
        }
        Err(Barred::Rejected(_)) => true,
        Err(other) => panic!("held otherwise: {other:?}"),
    }
}

#[test]
fn a_rejected_password_is_held_per_account_and_fingerprint() {
    let (_dir, h) = holds();
    let five = Duration::from_secs(300);
    assert!(!is_rejected(&h, "u@a", "wrong"));
    send(&h, "u@a", "keychain", "wrong", &Outcome::Answered(Some(rejected())));
    assert!(is_rejected(&h, "u@a", "wrong"));
    assert!(!is_rejected(&h, "u@a", "right"), "another password is sent");
    assert!(!is_rejected(&h, "u@b", "wrong"), "another account is not held");
    // Another source's success does not clear this source's rejection.
    send(&h, "u@a", "file:/pw", "good", &Outcome::Minted(five));
    assert!(is_rejected(&h, "u@a", "wrong"));
    // This source's success does, and so does a login that proves the password.
    send(&h, "u@a", "file:/pw", "old", &Outcome::Answered(Some(rejected())));
    send(&h, "u@a", "keychain", "new", &Outcome::Minted(five));
    assert!(!is_rejected(&h, "u@a", "wrong"));
    assert!(is_rejected(&h, "u@a", "old"), "the file's rejection stays");
    let login = h.begin("u@a", "keychain", &pw("old"), Purpose::Login, SystemTime::now(), soon()).expect("usable");
    let Begun::Go(login) = login else { panic!("login may send a rejected password") };
    login.finish(&Outcome::Minted(five), SystemTime::now()).expect("filed");
    assert!(!is_rejected(&h, "u@a", "old"));
    assert_eq!(h.lifetime("u@a").expect("read"), Some(five));
}

#[test]
fn every_refused_password_of_a_source_is_remembered_up_to_sixteen() {
    let (_dir, h) = holds();
    for (i, password) in ["A", "B"].iter().enumerate() {
        send(&h, "u@a", "keychain", password, &Outcome::Answered(Some(rejected())));
        assert!(is_rejected(&h, "u@a", "A"), "after {i}");
    }
    assert!(is_rejected(&h, "u@a", "B"));
    for i in 0..MAX_REJECTED {
        send(&h, "u@a", "keychain", &format!("p{i}"), &Outcome::Answered(Some(rejected())));
    }
    assert!(!is_rejected(&h, "u@a", "A"), "the oldest went");
    assert!(is_rejected(&h, "u@a", "p0") && is_rejected(&h, "u@a", &format!("p{}", MAX_REJECTED - 1)));
}

#[test]
fn an_attempt_that_never_got_its_answer_is_tried_once_more_then_held() {
    let (_dir, h) = holds();
    let now = SystemTime::now();
    // The sender vanished: its attempt stays on file.
    drop(begin(&h, "u@a", "keychain", "pw", now).expect("sent"));
    // The next one may try once more; its outcome is lost too.
    begin(&h, "u@a", "keychain", "pw", now).expect("one more try").finish(&Outcome::NoAnswer, now).expect("filed");
    let Err(Barred::Rejected(e)) = begin(&h, "u@a", "keychain", "pw", now) else { panic!("held after two") };
    assert!(e.message().contains("got no answer"), "{e}");
    let filed = h.filed_all(&[("u@a".to_owned(), "keychain".to_owned())], now).expect("read");
    assert!(matches!(filed.as_slice(), [Some(Barred::Rejected(_))]), "{filed:?}");
    // Another password is sent; login sends this one again, and its answer clears it.
    begin(&h, "u@a", "keychain", "other", now).expect("another").finish(&Outcome::NotSent, now).expect("filed");
    let Begun::Go(login) = h.begin("u@a", "keychain", &pw("pw"), Purpose::Login, now, soon()).expect("usable") else {
        panic!("login sends")
    };
    login.finish(&Outcome::Answered(None), now).expect("filed");
    begin(&h, "u@a", "keychain", "pw", now).expect("an answer came").finish(&Outcome::NotSent, now).expect("filed");
}

#[test]
fn attempts_in_flight_are_bounded_per_account() {
    let (_dir, h) = holds();
    let now = SystemTime::now();
    for i in 0..MAX_REJECTED + 4 {
        drop(begin(&h, "u@a", "command:rotating", &format!("p{i}"), now).expect("sent"));
    }
    assert_eq!(h.read(soon()).expect("read").in_flight.len(), MAX_REJECTED);
}

/// `login` may set a damaged file aside while another process's attempt is in flight: what that
/// attempt files afterwards must still recognise its password under the new file's salt.
#[test]
fn an_outcome_filed_after_the_file_was_replaced_still_holds() {
    let (_dir, h) = holds();
    send(&h, "u@a", "keychain", "seed", &Outcome::NotSent);
    let rejected_later = begin(&h, "u@a", "keychain", "wrong", SystemTime::now()).expect("sent");
    let lost_later = begin(&h, "v@a", "keychain", "lost", SystemTime::now()).expect("sent");
    std::fs::write(h.path(), b"{damaged").expect("damage");
    h.set_aside_damaged().expect("set aside").expect("moved");
    rejected_later.finish(&Outcome::Answered(Some(rejected())), SystemTime::now()).expect("filed");
    lost_later.finish(&Outcome::NoAnswer, SystemTime::now()).expect("filed");
    assert!(is_rejected(&h, "u@a", "wrong"), "the rejection is filed under the new salt");
    // The unanswered attempt came back too: one more try, then held.
    let now = SystemTime::now();
    begin(&h, "v@a", "keychain", "lost", now).expect("one more").finish(&Outcome::NoAnswer, now).expect("filed");
    assert!(matches!(begin(&h, "v@a", "keychain", "lost", now), Err(Barred::Rejected(_))));
}

#[test]
fn a_call_that_never_left_does_not_count() {
    let (_dir, h) = holds();
    let now = SystemTime::now();
    drop(begin(&h, "u@a", "keychain", "pw", now).expect("sent"));
    for _ in 0..3 {
        // Unreachable each time: the one unanswered attempt stays the only one.
        begin(&h, "u@a", "keychain", "pw", now).expect("retried").finish(&Outcome::NotSent, now).expect("filed");
    }
}

#[test]
fn the_account_lock_is_held_until_the_outcome_is_filed() {
    let (_dir, h) = holds();
    let attempt = begin(&h, "u@a", "keychain", "pw", SystemTime::now()).expect("sent");
    let started = Instant::now();
    let late = Instant::now() + Duration::from_millis(300);
    let err = h.begin("u@a", "keychain", &pw("pw"), Purpose::Get, SystemTime::now(), late).expect_err("queued");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(err.code(), 7);
    assert!(err.message().contains("another kubex-cred process is signing in to Kubex as u@a"), "{err}");
    // Another account is not held up.
    begin(&h, "v@a", "keychain", "pw", SystemTime::now())
        .expect("other account")
        .finish(&Outcome::NotSent, SystemTime::now())
        .expect("filed");
    attempt.finish(&Outcome::Answered(Some(rejected())), SystemTime::now()).expect("filed");
    assert!(is_rejected(&h, "u@a", "pw"), "the one queued next sees the rejection");
}

#[test]
fn the_file_holds_no_password_and_no_fast_hash_and_is_private() {
    let (_dir, h) = holds();
    send(&h, "u@a", "keychain", "canary-password", &Outcome::Answered(Some(rejected())));
    let text = std::fs::read_to_string(h.path()).expect("written");
    assert!(!text.contains("canary-password"), "{text}");
    let sha = {
        use sha2::Digest;
        B64.encode(sha2::Sha256::digest(b"canary-password"))
    };
    assert!(!text.contains(&sha), "{text}");
    let other = holds().1;
    send(&other, "u@a", "keychain", "canary-password", &Outcome::Answered(Some(rejected())));
    let prints = |h: &Holds| h.read(soon()).expect("read").rejected[0].fingerprint.clone();
    assert_ne!(prints(&h), prints(&other), "a random salt per file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(h.path()).expect("stat").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(h.dir()).expect("stat").permissions().mode() & 0o777, 0o700);
    }
}

#[test]
fn waits_run_out_and_a_clock_set_back_cannot_stretch_them() {
    let (_dir, h) = holds();
    let now = SystemTime::now();
    let limited = Error::new(Exit::RateLimited, "Kubex is rate limiting logins (429)");
    let wait = Barred::Wait(limited.clone(), Duration::from_secs(40));
    begin(&h, "u@a", "keychain", "x", now).expect("sent").finish(&Outcome::Answered(Some(wait)), now).expect("filed");
    let Err(Barred::Wait(e, left)) = begin(&h, "u@a", "keychain", "x", now) else { panic!("held") };
    assert_eq!((e, left), (limited, Duration::from_secs(40)), "the wait is counted again, not kept in the text");
    let Begun::Barred(Barred::Wait(..)) = h.begin("u@a", "k", &pw("x"), Purpose::Login, now, soon()).expect("usable")
    else {
        panic!("login waits too")
    };
    let later = now + Duration::from_secs(41);
    begin(&h, "u@a", "keychain", "x", later).expect("over").finish(&Outcome::NotSent, later).expect("filed");
    let expired = Barred::Wait(Error::new(Exit::Expired, "expired"), Duration::from_secs(600));
    begin(&h, "v@a", "keychain", "x", now)
        .expect("sent")
        .finish(&Outcome::Answered(Some(expired)), now)
        .expect("filed");
    let set_back = now - Duration::from_secs(86_400);
    let Err(Barred::Wait(_, left)) = begin(&h, "v@a", "keychain", "x", set_back) else { panic!("held") };
    assert_eq!(left, Duration::from_secs(600));
}

#[test]
fn remove_forgets_one_source_only() {
    let (_dir, h) = holds();
    send(&h, "u@a", "keychain", "k", &Outcome::Answered(Some(rejected())));
    send(&h, "u@a", "file:/pw", "f", &Outcome::Answered(Some(rejected())));
    h.remove("u@a", "file:/pw").expect("removed");
    assert!(is_rejected(&h, "u@a", "k"));
    assert!(!is_rejected(&h, "u@a", "f"));
}

/// Each way the state can be unusable: an error naming the path (exit 2), and nothing to send.
#[cfg(unix)]
#[test]
fn a_damaged_or_unusable_state_fails_closed_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let refused = |h: &Holds, needle: &str| {
        let err = h.begin("u@a", "keychain", &pw("x"), Purpose::Get, SystemTime::now(), soon()).expect_err("closed");
        assert_eq!(err.code(), 2, "{err}");
        assert!(err.message().contains(needle), "{needle:?} not in: {err}");
    };
    let damaged = |content: &[u8]| {
        let (dir, h) = holds();
        send(&h, "u@a", "keychain", "x", &Outcome::Answered(Some(rejected())));
        std::fs::write(h.path(), content).expect("damage");
        refused(&h, "is damaged");
        refused(&h, "kubex-cred login");
        (dir, h)
    };
    for content in [&b"{not json"[..], b"", b"{\"rejected\": [", b"[]"] {
        damaged(content);
    }
    // login sets the damaged file aside and starts afresh.
    let (_dir, h) = damaged(b"{not json");
    let aside = h.set_aside_damaged().expect("set aside").expect("moved");
    assert_eq!(std::fs::read(&aside).expect("kept"), b"{not json");
    assert!(!is_rejected(&h, "u@a", "x"));

    let (_dir, h) = holds();
    crate::fs::create_private_dir(&h.path()).expect("a directory in its place");
    refused(&h, "not a regular file");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(h.dir()).expect("dir");
    rustix::fs::mknodat(rustix::fs::CWD, h.path(), rustix::fs::FileType::Fifo, 0o600.into(), 0).expect("fifo");
    refused(&h, "not a regular file");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(h.dir()).expect("dir");
    std::os::unix::fs::symlink("/dev/zero", h.path()).expect("link");
    refused(&h, "not a regular file");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(h.dir()).expect("dir");
    std::fs::write(h.path(), vec![b' '; MAX_FILE as usize + 1]).expect("big");
    refused(&h, "larger than");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(&h.dir().join("holds.lock")).expect("lock as a directory");
    refused(&h, "holds.lock");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(h.dir().parent().expect("parent")).expect("parent");
    std::fs::write(h.dir(), b"a file").expect("state dir as a file");
    refused(&h, "not a directory");
    let (_dir, h) = holds();
    crate::fs::create_private_dir(h.dir()).expect("dir");
    std::fs::set_permissions(h.dir(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refused(&h, "chmod 700");
}

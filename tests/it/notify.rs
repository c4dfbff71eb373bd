//! Desktop notifications over the sandbox's real D-Bus session: one per event, none when no
//! notification server is there. The server is a recorder that owns the freedesktop name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Emulator, Options, Sandbox, wait_until};

type Shown = Arc<Mutex<Vec<(String, String, String)>>>;

struct Recorder(Shown);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.0.lock().expect("lock");
        shown.push((app_name, summary, body));
        shown.len() as u32
    }
}

fn notification_server(sb: &Sandbox) -> (zbus::blocking::Connection, Shown) {
    let shown = Shown::default();
    let connection = zbus::blocking::connection::Builder::address(sb.bus_address.as_str())
        .expect("bus address")
        .name("org.freedesktop.Notifications")
        .expect("name")
        .serve_at("/org/freedesktop/Notifications", Recorder(shown.clone()))
        .expect("serve")
        .build()
        .expect("a notification server on the sandbox bus");
    (connection, shown)
}

/// Makes the daemon ask Kubex again: a fresh daemon has no token.
fn fresh_get(sb: &Sandbox) -> crate::support::Out {
    sb.run(&["stop"], b"").code(0);
    sb.run(&["get"], b"")
}

#[test]
fn a_rejected_password_and_an_expired_subscription_each_notify_once() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw1")]);
    sb.login(&emu, "apiUser", "pw1").code(0);

    // Headless: nobody serves notifications on the bus; the daemon reports the 401 and stays up.
    emu.set_password("apiUser", "pw2");
    fresh_get(&sb).fails(4, "rejected");
    sb.run(&["status"], b"").code(0);

    let (_server, shown) = notification_server(&sb);
    sb.login(&emu, "apiUser", "pw2").code(0);
    emu.set_password("apiUser", "pw3");
    fresh_get(&sb).fails(4, "rejected");
    sb.run(&["get"], b"").fails(4, "rejected");
    sb.run(&["get"], b"").fails(4, "rejected");
    wait_until(Duration::from_secs(10), "the rejection notification", || !shown.lock().expect("lock").is_empty());

    sb.login(&emu, "apiUser", "pw3").code(0);
    emu.expire_subscription("apiUser");
    fresh_get(&sb).fails(5, "");
    sb.run(&["get"], b"").fails(5, "");
    // One thread sends them in order: once the expiry is shown, any repeat of the 401 would be too.
    wait_until(Duration::from_secs(10), "the expiry notification", || shown.lock().expect("lock").len() >= 2);
    let shown = shown.lock().expect("lock").clone();
    assert_eq!(shown.len(), 2, "{shown:#?}");
    assert_eq!(shown[0].0, "kubex-cred");
    assert_eq!(shown[0].1, "Kubex rejected the stored password");
    assert_eq!(shown[1].1, "Kubex subscription expired");
    for (_, _, body) in &shown {
        assert!(body.contains("kubex-cred login --profile default"), "{body}");
        assert!(!body.contains("pw"), "no password in a notification: {body}");
    }
}

#[test]
fn kubex_cred_notify_0_turns_notifications_off() {
    let sb = Sandbox::new();
    let emu = Emulator::start(Options::default(), &[("apiUser", "pw1"), ("second", "right")]);
    sb.login(&emu, "apiUser", "pw1").code(0);
    let login_second = ["login", "--profile", "second", "--url", &emu.origin(), "--user", "second", "--password-stdin"];
    sb.run(&login_second, b"right\n").code(0);
    let (_server, shown) = notification_server(&sb);

    // A daemon started with KUBEX_CRED_NOTIFY=0 shows nothing for a rejection...
    emu.set_password("apiUser", "pw2");
    sb.run(&["stop"], b"").code(0);
    sb.run_env(&["get"], b"", &[("KUBEX_CRED_NOTIFY", "0")]).fails(4, "rejected");
    sb.run(&["stop"], b"").code(0);
    // ...while the next one, without it, shows its own: only that one arrives.
    emu.set_password("second", "changed");
    sb.run(&["get", "--profile", "second"], b"").fails(4, "rejected");
    wait_until(Duration::from_secs(10), "the notification of the second daemon", || {
        !shown.lock().expect("lock").is_empty()
    });
    let shown = shown.lock().expect("lock").clone();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(shown[0].2.contains("profile second"), "{shown:#?}");
}

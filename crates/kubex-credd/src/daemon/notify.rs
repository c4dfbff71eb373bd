//! Tells the desktop user when only they can fix something: Kubex rejected the stored password
//! (401) or the subscription expired (403). One notification per event; the broker decides what an
//! event is. Linux: freedesktop notifications over the session D-Bus; macOS: Notification Center
//! through `osascript`; Windows: a toast through PowerShell. Headless sessions (no session bus, or
//! no notification server on it) skip it quietly. `KUBEX_CRED_NOTIFY=0` turns it off.
//!
//! Notifications go out one at a time from one thread, in the order of the events, so a slow
//! notification server never holds up a token.

use std::sync::mpsc;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 401: the stored password was refused.
    Rejected,
    /// 403: the trial or subscription has ended.
    Expired,
}

/// Something the user must act on, for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub profile: String,
    pub url: String,
    pub user: String,
}

impl Event {
    pub fn new(kind: Kind, profile: &crate::config::Profile) -> Event {
        Event { kind, profile: profile.name.clone(), url: profile.url.to_string(), user: profile.user.clone() }
    }

    pub fn summary(&self) -> &'static str {
        match self.kind {
            Kind::Rejected => "Kubex rejected the stored password",
            Kind::Expired => "Kubex subscription expired",
        }
    }

    pub fn body(&self) -> String {
        let Event { profile, url, user, .. } = self;
        match self.kind {
            Kind::Rejected => format!(
                "{url} refused the password of {user} (profile {profile}); kubex-cred will not send it again. \
                 Run `kubex-cred login --profile {profile}` with the current password."
            ),
            Kind::Expired => format!(
                "The trial or subscription of {user} at {url} (profile {profile}) has expired. Renew it, then run \
                 `kubex-cred login --profile {profile}`."
            ),
        }
    }
}

/// Where events go: the desktop in the daemon, a recorder in unit tests.
pub trait Notifier: Send + Sync {
    fn notify(&self, event: Event);
}

/// Drops every event (`get --no-daemon`, `KUBEX_CRED_NOTIFY=0`).
#[derive(Debug)]
pub struct Silent;

impl Notifier for Silent {
    fn notify(&self, _: Event) {}
}

/// The desktop's notifications, sent from a thread of their own.
#[derive(Debug)]
pub struct Desktop {
    queue: mpsc::Sender<Event>,
}

impl Desktop {
    /// The notifier for this session, or [`Silent`] when `KUBEX_CRED_NOTIFY` is `0`/`off`/`false`.
    pub fn start() -> std::sync::Arc<dyn Notifier> {
        let off = std::env::var("KUBEX_CRED_NOTIFY").is_ok_and(|v| matches!(v.as_str(), "0" | "off" | "false" | "no"));
        if off {
            return std::sync::Arc::new(Silent);
        }
        let (tx, rx) = mpsc::channel::<Event>();
        let spawned = std::thread::Builder::new().name("notify".into()).spawn(move || {
            for event in rx {
                match platform::show(&event) {
                    Ok(true) => tracing::info!("desktop notified: {}", event.summary()),
                    Ok(false) => tracing::debug!("no notification service in this session; not shown"),
                    Err(e) => tracing::debug!("cannot show a desktop notification: {e}"),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("no desktop notifications: cannot start their thread: {e}");
            return std::sync::Arc::new(Silent);
        }
        std::sync::Arc::new(Desktop { queue: tx })
    }
}

impl Notifier for Desktop {
    fn notify(&self, event: Event) {
        let _ = self.queue.send(event);
    }
}

#[cfg(target_os = "linux")]
mod platform {
    use std::collections::HashMap;

    use super::Event;

    const NAME: &str = "org.freedesktop.Notifications";

    /// Notify (org.freedesktop.Notifications, Desktop Notifications Specification 1.2); `Ok(false)`
    /// when the session has no bus or nobody serves or can be started to serve notifications.
    pub fn show(event: &Event) -> Result<bool, zbus::Error> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
            return Ok(false);
        }
        let connection = zbus::blocking::Connection::session()?;
        let bus = zbus::blocking::fdo::DBusProxy::new(&connection)?;
        let name = zbus::names::BusName::try_from(NAME)?;
        let served =
            bus.name_has_owner(name.clone())? || bus.list_activatable_names()?.iter().any(|n| n.as_str() == NAME);
        if !served {
            return Ok(false);
        }
        let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::from([("urgency", 2u8.into())]);
        connection.call_method(
            Some(NAME),
            "/org/freedesktop/Notifications",
            Some(NAME),
            "Notify",
            &("kubex-cred", 0u32, "dialog-password", event.summary(), event.body(), Vec::<&str>::new(), hints, -1i32),
        )?;
        Ok(true)
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::Event;

    fn applescript_string(text: &str) -> String {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }

    /// Notification Center through osascript (no secret is in the text, so argv is fine).
    pub fn show(event: &Event) -> std::io::Result<bool> {
        let script = format!(
            "display notification {} with title {}",
            applescript_string(&event.body()),
            applescript_string(event.summary())
        );
        let status = std::process::Command::new("osascript").arg("-e").arg(script).status()?;
        Ok(status.success())
    }
}

#[cfg(windows)]
mod platform {
    use super::Event;

    /// A toast through PowerShell's WinRT bridge, under PowerShell's own registered AppUserModelID
    /// (an unregistered one shows nothing on Windows 10+). The text travels in environment
    /// variables of that child, never in a script: it holds no secret, and no quoting can break.
    const SCRIPT: &str = "$ErrorActionPreference='Stop';\
        [void][Windows.UI.Notifications.ToastNotificationManager,Windows.UI.Notifications,ContentType=WindowsRuntime];\
        [void][Windows.Data.Xml.Dom.XmlDocument,Windows.Data.Xml.Dom.XmlDocument,ContentType=WindowsRuntime];\
        $x=[Windows.UI.Notifications.ToastNotificationManager]::GetTemplateContent([Windows.UI.Notifications.ToastTemplateType]::ToastText02);\
        $t=$x.GetElementsByTagName('text');\
        [void]$t.Item(0).AppendChild($x.CreateTextNode($env:KUBEX_CRED_TITLE));\
        [void]$t.Item(1).AppendChild($x.CreateTextNode($env:KUBEX_CRED_BODY));\
        $id='{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe';\
        [Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier($id).Show(\
        [Windows.UI.Notifications.ToastNotification]::new($x))";

    pub fn show(event: &Event) -> std::io::Result<bool> {
        let status = std::process::Command::new("powershell.exe")
            .args(["-NoProfile", "-NonInteractive", "-WindowStyle", "Hidden", "-Command", SCRIPT])
            .env("KUBEX_CRED_TITLE", event.summary())
            .env("KUBEX_CRED_BODY", event.body())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        Ok(status.success())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use super::Event;

    pub fn show(_: &Event) -> std::io::Result<bool> {
        Ok(false)
    }
}

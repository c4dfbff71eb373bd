//! Diagnostics on stderr, switched on by `KUBEX_CRED_LOG` (or `RUST_LOG`); off by default.
//!
//! The value is a list of `[target=]level` directives, e.g. `debug` or `kubex_cred=trace,hyper=info`.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the stderr subscriber when logging was asked for.
pub fn init() {
    let Some(directives) = ["KUBEX_CRED_LOG", "RUST_LOG"].iter().find_map(|name| std::env::var(name).ok()) else {
        return;
    };
    // D-Bus traffic carries the (session-encrypted) keychain secret: keep zbus quiet unless named.
    let directives = if directives.contains("zbus") { directives } else { format!("{directives},zbus=warn") };
    let filter: Targets = directives.parse().unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
}

//! Diagnostics on stderr, switched on by `KUBEX_CRED_LOG` (or `RUST_LOG`); off by default.

/// Installs the stderr subscriber when logging was asked for.
pub fn init() {
    let Some(filter) = ["KUBEX_CRED_LOG", "RUST_LOG"].iter().find_map(|name| std::env::var(name).ok()) else {
        return;
    };
    // D-Bus traffic carries the (session-encrypted) keychain secret: keep zbus quiet unless named.
    let filter = if filter.contains("zbus") { filter } else { format!("{filter},zbus=warn") };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,zbus=warn"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
}

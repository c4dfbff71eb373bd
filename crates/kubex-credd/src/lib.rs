//! kubex-credd: the daemon, and every command that needs the network, TLS, the keychain, D-Bus or
//! an async runtime. The fronts' package (`kubex-cred`, the workspace root) provides the modules
//! both sides share, re-exported here so that `crate::config` means the same on either side.
//! ARCHITECTURE.md is the map.

pub use kubex_cred::{client, config, error, fs, git, protocol, secret};

pub mod cli;
pub mod daemon;
pub mod holds;
pub mod kubex;
pub mod logging;
pub mod proxy;
pub mod runtime;
pub mod store;
pub mod sync;
pub mod token;

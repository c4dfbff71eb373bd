//! kubex-cred: Kubex API tokens from a password kept in the OS keychain. This package is what the
//! fronts (`kubex-cred`, `git-credential-kubex`) are built from, and what they share with the
//! daemon's package (`crates/kubex-credd`): errors, the wire protocol, the config, the client side
//! of the socket, git's format and the command tree. It depends on no HTTP, TLS, async, D-Bus or
//! keychain crate. ARCHITECTURE.md is the map.

pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod fs;
pub mod git;
pub mod protocol;
pub mod secret;

//! kubex-cred: Kubex API tokens from a password kept in the OS keychain. ARCHITECTURE.md is the map:
//! which module owns what, and which may import which (tests/architecture.rs holds it to that).

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod git;
pub mod holds;
pub mod kubex;
pub mod logging;
pub mod protocol;
pub mod proxy;
pub mod store;
pub mod token;

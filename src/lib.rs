//! kubex-cred: Kubex API tokens from a password kept in the OS keychain.

pub mod cli;
pub mod config;
pub mod error;
pub mod keychain;
pub mod kubex;
pub mod logging;
pub mod token;

pub use error::{Error, Result};

//! kubex-cred: Kubex API tokens from a password kept in the OS keychain.

pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod git;
pub mod ipc;
pub mod keychain;
pub mod kubex;
pub mod logging;
pub mod notify;
pub mod service;
pub mod sink;
pub mod source;
pub mod token;

pub use error::{Error, Result};

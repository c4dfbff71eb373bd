//! Integration tests: the real binaries, a real Secret Service, the Kubex emulator over real HTTP.
//! Modules mirror `src/`. Linux only: they drive the Secret Service, systemd and Unix sockets.
#![cfg(target_os = "linux")]

#[path = "../support/mod.rs"]
mod support;

mod api;
mod at_most_once;
mod cli;
mod completion;
mod config;
mod daemon;
mod docs;
mod doctor;
mod first_run;
mod git;
mod holds;
mod keychain;
mod kubex;
mod notify;
mod protocol;
mod proxy;
mod service;
mod sink;
mod source;
mod token;
mod verbs;

//! `kubex-credd`'s command line: the command tree, stdout and the fronts' commands come from the
//! fronts' package; `credd` runs the commands that need the network, the keychain or the daemon.

pub use kubex_cred::cli::{args, front, output};

pub mod credd;

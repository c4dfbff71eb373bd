//! The command line: one command tree (`args`) and two dispatchers. `front` is what `kubex-cred`
//! and `git-credential-kubex` run (the socket only); `credd` is `kubex-credd`, which also runs the
//! commands that need the network, the keychain or the daemon itself.

pub mod args;
pub mod credd;
pub mod front;
pub mod output;

//! The command line: one command tree (`args`), stdout (`output`), and what `kubex-cred` and
//! `git-credential-kubex` run (`front`: the socket only). `kubex-credd` (its own package) runs the
//! same tree with the commands that need the network, the keychain or the daemon itself.

pub mod args;
pub mod front;
pub mod output;

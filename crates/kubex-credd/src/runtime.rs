//! The one async runtime kubex-credd builds, for the daemon and for each command that needs one
//! (`login`'s proof, `get --no-daemon`, `doctor`'s ping, `api`, the proxy): one thread, timers and
//! I/O. A daemon answering one user's clients needs no more, and it keeps the process small.

use crate::error::{Error, Result};

pub fn current_thread() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::unexpected(format!("cannot start the async runtime: {e}")))
}

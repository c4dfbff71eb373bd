//! Where the daemon's socket and lock files live: a per-user directory that must be private.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the daemon's files live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The per-user directory, mode 0700.
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Held (flock) by the running daemon for its whole life.
    pub daemon_lock: PathBuf,
    /// Held by the one client that starts a daemon.
    pub start_lock: PathBuf,
}

impl Paths {
    /// `$XDG_RUNTIME_DIR/kubex-cred/`, else the user's cache directory.
    pub fn new() -> Result<Paths> {
        let dirs = directories::ProjectDirs::from("", "", "kubex-cred").ok_or_else(|| {
            Error::daemon("cannot find a runtime directory for the socket: set HOME or XDG_RUNTIME_DIR")
        })?;
        let dir = dirs.runtime_dir().unwrap_or_else(|| dirs.cache_dir()).to_path_buf();
        Ok(Paths::in_dir(dir))
    }

    pub fn in_dir(dir: PathBuf) -> Paths {
        // Windows: a named pipe per user, whose DACL admits only its owner (`daemon::bind` sets it;
        // built and tested by the Windows job of .github/workflows/ci.yml, not on this Linux host).
        #[cfg(windows)]
        let socket = PathBuf::from(format!(
            r"\\.\pipe\kubex-cred-{}",
            std::env::var("USERNAME").unwrap_or_default().replace(['\\', '/'], "_")
        ));
        #[cfg(not(windows))]
        let socket = dir.join("daemon.sock");
        Paths { socket, daemon_lock: dir.join("daemon.lock"), start_lock: dir.join("start.lock"), dir }
    }

    /// Creates the directory 0700 in one step, or checks that an existing one is private and ours.
    pub fn ensure_private_dir(&self) -> Result<()> {
        crate::fs::create_private_dir(&self.dir)
            .map_err(|e| Error::daemon(format!("cannot create the socket directory {}: {e}", self.dir.display())))?;
        check_private(&self.dir)
    }
}

/// Refuses a socket directory that is not a private directory of the user's.
pub fn check_private(dir: &Path) -> Result<()> {
    match crate::fs::private_dir_problem(dir) {
        Some(why) => Err(Error::daemon(format!("refusing the socket directory {}: {why}", dir.display()))),
        None => Ok(()),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_loose_socket_directory_is_refused_with_the_chmod_hint() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let paths = Paths::in_dir(tmp.path().join("kubex-cred"));
        paths.ensure_private_dir().expect("created private");
        let mode = std::fs::metadata(&paths.dir).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = paths.ensure_private_dir().expect_err("loose");
        assert!(err.to_string().contains(&format!("chmod 700 {}", paths.dir.display())), "{err}");
        assert_eq!(err.code(), 9);
    }
}

//! Files kubex-cred writes: private directories, lock files, and whole-or-nothing replacement.

use std::io::Write;
use std::path::Path;

// The owner-only rule is tested everywhere and used on Windows.
#[cfg_attr(not(windows), allow(dead_code))]
mod owner_acl;

/// The directory a file is written in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Creates a directory (and its parents) readable only by the user, in one step: a mode (or an
/// ACL) set afterwards would leave a moment in which others could enter. On Windows the directory
/// itself gets an owner-only ACL (`owner_acl`); its parents are made as usual.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)
    };
    #[cfg(windows)]
    return {
        std::fs::create_dir_all(dir_of(dir))?;
        owner_acl::create(dir, &owner_acl::user()?)
    };
}

/// Writes a file whole or not at all: a temporary file beside it (mode 0600 from the start, then
/// `mode`), synced, then renamed over `path`. The directory must exist.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".kubex-cred-").tempfile_in(dir_of(path))?;
    tmp.write_all(content)?;
    #[cfg(unix)]
    if mode != 0o600 {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes a file only the user may read (a token file), whole or not at all.
pub fn write_private(path: &Path, content: &[u8]) -> crate::error::Result<()> {
    write_atomic(path, content, 0o600)
        .map_err(|e| crate::error::Error::unexpected(format!("cannot write {}: {e}", path.display())))
}

/// Reads a regular file of at most `limit` bytes. It is opened without blocking and checked on
/// the open descriptor, so a FIFO or a device named in its place fails at once instead of hanging
/// or streaming forever (`InvalidInput`, saying which).
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, rustix::fs::OFlags::NONBLOCK.bits() as i32);
    let file = options.open(path)?;
    let meta = file.metadata()?;
    let refuse = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned());
    if !meta.is_file() {
        return Err(refuse("it is not a regular file"));
    }
    if meta.len() > limit {
        return Err(refuse(&format!("it is larger than {limit} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(refuse(&format!("it is larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// What tells a rewritten file apart (an editor or `login` replaces files by a rename): its
/// modification time, inode and size; `None` when nothing is there.
pub type FileVersion = (std::time::SystemTime, u64, u64);

pub fn file_version(path: &Path) -> Option<FileVersion> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, inode, meta.len()))
}

/// Takes a lock on `file` (exclusive or shared), trying again until `deadline`; `false` when the
/// deadline passed first. Polled rather than blocked on, so that no wait is unbounded: a process
/// stopped while it holds the lock costs the others their deadline, not their life.
pub fn lock_until(file: &std::fs::File, exclusive: bool, deadline: std::time::Instant) -> std::io::Result<bool> {
    let mut pause = std::time::Duration::from_millis(2);
    loop {
        let tried = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match tried {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(std::time::Duration::from_millis(25));
    }
}

/// What makes `dir` unfit to hold private files: not a directory, not the user's, or open to
/// others (its mode and the `chmod` that fixes it). `None`: it is fine.
#[cfg(unix)]
pub fn private_dir_problem(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    };
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        return Some("it is not a directory; remove it or move it away".to_owned());
    }
    if meta.uid() != uid {
        return Some(format!("it is owned by uid {}, not by you (uid {uid}); remove it", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Some(format!("its mode {:o} lets others in; run `chmod 700 {}`", meta.mode() & 0o777, dir.display()));
    }
    None
}

/// Windows: not a directory, not the user's, or an access list that lets others in (and the
/// `icacls` that fixes it); see `owner_acl`.
#[cfg(windows)]
pub fn private_dir_problem(dir: &Path) -> Option<String> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Some("it is not a directory; remove it or move it away".to_owned()),
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    }
    let user = match owner_acl::user() {
        Ok(user) => user,
        Err(e) => return Some(format!("cannot tell which user this process runs as: {e}")),
    };
    match owner_acl::read(dir) {
        Ok((owner, dacl)) => owner_acl::problem(dir, &user, &owner, dacl.as_deref()),
        Err(e) => Some(format!("cannot read its access list: {e}")),
    }
}

/// What `fd` is ready for now, of `wanted` (a hang-up or an error is always reported): a poll
/// that does not wait. The client looks for the daemon's answer with it, the server for a client
/// that left.
#[cfg(unix)]
pub fn ready_now(
    fd: impl std::os::fd::AsFd,
    wanted: rustix::event::PollFlags,
) -> std::io::Result<rustix::event::PollFlags> {
    use rustix::event::{PollFd, Timespec, poll};
    let mut fds = [PollFd::new(&fd, wanted)];
    poll(&mut fds, Some(&Timespec { tv_sec: 0, tv_nsec: 0 }))?;
    Ok(fds[0].revents())
}

/// `EMFILE` or `ENFILE`: the process or the system is out of file descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error().is_some_and(|code| {
        code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error()
    });
    #[cfg(not(unix))]
    return {
        let _ = e;
        false
    };
}

/// Opens a file only the user may read, creating it: a lock file (`append` false) or a log (true).
/// Opened without blocking and checked on the descriptor: a FIFO, a device or a directory in its
/// place fails at once (`InvalidInput`) rather than hanging or being written into.
pub fn open_private(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.truncate(false).write(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is not a regular file"));
    }
    Ok(file)
}

//! Reading a profile's password from its source: the OS keychain (default), the Linux kernel
//! keyring, a file (a Kubernetes secret mount, `$CREDENTIALS_DIRECTORY`), a command's first line of
//! output (a password manager or vault CLI), or an environment variable (only when the profile
//! opts in).
//!
//! There is no fallback from one source to another: a source that cannot answer is an error that
//! names it. Whatever the source, the broker fingerprints the password it read, so a rejected one
//! is not sent again until the source's content changes or `login` runs.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::secret::SecretString;
use zeroize::Zeroizing;

use super::keychain::OsKeychain;
use super::{Keychain, Passwords, SecretStore};
use crate::config::{PasswordSource, Profile};
use crate::error::{Error, Exit, Result};

/// The real sources. The keychain is opened on first use only (and again after it went away), so
/// a profile reading a file never touches D-Bus and a daemon starts while the keychain is away.
#[derive(Debug)]
pub struct Sources {
    /// How long a keychain read may take (`patience`).
    keychain_patience: Duration,
    /// The bound on a `command:` source.
    pub command_timeout: Duration,
}

impl Sources {
    /// The sources of a script or the daemon: `timeout` is `KUBEX_CRED_TIMEOUT`.
    pub fn new(timeout: Duration) -> Sources {
        Sources { keychain_patience: super::patience(timeout, false), command_timeout: timeout }
    }
}

impl Passwords for Sources {
    fn read(&self, profile: &Profile) -> Result<SecretString> {
        match &profile.source {
            PasswordSource::Keychain => Ok(Keychain::shared().get(&profile.account(), self.keychain_patience)?),
            PasswordSource::Keyutils => Ok(OsKeychain::keyutils()?.get(&profile.account())?),
            PasswordSource::File(path) => read_file(path),
            PasswordSource::Command(cmd) => run_command(cmd, self.command_timeout),
            PasswordSource::Env(var) => {
                profile.check_source()?;
                read_env(var)
            }
        }
    }
}

/// The password is the first line: without its line ending, otherwise exact.
fn first_line(bytes: &[u8], what: &dyn Fn() -> String) -> Result<SecretString> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(Error::usage(format!("{} gave an empty password: nothing was sent", what())));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| Error::usage(format!("{} gave a password that is not UTF-8 text: nothing was sent", what())))?;
    Ok(SecretString::from(text.to_owned()))
}

/// `file:PATH`: opened once, without following a symbolic link, and that same open file checked:
/// a regular file owned by the user with no group or other permission bits (Kubernetes:
/// `defaultMode: 0400`, copied out of the secret's symlinked mount). Then read from it.
pub fn read_file(path: &Path) -> Result<SecretString> {
    let what = || format!("password file {}", path.display());
    let refuse = |why: String| Error::usage(format!("refusing {}: {why}", what()));
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
    );
    let mut file = match options.open(path) {
        Ok(file) => file,
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(refuse(
                "it is a symbolic link, which could be pointed elsewhere; name the file itself \
                 (for a Kubernetes secret mount, copy it: docs/headless.md)"
                    .into(),
            ));
        }
        Err(e) => return Err(Error::not_logged_in(format!("cannot read {}: {e}", what()))),
    };
    let metadata = file.metadata().map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?;
    if !metadata.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = metadata.mode() & 0o777;
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me {
            return Err(refuse(format!(
                "it belongs to uid {}, not to you (uid {me}); copy it to a file of yours with mode 600",
                metadata.uid()
            )));
        }
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "its mode {mode:o} gives {} access; run `chmod 600 {}` (Kubernetes: defaultMode: 0400)",
                if mode & 0o007 != 0 { "everyone" } else { "its group" },
                path.display()
            )));
        }
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(64 * 1024)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::not_logged_in(format!("cannot read {}: {e}", what())))?;
    first_line(&bytes, &what)
}

/// `env:VAR`, already allowed by the profile.
fn read_env(var: &str) -> Result<SecretString> {
    match std::env::var_os(var) {
        Some(value) => {
            let bytes = Zeroizing::new(value.into_encoded_bytes());
            first_line(&bytes, &|| format!("environment variable {var}"))
        }
        None => Err(Error::not_logged_in(format!(
            "environment variable {var} (this profile's password source) is not set for the process that mints; \
             the daemon reads its own environment: `kubex-cred stop`, then run kubex-cred where {var} is set"
        ))),
    }
}

/// `command:CMD`: run without a shell, stdin closed, in a process group of its own; its first line
/// of stdout is the password. One deadline (`timeout`) for the whole run: the output is taken as
/// soon as the command has exited, whatever a child of it (one that escaped its group with `setsid`,
/// say) still holds open, and what is left of its group is killed. A failure or a timeout is exit 8
/// with the command's first line of stderr, never its stdout.
pub fn run_command(text: &str, timeout: Duration) -> Result<SecretString> {
    let argv = crate::config::split_command(text)
        .map_err(|e| Error::usage(format!("invalid password command '{text}': {e}")))?;
    let what = || format!("password command `{}`", argv[0]);
    let unavailable = |why: String| Error::new(Exit::Keychain, format!("{} {why}", what()));
    let mut command = std::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().map_err(|e| unavailable(format!("cannot be run: {e}")))?;
    let ran = output::collect(&mut child, Instant::now() + timeout);
    kill_group(&mut child);
    let (status, stdout, stderr) = ran.map_err(|e| unavailable(format!("cannot be waited for: {e}")))?;
    let why = String::from_utf8_lossy(&stderr);
    let why = why.lines().next().unwrap_or("no message").trim().to_owned();
    let Some(status) = status else {
        return Err(unavailable(format!(
            "did not finish within {} and was stopped (KUBEX_CRED_TIMEOUT sets the limit): {why}",
            humantime::format_duration(timeout)
        )));
    };
    if !status.success() {
        return Err(unavailable(format!("failed ({status}): {why}")));
    }
    first_line(&stdout, &what)
}

/// The largest output kept of a password command: stdout (the password's line) and stderr (the
/// first line of a failure). More is read and dropped, so a chatty command never blocks on a pipe.
const MAX_STDOUT: usize = 64 * 1024;
const MAX_STDERR: usize = 4096;

/// What a command left: its exit status (`None`: still running at the deadline), stdout, stderr.
type Ran = (Option<std::process::ExitStatus>, Zeroizing<Vec<u8>>, Vec<u8>);

/// Waits for a command until `deadline` while reading its stdout and stderr, in this thread.
#[cfg(unix)]
mod output {
    use std::io::Read;
    use std::process::Child;
    use std::time::{Duration, Instant};

    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    use zeroize::Zeroizing;

    use super::{MAX_STDERR, MAX_STDOUT};

    /// Both pipes are read without blocking, so once the command has exited what it wrote is taken at
    /// once, even if something else still holds the pipes open: no thread is left behind.
    pub fn collect(child: &mut Child, deadline: Instant) -> std::io::Result<super::Ran> {
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        for fd in [out.as_ref().map(|p| rustix::fd::AsFd::as_fd(p)), err.as_ref().map(|p| rustix::fd::AsFd::as_fd(p))]
            .into_iter()
            .flatten()
        {
            rustix::io::ioctl_fionbio(fd, true)?;
        }
        let (mut stdout, mut stderr) = (Zeroizing::new(Vec::new()), Vec::new());
        loop {
            // The status first, then the pipes: all a command wrote before it exited is in them.
            let status = child.try_wait()?;
            drain(&mut out, &mut stdout, MAX_STDOUT)?;
            drain(&mut err, &mut stderr, MAX_STDERR)?;
            let now = Instant::now();
            if status.is_some() || now >= deadline {
                return Ok((status, stdout, stderr));
            }
            // Until output comes, or a short slice to look at the status again.
            let slice = (deadline - now).min(Duration::from_millis(5));
            let wait = Timespec::try_from(slice).unwrap_or(Timespec { tv_sec: 0, tv_nsec: 5_000_000 });
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
            if let Some(pipe) = &out {
                fds.push(PollFd::new(pipe, PollFlags::IN));
            }
            if let Some(pipe) = &err {
                fds.push(PollFd::new(pipe, PollFlags::IN));
            }
            if fds.is_empty() {
                std::thread::sleep(slice);
            } else {
                poll(&mut fds, Some(&wait))?;
            }
        }
    }

    /// Reads what the pipe holds now (keeping at most `limit` bytes); at its end, lets it go.
    fn drain<P: Read>(pipe: &mut Option<P>, into: &mut Vec<u8>, limit: usize) -> std::io::Result<()> {
        let Some(reader) = pipe.as_mut() else { return Ok(()) };
        let mut chunk = Zeroizing::new([0u8; 4096]);
        loop {
            match reader.read(chunk.as_mut()) {
                Ok(0) => {
                    *pipe = None;
                    return Ok(());
                }
                Ok(n) => {
                    let room = limit.saturating_sub(into.len()).min(n);
                    into.extend_from_slice(&chunk[..room]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Elsewhere (Windows) pipes cannot be polled: each is read to its end on a thread of its own, and
/// what the threads have once the command exited (or the deadline passed) is taken.
#[cfg(not(unix))]
mod output {
    use std::io::Read;
    use std::process::Child;
    use std::time::{Duration, Instant};

    use zeroize::Zeroizing;

    use super::{MAX_STDERR, MAX_STDOUT};

    pub fn collect(child: &mut Child, deadline: Instant) -> std::io::Result<super::Ran> {
        let stdout = child.stdout.take().map(|out| read_all(out, MAX_STDOUT));
        let stderr = child.stderr.take().map(|err| read_all(err, MAX_STDERR));
        let status = loop {
            match child.try_wait()? {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => break None,
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let out = stdout.and_then(|rx| rx.recv_timeout(left).ok()).unwrap_or_default();
        let err = stderr.and_then(|rx| rx.recv_timeout(Duration::from_millis(100)).ok()).unwrap_or_default();
        Ok((status, out, err.to_vec()))
    }

    fn read_all(mut pipe: impl Read + Send + 'static, limit: usize) -> std::sync::mpsc::Receiver<Zeroizing<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Zeroizing::new(Vec::new());
            let _ = (&mut pipe).take(limit as u64).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    }
}

/// Kills the command and what is left of its process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Some(group) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_line_is_the_password_exactly() {
        let what = || "x".to_owned();
        let pw = |b: &[u8]| first_line(b, &what).map(|s| s.expose().to_owned());
        assert_eq!(pw(b"p w\r\nsecond\n").expect("line"), "p w");
        assert_eq!(pw(b" spaced \n").expect("line"), " spaced ");
        assert_eq!(pw(b"\nx").expect_err("empty").code(), 2);
        assert_eq!(pw(b"\xff\n").expect_err("binary").code(), 2);
    }
}

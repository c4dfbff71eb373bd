//! Windows: a private directory is one whose access list admits only its owner. kubex-cred creates
//! its directories with an explicit, protected DACL (the user and SYSTEM, inherited by what is
//! made inside) and refuses one in which an entry lets anyone else in. The rule is the one OpenSSH
//! for Windows applies to private keys: besides the user, SYSTEM and Administrators (who can take
//! any file anyway, as root can on Unix) may be admitted, nobody else.
//!
//! The rule (`problem`) is plain data and tested on every platform; the calls that read and set an
//! ACL (`sys`) are Windows-only: type-checked from Linux by `scripts/check-windows`, run by the
//! Windows job of `.github/workflows/ci.yml`.

use std::path::Path;

/// LocalSystem and the Administrators group: admitted besides the user.
const SYSTEM: &str = "S-1-5-18";
const ADMINISTRATORS: &str = "S-1-5-32-544";
/// CREATOR OWNER (an inheritable entry standing for whoever creates a file inside, who must
/// already be admitted) and OWNER RIGHTS (the owner, checked first).
const CREATOR_OWNER: &str = "S-1-3-0";
const OWNER_RIGHTS: &str = "S-1-3-4";

/// One entry of a DACL, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Grants access to this SID (an `ACCESS_ALLOWED_ACE`).
    Allow(String),
    /// Denies access: never widens who gets in.
    Deny,
    /// Any other kind (object, callback or conditional entries, by ACE type): not read, so not trusted.
    Other(u8),
}

/// What makes a directory owned by `owner` with this DACL not private to `user` (SIDs as text);
/// `None`: it is private. A DACL of `None` is a NULL DACL, which lets everyone in.
pub(crate) fn problem(dir: &Path, user: &str, owner: &str, dacl: Option<&[Entry]>) -> Option<String> {
    let trusted = |sid: &str| sid == user || sid == SYSTEM || sid == ADMINISTRATORS;
    if !trusted(owner) {
        return Some(format!("it is owned by {owner}, not by you ({user}); remove it"));
    }
    let Some(entries) = dacl else {
        return Some(format!("it has no access list, which lets everyone in; {}", fix(dir, user, &[])));
    };
    let mut others: Vec<&str> = Vec::new();
    for entry in entries {
        match entry {
            Entry::Allow(sid) if trusted(sid) || sid == CREATOR_OWNER || sid == OWNER_RIGHTS => {}
            Entry::Allow(sid) if !others.contains(&sid.as_str()) => others.push(sid),
            Entry::Allow(_) | Entry::Deny => {}
            Entry::Other(kind) => {
                return Some(format!(
                    "its access list has an entry kubex-cred does not read (ACE type {kind}); {}",
                    fix(dir, user, &[])
                ));
            }
        }
    }
    if others.is_empty() {
        return None;
    }
    Some(format!("its access list lets {} in; {}", others.join(", "), fix(dir, user, &others)))
}

/// The `icacls` command that makes `dir` the user's alone: inherited entries dropped, the user's
/// own grant replaced by full control, each SID named removed (icacls reads `*SID` as a SID).
fn fix(dir: &Path, user: &str, others: &[&str]) -> String {
    let mut command = format!("run `icacls \"{}\" /inheritance:r /grant:r *{user}:(OI)(CI)F", dir.display());
    for sid in others {
        command.push_str(&format!(" /remove:g *{sid}"));
    }
    command.push('`');
    command
}

#[cfg(windows)]
pub(crate) use sys::{create, read, user};

/// The Win32 calls. The package's only `unsafe`, allowed here alone: reading a directory's owner
/// and DACL, the process's user SID, and creating a directory with a security descriptor have no
/// safe wrapper in the crates this package uses.
#[cfg(windows)]
#[allow(unsafe_code)]
mod sys {
    use std::ffi::c_void;
    use std::io;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;
    use std::ptr::null_mut;

    use windows_sys::Win32::Foundation::{CloseHandle, ERROR_ALREADY_EXISTS, ERROR_SUCCESS, HANDLE, LocalFree};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW,
        SDDL_REVISION_1, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{
        ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, DACL_SECURITY_INFORMATION, GetAce, GetTokenInformation,
        OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
        TokenUser,
    };
    use windows_sys::Win32::Storage::FileSystem::CreateDirectoryW;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

    use super::Entry;

    /// `ACCESS_ALLOWED_ACE_TYPE` and `ACCESS_DENIED_ACE_TYPE` (winnt.h), as the header's byte.
    const ACCESS_ALLOWED: u8 = 0;
    const ACCESS_DENIED: u8 = 1;

    /// Memory the system allocated for a result, given back with `LocalFree`.
    struct Local(*mut c_void);

    impl Drop for Local {
        fn drop(&mut self) {
            if !self.0.is_null() {
                // SAFETY: the pointer came from a call documented to allocate it with LocalAlloc.
                unsafe { LocalFree(self.0) };
            }
        }
    }

    struct Token(HANDLE);

    impl Drop for Token {
        fn drop(&mut self) {
            // SAFETY: an open handle from OpenProcessToken, closed once.
            unsafe { CloseHandle(self.0) };
        }
    }

    fn wide(path: &Path) -> Vec<u16> {
        path.as_os_str().encode_wide().chain(Some(0)).collect()
    }

    fn failed(ok: i32) -> io::Result<()> {
        if ok == 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// A SID as text (`S-1-5-…`).
    fn sid_text(sid: PSID) -> io::Result<String> {
        let mut text: *mut u16 = null_mut();
        // SAFETY: `sid` points into a live security descriptor or token buffer; `text` receives a
        // LocalAlloc'd, NUL-terminated string, freed by `Local`.
        failed(unsafe { ConvertSidToStringSidW(sid, &mut text) })?;
        let _free = Local(text.cast());
        // SAFETY: the string is NUL-terminated, read up to the NUL.
        let len = (0..).take_while(|&i| unsafe { *text.add(i) } != 0).count();
        // SAFETY: `len` u16s were just read from it.
        Ok(String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) }))
    }

    /// The SID of the user this process runs as.
    pub(crate) fn user() -> io::Result<String> {
        let mut handle: HANDLE = null_mut();
        // SAFETY: the current-process pseudo handle; `handle` receives a token closed by `Token`.
        failed(unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut handle) })?;
        let token = Token(handle);
        let mut len = 0u32;
        // SAFETY: a size query (no buffer); it fails with ERROR_INSUFFICIENT_BUFFER and sets `len`.
        unsafe { GetTokenInformation(token.0, TokenUser, null_mut(), 0, &mut len) };
        if len == 0 {
            return Err(io::Error::last_os_error());
        }
        // u64 words: TOKEN_USER holds a pointer and must be aligned for it.
        let mut buf = vec![0u64; (len as usize).div_ceil(8)];
        // SAFETY: `buf` has room for `len` bytes.
        failed(unsafe { GetTokenInformation(token.0, TokenUser, buf.as_mut_ptr().cast(), len, &mut len) })?;
        // SAFETY: filled with a TOKEN_USER whose SID points into `buf`, alive for this call.
        let info = unsafe { &*buf.as_ptr().cast::<TOKEN_USER>() };
        sid_text(info.User.Sid)
    }

    /// The owner of `path` and its DACL (`None`: a NULL DACL).
    pub(crate) fn read(path: &Path) -> io::Result<(String, Option<Vec<Entry>>)> {
        let mut owner: PSID = null_mut();
        let mut dacl: *mut ACL = null_mut();
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: a NUL-terminated path; `owner` and `dacl` point into `descriptor`, freed by `Local`
        // after their last use below.
        let status = unsafe {
            GetNamedSecurityInfoW(
                wide(path).as_ptr(),
                SE_FILE_OBJECT,
                OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                &mut owner,
                null_mut(),
                &mut dacl,
                null_mut(),
                &mut descriptor,
            )
        };
        if status != ERROR_SUCCESS {
            return Err(io::Error::from_raw_os_error(status as i32));
        }
        let _free = Local(descriptor);
        let owner = sid_text(owner)?;
        if dacl.is_null() {
            return Ok((owner, None));
        }
        // SAFETY: a valid ACL inside the descriptor.
        let count = unsafe { (*dacl).AceCount };
        let mut entries = Vec::with_capacity(count.into());
        for index in 0..u32::from(count) {
            let mut ace: *mut c_void = null_mut();
            // SAFETY: `index` is below the ACL's count; `ace` points into the ACL.
            failed(unsafe { GetAce(dacl, index, &mut ace) })?;
            // SAFETY: every ACE starts with an ACE_HEADER.
            let kind = unsafe { (*ace.cast::<ACE_HEADER>()).AceType };
            entries.push(match kind {
                ACCESS_ALLOWED => {
                    // SAFETY: an ACCESS_ALLOWED_ACE, whose SID starts at `SidStart`.
                    let sid = unsafe { std::ptr::addr_of_mut!((*ace.cast::<ACCESS_ALLOWED_ACE>()).SidStart) };
                    Entry::Allow(sid_text(sid.cast())?)
                }
                ACCESS_DENIED => Entry::Deny,
                other => Entry::Other(other),
            });
        }
        Ok((owner, Some(entries)))
    }

    /// Creates `dir` (its parent must exist) with a protected DACL granting full control to `user`
    /// and SYSTEM only, inherited by files and directories made inside. An existing directory is
    /// left as it is (the caller checks it).
    pub(crate) fn create(dir: &Path, user: &str) -> io::Result<()> {
        let sddl: Vec<u16> = format!("D:P(A;OICI;FA;;;{user})(A;OICI;FA;;;SY)").encode_utf16().chain(Some(0)).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: a NUL-terminated SDDL string; `descriptor` is LocalAlloc'd, freed by `Local`.
        failed(unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        })?;
        let _free = Local(descriptor);
        let attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor,
            bInheritHandle: 0,
        };
        // SAFETY: a NUL-terminated path and attributes whose descriptor outlives the call.
        match failed(unsafe { CreateDirectoryW(wide(dir).as_ptr(), &attributes) }) {
            Err(e) if e.raw_os_error() == Some(ERROR_ALREADY_EXISTS as i32) && dir.is_dir() => Ok(()),
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "S-1-5-21-1-2-3-1001";

    fn allow(sid: &str) -> Entry {
        Entry::Allow(sid.to_owned())
    }

    #[test]
    fn the_user_system_and_administrators_alone_are_private() {
        let dir = Path::new(r"C:\Users\me\AppData\Local\kubex-cred");
        let profile = [allow(USER), allow(SYSTEM), allow(ADMINISTRATORS), allow(CREATOR_OWNER), Entry::Deny];
        assert_eq!(problem(dir, USER, USER, Some(&profile)), None);
        assert_eq!(problem(dir, USER, ADMINISTRATORS, Some(&[allow(USER), allow(OWNER_RIGHTS)])), None);
    }

    #[test]
    fn anyone_else_let_in_is_named_with_the_icacls_that_removes_them() {
        let dir = Path::new(r"C:\state\kubex-cred");
        let users = "S-1-5-32-545";
        let everyone = "S-1-1-0";
        let dacl = [allow(USER), allow(users), allow(everyone), allow(users)];
        let why = problem(dir, USER, USER, Some(&dacl)).expect("open to others");
        assert_eq!(
            why,
            format!(
                "its access list lets {users}, {everyone} in; run `icacls \"C:\\state\\kubex-cred\" /inheritance:r \
                 /grant:r *{USER}:(OI)(CI)F /remove:g *{users} /remove:g *{everyone}`"
            )
        );
    }

    #[test]
    fn a_null_dacl_an_unread_entry_or_another_owner_is_refused() {
        let dir = Path::new(r"C:\state\kubex-cred");
        let open = problem(dir, USER, USER, None).expect("NULL DACL");
        assert!(open.starts_with("it has no access list, which lets everyone in; run `icacls"), "{open}");
        let unread = problem(dir, USER, USER, Some(&[allow(USER), Entry::Other(9)])).expect("callback ACE");
        assert!(unread.contains("ACE type 9"), "{unread}");
        let other = "S-1-5-21-1-2-3-1002";
        let theirs = problem(dir, USER, other, Some(&[allow(USER)])).expect("another owner");
        assert_eq!(theirs, format!("it is owned by {other}, not by you ({USER}); remove it"));
    }

    /// The real thing, on Windows only (the Windows CI job): a directory kubex-cred creates is
    /// private, one opened to Everyone is refused, and the icacls the message gives fixes it.
    #[cfg(windows)]
    #[test]
    fn a_created_directory_is_private_and_an_opened_one_is_refused_until_icacls_fixes_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("kubex-cred");
        crate::fs::create_private_dir(&dir).expect("created");
        assert_eq!(crate::fs::private_dir_problem(&dir), None);
        let (_, dacl) = read(&dir).expect("read");
        let me = user().expect("user");
        assert_eq!(dacl, Some(vec![Entry::Allow(me.clone()), Entry::Allow(SYSTEM.to_owned())]));
        let icacls = |args: &[&str]| {
            let status = std::process::Command::new("icacls").arg(&dir).args(args).status().expect("icacls");
            assert!(status.success(), "icacls {args:?}");
        };
        icacls(&["/grant", "*S-1-1-0:(OI)(CI)R"]);
        let why = crate::fs::private_dir_problem(&dir).expect("open to Everyone");
        assert!(why.contains("lets S-1-1-0 in"), "{why}");
        let fix = why.split('`').nth(1).expect("a command");
        let (_, args) = fix.rsplit_once("\" ").expect("the quoted path, then the arguments");
        let args: Vec<&str> = args.split(' ').collect();
        icacls(&args);
        assert_eq!(crate::fs::private_dir_problem(&dir), None);
    }
}

//! Filesystem access with a user's credentials, for daemons that run as root.
//!
//! headnoded and computed run as root, and a path a user names (an image tarball, an output
//! file) must be opened as that user would open it: with their uid, their primary group and all
//! of their other groups, so that a user can never make a daemon read or write a file they could
//! not touch themselves, and on NFS with root squashed the user's own files stay reachable.
//!
//! Each access runs on a short-lived thread of its own whose filesystem identity alone changes:
//! the raw `setgroups`, `setfsgid` and `setfsuid` system calls act on the calling thread, while
//! glibc's `setgroups` would change every thread of the daemon. A process that is not root
//! opens as itself (it cannot take another identity, and needs none for its own files).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Supplementary groups taken at most; Linux's own limit (`NGROUPS_MAX`) is 65536, and a user in
/// more groups than this is cut to the first ones (with their primary group always kept).
const MAX_GROUPS: usize = 1024;

/// Whose filesystem identity an access takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, the primary one included.
    pub groups: Vec<u32>,
}

impl UserCredentials {
    /// `uid` with only its primary group `gid`.
    pub fn primary_only(uid: u32, gid: u32) -> Self {
        UserCredentials {
            uid,
            gid,
            groups: vec![gid],
        }
    }

    /// `uid`:`gid` with every group the system's user database (files, LDAP, NIS through NSS)
    /// gives `user`; only the primary group when `user` is unknown or empty.
    pub fn of_user(user: &str, uid: u32, gid: u32) -> Self {
        let mut groups = CString::new(user)
            .ok()
            .filter(|_| !user.is_empty())
            .and_then(|name| nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)).ok())
            .map(|list| list.into_iter().map(|g| g.as_raw()).collect::<Vec<_>>())
            .unwrap_or_default();
        if !groups.contains(&gid) {
            groups.insert(0, gid);
        }
        groups.truncate(MAX_GROUPS);
        UserCredentials { uid, gid, groups }
    }
}

/// Runs `access` on a thread that has taken `user`'s filesystem identity (see the module's
/// text), and returns its result. Only filesystem calls are affected by that identity.
pub fn with_identity<T: Send + 'static>(
    user: &UserCredentials,
    access: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if !nix::unistd::geteuid().is_root() {
        return access();
    }
    let user = user.clone();
    std::thread::Builder::new()
        .name("as-user".into())
        .spawn(move || {
            // SAFETY: the raw setgroups system call reads `len` gid_t values from a live vector;
            // it changes only this thread's credentials.
            let ret = unsafe {
                libc::syscall(libc::SYS_setgroups, user.groups.len(), user.groups.as_ptr())
            };
            if ret == -1 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: setfsgid/setfsuid take plain integers and change only this thread's
            // filesystem identity. They report the previous value, not failure; the check below
            // reads the identity back.
            unsafe {
                libc::syscall(libc::SYS_setfsgid, user.gid);
                libc::syscall(libc::SYS_setfsuid, user.uid);
            }
            // SAFETY: called with an invalid id (-1), setfsuid changes nothing and returns the
            // current filesystem uid.
            let now = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
            if now != i64::from(user.uid) {
                return Err(io::Error::other(format!(
                    "cannot take uid {}'s filesystem identity",
                    user.uid
                )));
            }
            access()
        })?
        .join()
        .map_err(|_| io::Error::other("the thread acting as the user panicked"))?
}

/// Opens `path` with `options` as `user`.
pub fn open_as(user: &UserCredentials, path: &Path, options: &OpenOptions) -> io::Result<File> {
    let (path, options): (PathBuf, OpenOptions) = (path.to_path_buf(), options.clone());
    with_identity(user, move || options.open(&path))
}

/// Opens `path` for reading as `user`.
pub fn open_read_as(user: &UserCredentials, path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    open_as(user, path, &options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    /// An unprivileged uid with no account here.
    const STRANGER: u32 = 64_999;

    #[test]
    fn a_user_cannot_read_through_the_daemon_what_they_cannot_read_themselves() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to take another identity");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("secret");
        File::create(&secret)
            .unwrap()
            .write_all(b"root only")
            .unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let stranger = UserCredentials::primary_only(STRANGER, STRANGER);
        let err = open_read_as(&stranger, &secret).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        // Readable to others: the stranger reads it, and the daemon's own identity is unchanged.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(open_read_as(&stranger, &secret).is_ok());
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(File::open(&secret).is_ok());
    }

    #[test]
    fn group_members_read_group_files() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to take another identity");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, b"group data").unwrap();
        let group = STRANGER - 1;
        nix::unistd::chown(&shared, None, Some(nix::unistd::Gid::from_raw(group))).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        let member = UserCredentials {
            uid: STRANGER,
            gid: STRANGER,
            groups: vec![STRANGER, group],
        };
        assert!(open_read_as(&member, &shared).is_ok());
        let outsider = UserCredentials::primary_only(STRANGER, STRANGER);
        assert!(open_read_as(&outsider, &shared).is_err());
    }

    #[test]
    fn an_unknown_user_keeps_its_primary_group() {
        let user = UserCredentials::of_user("no-such-user-here", STRANGER, STRANGER);
        assert_eq!(user.groups, vec![STRANGER]);
        let root = UserCredentials::of_user("root", 0, 0);
        assert!(root.groups.contains(&0));
    }
}

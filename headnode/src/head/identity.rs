//! Who a caller is: the user name and groups of a socket peer's uid and gid, looked up through NSS
//! (files, LDAP, NIS) and kept for a short while.
//!
//! Every submit needs them (groups decide partition access and are exported to the job), and a
//! lookup is one `getpwuid` and a `getgrouplist` plus a `getgrgid` per group: on this machine's
//! files backend 50 µs per submit and 4 % of the head's CPU time in a run of short jobs; against
//! an LDAP server a network round trip each. Slurm keeps group lists for `GroupUpdateTime`
//! (600 s).

use crate::model::User;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who is asking: the unix socket peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// How long a looked-up identity is used: a user added to or removed from a group is seen by
/// submits at most this much later (Slurm: 600 s), and a burst of submits looks it up once.
pub(super) const IDENTITY_TTL: Duration = Duration::from_secs(30);

/// A caller's name and groups as NSS gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    pub user: User,
    pub groups: Vec<String>,
    /// The groups by ID, the primary one first.
    pub gids: Vec<u32>,
}

/// Identities by (uid, gid), each with when it was looked up.
#[derive(Debug, Default)]
pub(super) struct Identities {
    cache: Mutex<HashMap<(u32, u32), (Instant, Identity)>>,
}

impl Identities {
    /// The caller's identity, looked up when it is not cached or older than [`IDENTITY_TTL`].
    pub fn of(&self, caller: &Caller) -> Identity {
        self.of_with(caller, Instant::now(), look_up)
    }

    fn of_with(
        &self,
        caller: &Caller,
        now: Instant,
        look_up: impl FnOnce(&Caller) -> Identity,
    ) -> Identity {
        let key = (caller.uid, caller.gid);
        if let Some((at, identity)) = self.lock().get(&key)
            && now.saturating_duration_since(*at) < IDENTITY_TTL
        {
            return identity.clone();
        }
        // Looked up without the lock: a slow directory server must not hold other callers.
        let identity = look_up(caller);
        self.lock().insert(key, (now, identity.clone()));
        identity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), (Instant, Identity)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn look_up(caller: &Caller) -> Identity {
    let user = user_of(caller);
    let (groups, gids) = groups_of(&user);
    Identity { user, groups, gids }
}

/// The caller as a user record (name from the password database, else the uid).
fn user_of(caller: &Caller) -> User {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller.uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| caller.uid.to_string());
    User {
        uid: caller.uid,
        gid: caller.gid,
        name,
    }
}

/// The user's groups by name, as the system's group database reports them.
fn groups_of(user: &User) -> (Vec<String>, Vec<u32>) {
    use nix::unistd::{Gid, Group};
    let gids = std::ffi::CString::new(user.name.clone())
        .ok()
        .and_then(|name| nix::unistd::getgrouplist(&name, Gid::from_raw(user.gid)).ok())
        .unwrap_or_else(|| vec![Gid::from_raw(user.gid)]);
    let names = gids
        .iter()
        .filter_map(|gid| Group::from_gid(*gid).ok().flatten().map(|g| g.name))
        .collect();
    let mut ids: Vec<u32> = vec![user.gid];
    ids.extend(gids.iter().map(|g| g.as_raw()).filter(|g| *g != user.gid));
    (names, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, groups: &[&str]) -> Identity {
        Identity {
            user: User {
                uid: 1000,
                gid: 1000,
                name: name.into(),
            },
            groups: groups.iter().map(|g| g.to_string()).collect(),
            gids: vec![1000],
        }
    }

    #[test]
    fn an_identity_is_looked_up_once_per_ttl_and_per_uid_and_gid() {
        let identities = Identities::default();
        let alice = Caller {
            uid: 1000,
            gid: 1000,
        };
        let t0 = Instant::now();
        let first = identities.of_with(&alice, t0, |_| identity("alice", &["alice"]));
        assert_eq!(first.groups, ["alice"]);
        // Within the TTL the cached answer is used, even if the directory changed meanwhile.
        let cached = identities.of_with(&alice, t0 + IDENTITY_TTL / 2, |_| {
            panic!("looked up again within the TTL")
        });
        assert_eq!(cached, first);
        // After it, the change is seen.
        let later = identities.of_with(&alice, t0 + IDENTITY_TTL, |_| {
            identity("alice", &["alice", "physics"])
        });
        assert_eq!(later.groups, ["alice", "physics"]);
        // Another primary group is another identity.
        let other = Caller {
            uid: 1000,
            gid: 2000,
        };
        let looked_up = identities.of_with(&other, t0, |_| identity("alice", &["staff"]));
        assert_eq!(looked_up.groups, ["staff"]);
    }

    #[test]
    fn the_real_lookup_names_root() {
        let root = Identities::default().of(&Caller { uid: 0, gid: 0 });
        assert_eq!(root.user.name, "root");
        assert!(
            root.groups.contains(&"root".to_string()),
            "{:?}",
            root.groups
        );
    }
}

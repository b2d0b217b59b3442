//! How many connections the client sockets (`headnoded.sock`, `headnoded.submit.sock`) take, and
//! for how long.
//!
//! Both sockets are mode 0666: every local user may connect, and the peer's uid (SO_PEERCRED)
//! decides what they may do. Without limits one user's idle connections (21,000 of them, once) took
//! every file descriptor of the head: root's `cluster queue` hung, and the store and the agents
//! had none left either. So:
//!
//! - a user (uid ≠ 0) holds at most [`crate::config::MAX_CONNECTIONS_PER_USER`] connections over
//!   both sockets (or `[api] max_connections_per_user`);
//! - all clients together hold at most `max_connections` (at most half the open-files limit), of
//!   which the last [`ROOT_RESERVED_CONNECTIONS`] only root may take, so an administrator gets in
//!   while users hold all the others;
//! - a connection that sends no request within [`PREFACE_TIMEOUT`], or none for [`IDLE_TIMEOUT`]
//!   after its last one ended, is closed (`server::client_conn` for the gRPC socket,
//!   `submit_socket` for the other);
//! - accept errors (out of descriptors) back off for [`ACCEPT_RETRY_DELAY`] instead of spinning.
//!
//! A refused connection is closed at once (the submit socket first answers why) and logged at
//! WARN at most once per uid per [`REFUSAL_LOG_INTERVAL`].

use crate::config::ApiConfig;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Instant;

/// Client connections in all when the open-files limit allows more than twice as many: each idle
/// HTTP/2 connection keeps some tens of KiB of buffers, and 8192 is far more clients than a head
/// node serves at once (it takes 128 users each at their limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// Of all the client connections, this many are kept for root: when users hold every other one,
/// an administrator's `cluster queue`, `cancel` or `drain` still gets in.
pub const ROOT_RESERVED_CONNECTIONS: usize = 32;

/// A new connection must send its first complete request (the HTTP/2 preface and a request's
/// headers; a whole framed SubmitRequest) this soon: real clients read their input before they
/// connect and need microseconds. An idle flood is shed this fast.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC connection with no request in flight is closed after this long (a request in flight,
/// such as `submit --wait`'s WatchJob stream, is never cut: HTTP/2 pings check its peer is
/// alive). A command's requests follow each other within milliseconds, and a client whose
/// connection was closed makes a new one for its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an accept loop waits after a refusal for lack of resources (no file descriptors
/// left, no memory): the condition lasts until some connection closes, and retrying at once
/// would spin a core that the connections need to finish. axum waits 1 s; submits are short.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A refusal is logged at most once per uid (and once for the global cap) per interval, with the
/// number refused since: a flood of refused connections must not become a flood of log lines.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A uid's share of the connection slots, and the global cap with root's reserve.
#[derive(Debug)]
pub struct ConnectionLimits {
    per_user: usize,
    total: usize,
    root_reserved: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    by_uid: HashMap<u32, usize>,
}

/// Why a connection was refused; its text is what the submit socket answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The uid already holds its share.
    User { uid: u32, limit: usize },
    /// Every slot a user may take is taken (`limit` counts root's reserve; `root`: even those).
    Full { limit: usize, root: bool },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::User { uid, limit } => write!(
                f,
                "too many connections from uid {uid} (limit {limit}): close some"
            ),
            Refusal::Full { limit, root: false } => write!(
                f,
                "headnoded has no client connection left for users (limit {limit}, some kept \
                 for root): try again shortly"
            ),
            Refusal::Full { limit, root: true } => write!(
                f,
                "headnoded has no client connection left (limit {limit}): try again shortly"
            ),
        }
    }
}

/// One connection's slot, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    uid: u32,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        counts.open -= 1;
        if let Some(n) = counts.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                counts.by_uid.remove(&self.uid);
            }
        }
    }
}

impl ConnectionLimits {
    /// `per_user` connections for each uid but root, `total` for everyone, of which
    /// `root_reserved` (at most half of `total`) only root may take.
    pub fn new(per_user: usize, total: usize, root_reserved: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            per_user,
            total,
            root_reserved: root_reserved.min(total / 2),
            counts: Mutex::default(),
        })
    }

    /// The limits headnoded runs with: `[api]` of its config, and the global cap at most half the
    /// open-files limit `nofile` (the other half is the store's, the agents', provisioning's).
    pub fn for_config(config: &ApiConfig, nofile: u64) -> Arc<Self> {
        let half = usize::try_from(nofile / 2).unwrap_or(usize::MAX);
        let wanted = config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if config.max_connections.is_some() && wanted > half {
            tracing::warn!(
                max_connections = wanted,
                open_files_limit = nofile,
                "[api] max_connections is over half the open-files limit; using {half}"
            );
        }
        Self::new(
            config.max_connections_per_user,
            wanted.min(half),
            ROOT_RESERVED_CONNECTIONS,
        )
    }

    /// A slot for a connection of `uid`, or why there is none. Root (uid 0) has no per-user
    /// limit and may take the reserved slots.
    pub fn acquire(self: &Arc<Self>, uid: u32) -> Result<Permit, Refusal> {
        let mut counts = self.lock();
        if uid == 0 {
            if counts.open >= self.total {
                return Err(Refusal::Full {
                    limit: self.total,
                    root: true,
                });
            }
        } else {
            if counts.by_uid.get(&uid).copied().unwrap_or(0) >= self.per_user {
                return Err(Refusal::User {
                    uid,
                    limit: self.per_user,
                });
            }
            if counts.open >= self.total - self.root_reserved {
                return Err(Refusal::Full {
                    limit: self.total,
                    root: false,
                });
            }
        }
        counts.open += 1;
        *counts.by_uid.entry(uid).or_default() += 1;
        Ok(Permit {
            limits: self.clone(),
            uid,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// The global cap (root's reserve included).
    pub fn total(&self) -> usize {
        self.total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding the lock (nothing can:
        // additions and removals only).
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decides which refusals are logged: the first of each uid (and of the global cap) per
/// [`REFUSAL_LOG_INTERVAL`], carrying the count of those left unlogged since.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    entries: Mutex<HashMap<RefusalKey, LogEntry>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RefusalKey {
    User(u32),
    Full,
}

#[derive(Debug)]
struct LogEntry {
    logged: Instant,
    unlogged: u64,
}

/// Entries kept before old ones are dropped: a flood from many uids must not grow the map
/// without end.
const REFUSAL_LOG_ENTRIES: usize = 4096;

impl RefusalLog {
    pub fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            entries: Mutex::default(),
        }
    }

    /// `Some(n)` when this refusal is to be logged (`n` refusals of the same kind were not since
    /// the last line), `None` when it is to be counted only.
    pub fn note(&self, refusal: &Refusal, now: Instant) -> Option<u64> {
        let key = match refusal {
            Refusal::User { uid, .. } => RefusalKey::User(*uid),
            Refusal::Full { .. } => RefusalKey::Full,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&key) {
            if now.duration_since(entry.logged) < self.interval {
                entry.unlogged += 1;
                return None;
            }
            let unlogged = entry.unlogged;
            *entry = LogEntry {
                logged: now,
                unlogged: 0,
            };
            return Some(unlogged);
        }
        if entries.len() >= REFUSAL_LOG_ENTRIES {
            let interval = self.interval;
            entries.retain(|_, e| now.duration_since(e.logged) < interval);
        }
        entries.insert(
            key,
            LogEntry {
                logged: now,
                unlogged: 0,
            },
        );
        Some(0)
    }
}

/// The uid a connection is charged to. Production: the peer's (SO_PEERCRED); tests run as root
/// and stand in other uids.
pub type UidOf = Arc<dyn Fn(&UnixStream) -> io::Result<u32> + Send + Sync>;

/// How long a connection may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Until its first complete request.
    pub preface: Duration,
    /// With no request in flight, after one.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            preface: PREFACE_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// What both client sockets share: the slots, the timeouts, the refusal log.
#[derive(Clone)]
pub struct ClientSockets {
    pub limits: Arc<ConnectionLimits>,
    pub timeouts: Timeouts,
    log: Arc<RefusalLog>,
    uid_of: UidOf,
}

impl fmt::Debug for ClientSockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSockets")
            .field("limits", &self.limits)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A connection the accept loop took.
#[derive(Debug)]
pub enum Accepted {
    /// Within the limits: serve it while holding the permit.
    Admitted(UnixStream, Permit),
    /// Over a limit (already logged): close it, after saying why if the protocol can.
    Refused(UnixStream, Refusal),
}

impl ClientSockets {
    /// The default timeouts, connections charged to their peer's uid.
    pub fn new(limits: Arc<ConnectionLimits>) -> Self {
        ClientSockets {
            limits,
            timeouts: Timeouts::default(),
            log: Arc::new(RefusalLog::new(REFUSAL_LOG_INTERVAL)),
            uid_of: Arc::new(|stream: &UnixStream| Ok(stream.peer_cred()?.uid())),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Charges connections to the uid `uid_of` gives instead of their peer's (tests).
    pub fn charging(mut self, uid_of: UidOf) -> Self {
        self.uid_of = uid_of;
        self
    }

    /// The next connection on `listener` (`socket` names it in logs), admitted or refused. An
    /// accept that fails for lack of resources is logged and retried after
    /// [`ACCEPT_RETRY_DELAY`]; other accept errors mean the listener is broken and are returned.
    pub async fn accept(&self, listener: &UnixListener, socket: &str) -> io::Result<Accepted> {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if accept_error_is_transient(&e) => {
                    tracing::warn!(error = %e, "{socket}: cannot accept a connection; retrying");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let uid = match (self.uid_of)(&stream) {
                Ok(uid) => uid,
                Err(e) => {
                    // The peer is gone already, or not a process the kernel can name.
                    tracing::debug!(error = %e, "{socket}: no peer credentials; closing");
                    continue;
                }
            };
            return Ok(match self.limits.acquire(uid) {
                Ok(permit) => Accepted::Admitted(stream, permit),
                Err(refusal) => {
                    if let Some(unlogged) = self.log.note(&refusal, Instant::now()) {
                        tracing::warn!(
                            uid,
                            open = self.limits.open(),
                            refused_unlogged = unlogged,
                            "{socket}: refused a connection: {refusal}"
                        );
                    }
                    Accepted::Refused(stream, refusal)
                }
            });
        }
    }
}

/// Errors of one `accept` that leave the listener usable (accept(2)).
fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            nix::libc::EMFILE
                | nix::libc::ENFILE
                | nix::libc::ENOBUFS
                | nix::libc::ENOMEM
                | nix::libc::ECONNABORTED
                | nix::libc::EINTR
                | nix::libc::EPROTO
                | nix::libc::EPERM
        )
    )
}

/// Raises the soft open-files limit to the hard one (systemd starts services at 1024 soft,
/// 524288 hard: the soft limit exists for programs that use select(2), which tokio does not).
/// Returns the soft limit in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft >= hard {
        return soft;
    }
    // The kernel refuses more than fs.nr_open, whatever the hard limit says.
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            tracing::info!(from = soft, to = target, "raised the open-files limit");
            target
        }
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            soft
        }
    }
}

/// Seams for the tests of both sockets.
#[cfg(test)]
pub(crate) mod test_support {
    use super::UidOf;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Charges the connections, in the order they are accepted, to `uids`; any after them to
    /// root. (Tests run as root: this stands in other users.)
    pub fn charged(uids: &[u32]) -> UidOf {
        let queue = Mutex::new(VecDeque::from(uids.to_vec()));
        Arc::new(move |_| Ok(queue.lock().unwrap().pop_front().unwrap_or(0)))
    }

    /// Waits (up to 10 s) for `condition`.
    pub async fn eventually(condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "the condition never held"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_CONNECTIONS_PER_USER;

    #[test]
    fn a_user_gets_the_per_user_share_and_root_is_never_counted_against_it() {
        let limits = ConnectionLimits::new(3, 100, 10);
        let alice: Vec<Permit> = (0..3).map(|_| limits.acquire(1000).unwrap()).collect();
        assert_eq!(
            limits.acquire(1000).unwrap_err(),
            Refusal::User {
                uid: 1000,
                limit: 3
            }
        );
        assert_eq!(
            limits.acquire(1000).unwrap_err().to_string(),
            "too many connections from uid 1000 (limit 3): close some"
        );
        // Another user, and root beyond any per-user share.
        let _bob = limits.acquire(1001).unwrap();
        let root: Vec<Permit> = (0..10).map(|_| limits.acquire(0).unwrap()).collect();
        assert_eq!(limits.open(), 14);
        // A closed connection gives its slot back.
        drop(alice);
        let _alice = limits.acquire(1000).unwrap();
        drop(root);
        assert_eq!(limits.open(), 2);
    }

    #[test]
    fn root_takes_the_reserved_slots_when_users_hold_all_the_others() {
        let limits = ConnectionLimits::new(4, 10, 3);
        let users: Vec<Permit> = (0..7)
            .map(|i| limits.acquire(1000 + i / 4).unwrap())
            .collect();
        let full = limits.acquire(2000).unwrap_err();
        assert_eq!(
            full,
            Refusal::Full {
                limit: 10,
                root: false
            }
        );
        let root: Vec<Permit> = (0..3).map(|_| limits.acquire(0).unwrap()).collect();
        // Not even root beyond the global cap: the descriptors above it are the head's own.
        assert!(matches!(
            limits.acquire(0),
            Err(Refusal::Full { root: true, .. })
        ));
        drop(root);
        drop(users);
        assert_eq!(limits.open(), 0);
        // The reserve never leaves users nothing.
        let tiny = ConnectionLimits::new(4, 2, 32);
        let _one = tiny.acquire(1000).unwrap();
        assert!(tiny.acquire(1000).is_err());
        let _root = tiny.acquire(0).unwrap();
    }

    #[test]
    fn the_global_cap_is_at_most_half_the_open_files_limit() {
        let config = ApiConfig::default();
        assert_eq!(config.max_connections_per_user, MAX_CONNECTIONS_PER_USER);
        assert_eq!(
            ConnectionLimits::for_config(&config, 1 << 20).total(),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(ConnectionLimits::for_config(&config, 1024).total(), 512);
        let config = ApiConfig {
            max_connections: Some(100_000),
            ..ApiConfig::default()
        };
        assert_eq!(
            ConnectionLimits::for_config(&config, 20_000).total(),
            10_000
        );
    }

    #[test]
    fn refusals_are_logged_once_per_uid_per_interval_with_the_count_left_out() {
        let log = RefusalLog::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let alice = Refusal::User {
            uid: 1000,
            limit: 64,
        };
        let bob = Refusal::User {
            uid: 1001,
            limit: 64,
        };
        assert_eq!(log.note(&alice, t0), Some(0));
        for _ in 0..500 {
            assert_eq!(log.note(&alice, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(log.note(&bob, t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(log.note(&alice, t0 + Duration::from_secs(61)), Some(500));
        assert_eq!(log.note(&alice, t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn running_out_of_descriptors_does_not_stop_the_accept_loop_but_a_broken_listener_does() {
        let os = io::Error::from_raw_os_error;
        assert!(accept_error_is_transient(&os(nix::libc::EMFILE)));
        assert!(accept_error_is_transient(&os(nix::libc::ECONNABORTED)));
        assert!(!accept_error_is_transient(&os(nix::libc::EBADF)));
        assert!(!accept_error_is_transient(&os(nix::libc::EINVAL)));
    }

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit};
        let soft = raise_open_files_limit();
        let (now, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, now);
        assert!(now == hard || hard == nix::sys::resource::RLIM_INFINITY);
    }
}

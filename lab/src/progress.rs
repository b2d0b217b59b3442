//! Progress for long lab operations: step names and elapsed seconds on stderr, with a heartbeat line
//! while a step runs so logs show the build is alive.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a running step says it is still running: often enough that a CI log never looks stuck,
/// rarely enough to stay readable over a 3-minute mmdebstrap.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// Prints `[name] ...` lines to stderr.
#[derive(Debug)]
pub struct Progress {
    prefix: &'static str,
}

impl Progress {
    pub fn new(prefix: &'static str) -> Self {
        Self { prefix }
    }

    /// A one-off message.
    pub fn say(&self, msg: &str) {
        eprintln!("{}: {msg}", self.prefix);
    }

    /// Runs `f` as a named step: prints its start, a heartbeat while it runs, and its duration.
    pub fn step<T, E>(&self, name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        eprintln!("{}: {name} ...", self.prefix);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(HEARTBEAT) {
                    eprintln!(
                        "{}: {name}: still running ({} s)",
                        self.prefix,
                        start.elapsed().as_secs()
                    );
                }
            });
            let r = f();
            drop(done_tx);
            r
        });
        let secs = start.elapsed().as_secs_f64();
        match &result {
            Ok(_) => eprintln!("{}: {name}: done in {secs:.1} s", self.prefix),
            Err(_) => eprintln!("{}: {name}: FAILED after {secs:.1} s", self.prefix),
        }
        result
    }
}

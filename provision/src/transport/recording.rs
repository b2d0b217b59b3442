//! `RecordingTransport`: a scripted fake node for unit tests. Commands are answered by rules (a regex and
//! a response, which may read and change a small fake state); files live in memory; every call is recorded.

use super::{ExecOutput, Transport, TransportError};
use async_trait::async_trait;
use beowulf_types::NodeName;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One call made to the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Exec(String),
    PutFile {
        path: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    ReadFile(String),
}

/// What the fake node "has": files (with modes) and free-form marks set by rules (`"rxe0"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeState {
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
    pub marks: BTreeSet<String>,
}

type Respond = Arc<dyn Fn(&str, &mut FakeState) -> ExecOutput + Send + Sync>;

struct Rule {
    pattern: Regex,
    respond: Respond,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    state: FakeState,
    calls: Vec<Call>,
}

/// A fake node. Clones share rules, state and the call log.
#[derive(Clone)]
pub struct RecordingTransport {
    node: NodeName,
    inner: Arc<Mutex<Inner>>,
    latency: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RecordingTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl RecordingTransport {
    /// A fake node with no rules: every command exits 127.
    pub fn new(node: impl Into<NodeName>) -> Self {
        Self {
            node: node.into(),
            inner: Arc::default(),
            latency: Duration::ZERO,
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        }
    }

    /// Answers commands matching `pattern` (a regex, searched) with `output`. Later rules win.
    pub fn on(self, pattern: &str, output: ExecOutput) -> Self {
        self.on_fn(pattern, move |_, _| output.clone())
    }

    /// Answers commands matching `pattern` by calling `respond`, which may change the fake state.
    pub fn on_fn(
        self,
        pattern: &str,
        respond: impl Fn(&str, &mut FakeState) -> ExecOutput + Send + Sync + 'static,
    ) -> Self {
        let pattern =
            Regex::new(pattern).unwrap_or_else(|e| panic!("bad test pattern {pattern}: {e}"));
        self.lock().rules.push(Rule {
            pattern,
            respond: Arc::new(respond),
        });
        self
    }

    /// Makes every call take `latency` (for tests of parallelism), counting calls in flight in
    /// `counters` = (now, maximum), which several fakes may share.
    pub fn with_latency(
        mut self,
        latency: Duration,
        counters: (Arc<AtomicUsize>, Arc<AtomicUsize>),
    ) -> Self {
        self.latency = latency;
        self.in_flight = counters.0;
        self.max_in_flight = counters.1;
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The commands run so far, in order.
    pub fn commands(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Exec(cmd) => Some(cmd),
                _ => None,
            })
            .collect()
    }

    /// Forgets the call log (state and rules stay).
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// A copy of the fake state.
    pub fn state(&self) -> FakeState {
        self.lock().state.clone()
    }

    /// Changes the fake state directly (a file already present, a mark already set).
    pub fn set_state(&self, change: impl FnOnce(&mut FakeState)) {
        change(&mut self.lock().state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn enter(&self) {
        if self.latency.is_zero() {
            return;
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Transport for RecordingTransport {
    fn node(&self) -> &NodeName {
        &self.node
    }

    async fn exec(&self, command: &str) -> Result<ExecOutput, TransportError> {
        self.enter().await;
        let mut inner = self.lock();
        inner.calls.push(Call::Exec(command.to_string()));
        let respond = inner
            .rules
            .iter()
            .rev()
            .find(|r| r.pattern.is_match(command))
            .map(|r| r.respond.clone());
        Ok(match respond {
            Some(respond) => respond(command, &mut inner.state),
            None => ExecOutput::fail(127, format!("recording transport: no rule for `{command}`")),
        })
    }

    async fn put_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), TransportError> {
        self.enter().await;
        let mut inner = self.lock();
        inner.calls.push(Call::PutFile {
            path: path.to_string(),
            bytes: bytes.to_vec(),
            mode,
        });
        inner
            .state
            .files
            .insert(path.to_string(), (bytes.to_vec(), mode));
        Ok(())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, TransportError> {
        self.enter().await;
        let mut inner = self.lock();
        inner.calls.push(Call::ReadFile(path.to_string()));
        Ok(inner.state.files.get(path).map(|(b, _)| b.clone()))
    }
}

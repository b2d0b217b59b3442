//! Output forwarding: a job whose tasks run on several nodes has one writer node (its first),
//! whose tasks append to the job's files themselves; every other node's tasks write into pipes,
//! and their agent forwards whole lines to the writer's agent (AgentLaunch.Output), which appends
//! them to the same files as the user. Several NFS clients appending to one file overwrite each
//! other's lines (measured in the lab: only the first node's were left); one client keeps them
//! all, as Slurm's srun does by gathering every task's output.
//!
//! ```text
//!  task ─pipe─▶ reader (one per pipe): whole lines ─▶ the run's queue (bounded: a task that
//!        writes faster than the writer takes it waits, as on a slow file)
//!  queue ─▶ sender: a batch of what is queued ─▶ Output(sequence, chunks) ─▶ writer's agent:
//!        append to the stdout/stderr file (opened once, as the user) ─▶ answer ─▶ next batch
//!  every pipe at its end, every batch answered ─▶ done: the run's end is reported to the head
//! ```

use super::wired::same_secret;
use super::{Agent, LaunchPeer, LaunchRefusal, State};
use crate::assignment::Assignment;
use crate::launcher::{Launcher, TaskPipes, open_output_as};
use crate::mpi;
use beowulf_proto::v1;
use beowulf_types::{JobId, NodeName, RunKey};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

/// Longest piece of a line forwarded on its own: a task that writes a long line without a
/// newline has it forwarded in pieces rather than held in the agent.
const MAX_PIECE: usize = 64 * 1024;
/// Largest batch: what queued up while the previous batch was on its way, up to this (well under
/// gRPC's 4 MiB message limit).
const MAX_BATCH: usize = 1024 * 1024;
/// Pieces queued per run before its readers stop reading (and its tasks wait on their writes).
pub(super) const QUEUE: usize = 64;
/// How long a node keeps trying the writer: the writer may not know the run yet (the head tells
/// every node at once, but one acts some milliseconds later) or be restarting.
const WRITER_RETRY_FOR: Duration = Duration::from_secs(30);
const WRITER_RETRY_FIRST: Duration = Duration::from_millis(20);
const WRITER_RETRY_MAX: Duration = Duration::from_millis(500);
/// How long the report of a run that ended here waits for its output to reach the writer. Longer
/// only when a process the task left behind still holds the pipe (its later output is still
/// forwarded, until the run is killed).
pub(super) const DRAIN_FOR: Duration = Duration::from_secs(5);

/// Why a run's output could not be forwarded to its writer or written there.
#[derive(Debug, thiserror::Error)]
enum OutputError {
    #[error("cannot open output file {} of job {job} as uid {uid}: {source}", path.display())]
    Open {
        path: PathBuf,
        job: JobId,
        uid: u32,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] mpi::ConnectError),
    #[error("{writer} refused output batch {sequence} of job {run}: {message}")]
    Refused {
        writer: NodeName,
        run: RunKey,
        sequence: u64,
        message: String,
    },
}

/// Where a run's output goes from this node.
#[derive(Debug, Clone)]
struct Target {
    key: RunKey,
    node_index: u32,
    writer: NodeName,
    endpoint: String,
    token: String,
    /// TLS to the writer's agent (`None`: plaintext).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Some of one task's output: whole lines, or a piece of a long one.
#[derive(Debug)]
pub(super) struct Piece {
    pub(super) stderr: bool,
    pub(super) data: Vec<u8>,
}

/// How long the writer still takes a run's output after the run ended here: when the job fails,
/// the head ends it on every node at once, and the other nodes' last lines (often the error
/// that explains the failure) are still on their way.
const WRITER_LINGER: Duration = Duration::from_secs(10);

/// What the writer keeps of a run whose output other nodes forward to it.
#[derive(Debug)]
pub(super) struct WriterRun {
    /// The run's assignment here: its credential, files and user.
    a: Assignment,
    files: tokio::sync::Mutex<WriterFiles>,
}

#[derive(Debug, Default)]
struct WriterFiles {
    /// The stdout file and, when it is another one, the stderr file; opened at the first batch.
    open: Option<(Arc<File>, Option<Arc<File>>)>,
    /// Per sending node, the last sequence written.
    written: BTreeMap<u32, u64>,
}

/// True when this node's tasks of the run send their output to the writer instead of writing
/// the job's files themselves.
pub(super) fn forwards_output(a: &Assignment) -> bool {
    a.output
        .as_ref()
        .is_some_and(|o| o.writer_index != a.node_index)
}

impl<L: Launcher> Agent<L> {
    /// Starts forwarding a run's output from this node, when its tasks here forward it: the
    /// returned queue is handed to each task's pipes ([`attach_output`]) and then dropped; the run
    /// is done forwarding once every pipe ended and every batch was written.
    pub(super) fn begin_forwarding(
        &self,
        state: &mut State,
        key: RunKey,
        a: &Assignment,
    ) -> Option<mpsc::Sender<Piece>> {
        if !forwards_output(a) {
            return None;
        }
        let output = a.output.as_ref()?;
        let target = Target {
            key,
            node_index: a.node_index,
            writer: output.writer.clone(),
            endpoint: output.writer_endpoint.clone(),
            token: output.token.clone(),
            tls: self
                .launch_client_tls()
                .map_err(|e| tracing::error!(job = %key.job, error = %e, "cannot read the TLS files for forwarding output"))
                .ok()
                .flatten(),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = watch::channel(false);
        state.forwarding.insert(key, done_rx);
        tokio::spawn(send_pieces(rx, target, done_tx));
        Some(tx)
    }

    /// Takes the output of the run's other nodes from now on, when this node writes its files
    /// (called as the run starts here). Takes the locked state as proof that it is called under
    /// the state lock, which [`Self::writer_of`] relies on.
    pub(super) fn begin_writing(&self, _locked: &mut State, key: RunKey, a: &Assignment) {
        if a.output
            .as_ref()
            .is_some_and(|o| o.writer_index == a.node_index)
        {
            self.outputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(WriterRun {
                        a: a.clone(),
                        files: tokio::sync::Mutex::default(),
                    })
                });
        }
    }

    /// Output of other nodes' tasks of a job whose files this node writes (AgentLaunch).
    pub async fn output(
        &self,
        peer: &LaunchPeer,
        request: v1::OutputRequest,
    ) -> Result<v1::OutputReply, LaunchRefusal> {
        let key = request.run_key();
        let run = self
            .wait_for_run(|| self.writer_of(key, &request.token))
            .await?;
        // Each node sends its own tasks' output: a node may not write as another.
        peer.may_act_for(&run.a, Some(request.node_index))?;
        let mut files = run.files.lock().await;
        if files
            .written
            .get(&request.node_index)
            .is_some_and(|&last| last >= request.sequence)
        {
            return Ok(v1::OutputReply {});
        }
        let open = match &files.open {
            Some(open) => open.clone(),
            None => {
                let a = run.a.clone();
                let open = tokio::task::spawn_blocking(move || open_files(&a))
                    .await
                    .map_err(|e| LaunchRefusal::Failed(format!("opening output panicked: {e}")))?
                    .map_err(|e| LaunchRefusal::Failed(e.to_string()))?;
                files.open = Some(open.clone());
                open
            }
        };
        tokio::task::spawn_blocking(move || append(&open, &request.chunks))
            .await
            .map_err(|e| LaunchRefusal::Failed(format!("writing output panicked: {e}")))?
            .map_err(|e| {
                LaunchRefusal::Failed(format!("cannot write output of job {}: {e}", key.job))
            })?;
        files.written.insert(request.node_index, request.sequence);
        Ok(v1::OutputReply {})
    }

    /// The run whose output this node writes, when the request carries its credential.
    fn writer_of(&self, key: RunKey, token: &str) -> Result<Arc<WriterRun>, LaunchRefusal> {
        let node = &self.config.node_name;
        let writing = || {
            self.outputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
        };
        // Runs start (and `begin_writing`) under the state lock: looked at again under it, a run
        // being started right now is either desired and written here, or not desired yet.
        let found = writing().map_or_else(
            || {
                let state = self.lock();
                (writing(), state.desired.contains_key(&key))
            },
            |run| (Some(run), true),
        );
        let (run, desired) = found;
        let Some(run) = run else {
            return Err(if desired {
                LaunchRefusal::NotWriter(format!("{node} does not write the output of job {key}"))
            } else {
                LaunchRefusal::NotHere(format!("job {key} is not running on {node}"))
            });
        };
        let expected = run.a.output.as_ref().map(|o| o.token.as_str());
        if !same_secret(token, expected.unwrap_or_default()) {
            return Err(LaunchRefusal::BadCredential(format!(
                "the credential does not match job {key} on {node}"
            )));
        }
        Ok(run)
    }

    /// Forgets a run's output: what it forwards at once, the files it writes for the other
    /// nodes after [`WRITER_LINGER`].
    pub(super) fn forget_output(&self, state: &mut State, key: RunKey) {
        state.forwarding.remove(&key);
        // Most runs write their own files: nothing to keep, no timer on every job's end.
        let writes = self
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key);
        let Some(agent) = self.me.upgrade().filter(|_| writes) else {
            return;
        };
        let forget = move || {
            agent
                .outputs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(WRITER_LINGER).await;
                    forget();
                });
            }
            Err(_) => forget(),
        }
    }
}

/// Starts forwarding what a task writes into its pipes.
pub(super) fn attach_output(pipes: TaskPipes, queue: &mpsc::Sender<Piece>) {
    tokio::spawn(read_pipe(pipes.stdout, false, queue.clone()));
    if let Some(stderr) = pipes.stderr {
        tokio::spawn(read_pipe(stderr, true, queue.clone()));
    }
}

/// Reads one pipe to its end, queueing whole lines (or pieces of long ones). Keeps reading when
/// the output can no longer be forwarded, so the task never blocks on a full pipe.
async fn read_pipe(fd: OwnedFd, stderr: bool, queue: mpsc::Sender<Piece>) {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        Ok(pipe) => pipe,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a task's output pipe");
            return;
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; MAX_PIECE];
    let mut forwarding = true;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading a task's output failed");
                break;
            }
        };
        if !forwarding {
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        // Up to the last whole line: the writer appends pieces of different tasks as they come,
        // so a piece that ended inside a line would have another task's line in its middle.
        let cut = match pending.iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None if pending.len() >= MAX_PIECE => pending.len(),
            None => 0,
        };
        if cut > 0 {
            let rest = pending.split_off(cut);
            let data = std::mem::replace(&mut pending, rest);
            forwarding = queue.send(Piece { stderr, data }).await.is_ok();
        }
    }
    if forwarding && !pending.is_empty() {
        let _ = queue
            .send(Piece {
                stderr,
                data: pending,
            })
            .await;
    }
}

/// Sends the run's queued output to the writer, one batch at a time, until every reader ended;
/// then says it is done.
async fn send_pieces(mut queue: mpsc::Receiver<Piece>, target: Target, done: watch::Sender<bool>) {
    let mut client = None;
    let mut sequence = 0;
    let mut lost = false;
    while let Some(first) = queue.recv().await {
        if lost {
            continue;
        }
        let mut size = first.data.len();
        let mut chunks = vec![chunk(first)];
        while size < MAX_BATCH {
            let Ok(piece) = queue.try_recv() else { break };
            size += piece.data.len();
            chunks.push(chunk(piece));
        }
        sequence += 1;
        let request = v1::OutputRequest {
            job_id: target.key.job.0,
            run: target.key.run,
            token: target.token.clone(),
            node_index: target.node_index,
            sequence,
            chunks,
        };
        if let Err(e) = send_batch(&mut client, &target, request).await {
            tracing::warn!(job = %target.key.job, run = target.key.run, error = %e, "cannot forward the job's output: the rest of it from this node is lost");
            lost = true;
        }
    }
    let _ = done.send(true);
}

fn chunk(piece: Piece) -> v1::OutputChunk {
    v1::OutputChunk {
        stderr: piece.stderr,
        data: piece.data,
    }
}

/// Sends one batch, trying again while the writer does not know the run yet or cannot be reached.
async fn send_batch(
    client: &mut Option<v1::agent_launch_client::AgentLaunchClient<tonic::transport::Channel>>,
    target: &Target,
    request: v1::OutputRequest,
) -> Result<(), OutputError> {
    let deadline = tokio::time::Instant::now() + WRITER_RETRY_FOR;
    let mut pause = WRITER_RETRY_FIRST;
    loop {
        let error = match client {
            Some(c) => match c.output(request.clone()).await {
                Ok(_) => return Ok(()),
                Err(status) => {
                    let retry = matches!(
                        status.code(),
                        tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Unknown
                    );
                    let refused = OutputError::Refused {
                        writer: target.writer.clone(),
                        run: target.key,
                        sequence: request.sequence,
                        message: status.message().to_string(),
                    };
                    if !retry {
                        return Err(refused);
                    }
                    if status.code() != tonic::Code::NotFound {
                        *client = None;
                    }
                    refused
                }
            },
            None => {
                match mpi::connect_launch(
                    &target.endpoint,
                    target.writer.as_str(),
                    target.tls.as_ref(),
                )
                .await
                {
                    Ok(c) => {
                        *client = Some(c);
                        continue;
                    }
                    Err(e) => e.into(),
                }
            }
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tracing::debug!(job = %target.key.job, %error, "the writer does not take the output yet: trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(WRITER_RETRY_MAX);
    }
}

/// Opens the job's output files as its user (one file when stdout and stderr name the same).
fn open_files(a: &Assignment) -> Result<(Arc<File>, Option<Arc<File>>), OutputError> {
    let user = super::credentials_of(a);
    let open = |name: &Path| {
        let path = a.workdir.join(name);
        open_output_as(&path, &user, a.umask)
            .map(Arc::new)
            .map_err(|source| OutputError::Open {
                path,
                job: a.key.job,
                uid: a.uid,
                source,
            })
    };
    let stdout = open(&a.stdout_path)?;
    let stderr = if a.stderr_path == a.stdout_path {
        None
    } else {
        Some(open(&a.stderr_path)?)
    };
    Ok((stdout, stderr))
}

/// Appends a batch: consecutive chunks for the same file in one write each, so that every write
/// holds whole lines and lands whole beside the writer's own tasks' appends.
fn append(
    (stdout, stderr): &(Arc<File>, Option<Arc<File>>),
    chunks: &[v1::OutputChunk],
) -> std::io::Result<()> {
    let file_of = |chunk: &v1::OutputChunk| match (chunk.stderr, stderr) {
        (true, Some(stderr)) => stderr,
        _ => stdout,
    };
    let mut start = 0;
    while start < chunks.len() {
        let file = file_of(&chunks[start]);
        let end = chunks[start..]
            .iter()
            .position(|c| !Arc::ptr_eq(file_of(c), file))
            .map_or(chunks.len(), |n| start + n);
        let data: Vec<u8> = chunks[start..end]
            .iter()
            .flat_map(|c| c.data.iter().copied())
            .collect();
        (&**file).write_all(&data)?;
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stderr: bool, data: &str) -> v1::OutputChunk {
        v1::OutputChunk {
            stderr,
            data: data.as_bytes().to_vec(),
        }
    }

    #[test]
    fn batches_go_to_their_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = Arc::new(File::create(dir.path().join("out")).unwrap());
        let err = Arc::new(File::create(dir.path().join("err")).unwrap());
        let chunks = [
            chunk(false, "a\n"),
            chunk(false, "b\n"),
            chunk(true, "e1\n"),
            chunk(false, "c\n"),
            chunk(true, "e2\n"),
        ];
        append(&(out.clone(), Some(err)), &chunks).unwrap();
        let read = |name| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("out"), "a\nb\nc\n");
        assert_eq!(read("err"), "e1\ne2\n");
        // One file for both: every chunk in it, in order.
        append(&(out, None), &chunks).unwrap();
        assert_eq!(read("out"), "a\nb\nc\na\nb\ne1\nc\ne2\n");
    }

    #[tokio::test]
    async fn pipes_are_read_as_whole_lines_and_to_their_end() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (read, write) = nix::unistd::pipe().unwrap();
        let reader = tokio::spawn(read_pipe(read, true, tx));
        let mut write = File::from(write);
        write.write_all(b"one\ntw").unwrap();
        let piece = rx.recv().await.unwrap();
        assert_eq!((piece.stderr, piece.data.as_slice()), (true, &b"one\n"[..]));
        write.write_all(b"o\nthree").unwrap();
        let piece = rx.recv().await.unwrap();
        assert_eq!(piece.data, b"two\n");
        // The unterminated last line comes at the end of the pipe.
        drop(write);
        assert_eq!(rx.recv().await.unwrap().data, b"three");
        reader.await.unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_read_of_short_lines_is_cut_at_a_line_end() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (read, write) = nix::unistd::pipe().unwrap();
        tokio::spawn(read_pipe(read, false, tx));
        // More than a read's worth of 6-byte lines: reads end inside lines.
        let lines: Vec<u8> = (10_000..90_000)
            .flat_map(|n: u32| format!("{n}\n").into_bytes())
            .collect();
        let expected = lines.clone();
        let writer = std::thread::spawn(move || File::from(write).write_all(&lines).unwrap());
        let mut all = Vec::new();
        while let Some(piece) = rx.recv().await {
            assert_eq!(
                piece.data.last(),
                Some(&b'\n'),
                "a piece ends inside a line"
            );
            all.extend(piece.data);
        }
        writer.join().unwrap();
        assert!(all == expected);
    }

    #[tokio::test]
    async fn long_lines_come_in_pieces() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (read, write) = nix::unistd::pipe().unwrap();
        tokio::spawn(read_pipe(read, false, tx));
        let line = vec![b'x'; 3 * MAX_PIECE];
        let writer = std::thread::spawn(move || {
            let mut write = File::from(write);
            write.write_all(&line).unwrap();
        });
        let mut total = 0;
        while let Some(piece) = rx.recv().await {
            assert!(piece.data.len() <= 2 * MAX_PIECE, "{}", piece.data.len());
            total += piece.data.len();
        }
        writer.join().unwrap();
        assert_eq!(total, 3 * MAX_PIECE);
    }
}

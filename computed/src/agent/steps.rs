//! Job steps: `srun` in a batch script starts a step's tasks on the job's nodes through their
//! agents, and gets their output and their ends streamed back (AgentLaunch.Step).
//!
//! ```text
//!  srun ──local socket (uid)──▶ this node's agent: run here? caller the run's user (or root)?
//!        StepInput::start          credential? nodes the job's, tasks within its CPUs?
//!                                  numbers the step (0, 1, ... per run) ─▶ Started(step)
//!                                  │ one part per node of the step, this one included:
//!                                  ├─ here: run_part ───────────────────────────┐
//!                                  └─ other node: Step over mutual TLS ─▶ its    │ output, ends
//!                                     agent checks the same and runs its part ───┤
//!  srun ◀── StepEvent stream ◀── merged ◀────────────────────────────────────────┘
//!  srun's signals (StepInput::signal) ─▶ every part ─▶ each running task's session
//!  srun gone (its input ended) ─▶ every part kills its tasks (SIGKILL) and ends
//! ```
//!
//! From outside the job's nodes (`srun` in a `salloc` shell, or one that allocated its job) the
//! step comes from the head, which checked the caller, over mutual TLS to the job's first node:
//! that agent then acts as srun's own node would. A `--pty` step's one task runs on a new
//! pseudo-terminal (`terminal.rs`): its keys and size changes come as inputs like the signals.
//!
//! A step's tasks run in the job's cgroup as the job's user, like its batch script: they count
//! against the job's CPUs and memory, and die with the job. They are not tasks of the agent's
//! ledger: the run ends when its batch script ends, whatever steps are still running, as in
//! Slurm.

use super::output::{Piece, attach_output};
use super::terminal::{self, Terminal};
use super::{Agent, LaunchPeer, LaunchRefusal, output};
use crate::assignment::{Assignment, StepLaunch};
use crate::launcher::{Launcher, TaskExit, TaskOutput, TerminalSize};
use crate::mpi;
use beowulf_proto::v1::{self, step_event, step_input};
use beowulf_types::{JobId, NodeName, RunKey, TaskKey, hostlist};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Step tasks get task keys ("ranks") from here up, apart from the job's ranks and the MPI
/// daemons started on request (from 1 << 30): they only name log lines.
const STEP_TASK_BASE: u32 = 1 << 29;
/// The most bytes of arguments and environment a step request may carry: the job file's own
/// limit for its command and environment, so a step is no bigger than a job.
const MAX_STEP_BYTES: usize = 1 << 20;
/// Events queued per step before its tasks' output waits (as on a slow terminal).
const EVENT_QUEUE: usize = 256;
/// srun's inputs queued per step: signals (Ctrl-C, SIGTERM) and, for a `--pty` step, keys and
/// size changes; a part that falls further behind loses the oldest (the keys of a paste bigger
/// than this many reads of srun's stdin).
const INPUT_QUEUE: usize = 256;

/// What srun sends a running step.
#[derive(Debug, Clone)]
enum Control {
    Signal(i32),
    Stdin(Vec<u8>),
    Resize(TerminalSize),
}

/// The events of one step, as srun reads them.
pub type StepEvents = tokio_stream::wrappers::ReceiverStream<Result<v1::StepEvent, Status>>;

/// One node's part of a checked step request.
#[derive(Debug, Clone)]
struct Part {
    node: NodeName,
    /// The part's ranks of the step: they count from the step's first node on.
    ranks: std::ops::Range<u32>,
}

/// A step request checked against the run's assignment on this node.
#[derive(Debug, Clone)]
struct CheckedStep {
    parts: Vec<Part>,
    tasks: u32,
}

impl<L: Launcher> Agent<L> {
    /// The batch-script run a step request names, when it runs here, the request carries its
    /// credential and `peer` may act for it.
    fn step_run(
        &self,
        key: RunKey,
        token: &str,
        peer: &LaunchPeer,
    ) -> Result<(Assignment, StepLaunch), LaunchRefusal> {
        let node = &self.config.node_name;
        let a =
            self.lock().desired.get(&key).cloned().ok_or_else(|| {
                LaunchRefusal::NotHere(format!("job {key} is not running on {node}"))
            })?;
        let Some(steps) = a.steps.clone() else {
            return Err(LaunchRefusal::Invalid(format!(
                "job {} is not a batch script: only a batch script's srun starts job steps",
                key.job
            )));
        };
        if !super::wired::same_secret(token, &steps.token) {
            return Err(LaunchRefusal::BadCredential(format!(
                "the launch credential does not match job {key} on {node}"
            )));
        }
        peer.may_act_for(&a, None)?;
        if super::wired::is_wired(&a) {
            return Err(LaunchRefusal::Invalid(format!(
                "job {} runs in a container: srun in a container's batch script is not supported yet; \
                 submit the command as the job's own command (its tasks run in containers on every node)",
                key.job
            )));
        }
        Ok((a, steps))
    }

    /// srun's step request on this node's local socket: checked, numbered, and sent to every node
    /// of the step (this one included); their events come back merged, the step's number first.
    pub async fn step_from_here<S>(
        self: &Arc<Self>,
        peer: LaunchPeer,
        request: v1::StepRequest,
        inputs: S,
    ) -> Result<StepEvents, LaunchRefusal>
    where
        S: Stream<Item = Result<v1::StepInput, Status>> + Send + Unpin + 'static,
    {
        let key = RunKey {
            job: JobId(request.job_id),
            run: request.run,
        };
        let (a, steps) = self
            .wait_for_run(|| self.step_run(key, &request.token, &peer))
            .await?;
        let checked = check_step(&a, &request)?;
        let step = {
            let mut state = self.lock();
            let next = state.next_step.entry(key).or_default();
            *next += 1;
            *next - 1
        };
        tracing::info!(job = %key.job, run = key.run, step, tasks = checked.tasks, nodes = checked.parts.len(), "starting a job step");
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let _ = events
            .send(Ok(v1::StepEvent {
                body: Some(step_event::Body::Started(step)),
            }))
            .await;
        let signals = forward_inputs(inputs);
        let tls = self
            .launch_client_tls()
            .map_err(|e| LaunchRefusal::Failed(e.to_string()))?;
        for part in checked.parts {
            let mut request = request.clone();
            request.step_id = step;
            request.node = part.node.as_str().to_string();
            let events = events.clone();
            let signals = signals.subscribe();
            let agent = Arc::clone(self);
            if part.node.as_str() == self.config.node_name {
                let a = a.clone();
                let step_tasks = checked.tasks;
                tokio::spawn(async move {
                    agent
                        .run_part(&a, &request, step_tasks, part.ranks, signals, events)
                        .await;
                });
                continue;
            }
            let endpoint = steps.endpoints.get(&part.node).cloned();
            let tls = tls.clone();
            tokio::spawn(async move {
                let ranks = part.ranks.clone();
                let result =
                    remote_part(endpoint, &part.node, tls, request, signals, &events).await;
                if let Err(why) = result {
                    tracing::warn!(job = %key.job, step, node = %part.node, %why, "a node's part of the step failed");
                    for rank in ranks {
                        let _ = events.send(Ok(task_end(rank, 255, why.clone()))).await;
                    }
                }
            });
        }
        Ok(StepEvents::new(receiver))
    }

    /// Another node's agent asks this one to run its part of a step (over mutual TLS).
    pub async fn step_for_node<S>(
        self: &Arc<Self>,
        peer: &LaunchPeer,
        request: v1::StepRequest,
        inputs: S,
    ) -> Result<StepEvents, LaunchRefusal>
    where
        S: Stream<Item = Result<v1::StepInput, Status>> + Send + Unpin + 'static,
    {
        let key = RunKey {
            job: JobId(request.job_id),
            run: request.run,
        };
        let (a, _) = self
            .wait_for_run(|| self.step_run(key, &request.token, peer))
            .await?;
        if request.node != self.config.node_name {
            return Err(LaunchRefusal::NotAllowed(format!(
                "a step part for node {:?} was sent to {}",
                request.node, self.config.node_name
            )));
        }
        let checked = check_step(&a, &request)?;
        let part = checked
            .parts
            .iter()
            .find(|p| p.node.as_str() == self.config.node_name)
            .cloned()
            .ok_or_else(|| {
                LaunchRefusal::Invalid(format!(
                    "step {} of job {} has no tasks on {}",
                    request.step_id, key.job, self.config.node_name
                ))
            })?;
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let signals = forward_inputs(inputs).subscribe();
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            agent
                .run_part(&a, &request, checked.tasks, part.ranks, signals, events)
                .await;
        });
        Ok(StepEvents::new(receiver))
    }

    /// Runs this node's tasks of a step to their ends, sending their output and ends to
    /// `events`; forwards `signals` to them, and kills them when srun is gone (the signals
    /// closed, or nobody reads the events).
    async fn run_part(
        &self,
        a: &Assignment,
        request: &v1::StepRequest,
        step_tasks: u32,
        ranks: std::ops::Range<u32>,
        mut signals: broadcast::Receiver<Control>,
        events: mpsc::Sender<Result<v1::StepEvent, Status>>,
    ) {
        let key = a.key;
        let step = request.step_id;
        if let Err(e) = self.launcher.prepare_job(key, &self.job_limits(a)) {
            for rank in ranks {
                let _ = events.send(Ok(task_end(rank, 126, e.to_string()))).await;
            }
            return;
        }
        let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<TaskExit>();
        // Per running task: its step rank, pid, and the end of its output.
        let mut running: BTreeMap<TaskKey, (u32, u32, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        let terminal_size = request.terminal.as_ref().map(terminal::size_of);
        let mut terminal: Option<Terminal> = None;
        for rank in ranks.clone() {
            let task_key = {
                let mut state = self.lock();
                state.step_tasks = state.step_tasks.wrapping_add(1) % STEP_TASK_BASE;
                key.task(STEP_TASK_BASE + state.step_tasks)
            };
            let mut task = self.task_launch(a, key, a.ranks.start);
            task.key = task_key;
            task.argv.clone_from(&request.argv);
            task.env = self
                .step_env(request, step_tasks, rank, rank - ranks.start)
                .into_iter()
                .collect();
            task.workdir = PathBuf::from(&request.workdir);
            task.output = terminal_size.map_or(TaskOutput::Streams, TaskOutput::Terminal);
            match self.launcher.start_task(task, exit_tx.clone()) {
                Ok(started) => {
                    let forwarder = match started.pipes {
                        Some(pipes) if terminal_size.is_some() => {
                            match Terminal::attach(pipes.stdout, rank, events.clone()) {
                                Ok((attached, reader)) => {
                                    terminal = Some(attached);
                                    reader
                                }
                                Err(e) => {
                                    tracing::warn!(job = %key.job, step, error = %e, "cannot read the step's terminal");
                                    tokio::spawn(async {})
                                }
                            }
                        }
                        Some(pipes) => {
                            let (queue, pieces) = mpsc::channel(output::QUEUE);
                            attach_output(pipes, &queue);
                            drop(queue);
                            tokio::spawn(send_output(rank, pieces, events.clone()))
                        }
                        None => tokio::spawn(async {}),
                    };
                    self.lock()
                        .step_tasks_running
                        .entry(key)
                        .or_default()
                        .insert(task_key, started.pid);
                    running.insert(task_key, (rank, started.pid, forwarder));
                }
                Err(e) => {
                    tracing::info!(job = %key.job, step, rank, error = %e, "a step task did not start");
                    let exit = TaskExit::not_started(task_key, &e);
                    let _ = events
                        .send(Ok(task_end(rank, exit.code, exit.detail)))
                        .await;
                }
            }
        }
        drop(exit_tx);
        let mut srun_gone = false;
        while !running.is_empty() {
            tokio::select! {
                exit = exit_rx.recv() => {
                    let Some(exit) = exit else { break };
                    let Some((rank, _, forwarder)) = running.remove(&exit.key) else { continue };
                    if let Some(tasks) = self.lock().step_tasks_running.get_mut(&key) {
                        tasks.remove(&exit.key);
                    }
                    // Its output first, then its end; a process it left holding the pipe does
                    // not hold the end back for long.
                    let _ = tokio::time::timeout(output::DRAIN_FOR, forwarder).await;
                    tracing::debug!(job = %key.job, step, rank, code = exit.code, "a step task ended");
                    let _ = events.send(Ok(task_end(rank, exit.code, exit.detail))).await;
                }
                control = signals.recv(), if !srun_gone => match control {
                    Ok(Control::Signal(number)) => match Signal::try_from(number) {
                        Ok(signal) => {
                            for (task, (_, pid, _)) in &running {
                                self.launcher.signal_task(*task, *pid, signal, true);
                            }
                        }
                        Err(_) => tracing::debug!(job = %key.job, step, number, "srun sent no signal"),
                    },
                    Ok(Control::Stdin(data)) => {
                        if let Some(terminal) = &terminal {
                            terminal.type_in(data);
                        }
                    }
                    Ok(Control::Resize(size)) => {
                        if let Some(terminal) = &terminal {
                            terminal.resize(size);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        srun_gone = true;
                        self.kill_part(key, step, &running);
                    }
                },
                () = events.closed(), if !srun_gone => {
                    srun_gone = true;
                    self.kill_part(key, step, &running);
                }
            }
        }
    }

    /// Kills a step's running tasks on this node: their srun is gone.
    fn kill_part(
        &self,
        key: RunKey,
        step: u32,
        running: &BTreeMap<TaskKey, (u32, u32, tokio::task::JoinHandle<()>)>,
    ) {
        if running.is_empty() {
            return;
        }
        tracing::info!(job = %key.job, step, tasks = running.len(), "srun of the step is gone: killing its tasks here");
        for (task, (_, pid, _)) in running {
            self.launcher
                .signal_task(*task, *pid, Signal::SIGKILL, true);
        }
    }

    /// The environment of a step's task `rank` (`local` on this node): srun's, with the step's
    /// and the task's Slurm variables.
    fn step_env(
        &self,
        request: &v1::StepRequest,
        step_tasks: u32,
        rank: u32,
        local: u32,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = request
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.entry("PATH".into())
            .or_insert_with(|| super::DEFAULT_PATH.into());
        let node = &self.config.node_name;
        let node_id = request
            .nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_default();
        let per_node = tasks_per_node_text(&request.tasks_per_node);
        let nodelist = hostlist::compress(&request.nodes);
        let vars = [
            ("SLURM_STEP_ID", request.step_id.to_string()),
            ("SLURM_STEPID", request.step_id.to_string()),
            ("SLURM_STEP_NODELIST", nodelist),
            ("SLURM_STEP_NUM_NODES", request.nodes.len().to_string()),
            ("SLURM_STEP_NUM_TASKS", step_tasks.to_string()),
            ("SLURM_STEP_TASKS_PER_NODE", per_node.clone()),
            ("SLURM_NNODES", request.nodes.len().to_string()),
            ("SLURM_NTASKS", step_tasks.to_string()),
            ("SLURM_NPROCS", step_tasks.to_string()),
            ("SLURM_TASKS_PER_NODE", per_node),
            (
                "SLURM_CPUS_PER_TASK",
                request.cpus_per_task.max(1).to_string(),
            ),
            ("SLURM_PROCID", rank.to_string()),
            ("SLURM_LOCALID", local.to_string()),
            ("SLURM_NODEID", node_id.to_string()),
            ("SLURMD_NODENAME", node.clone()),
            ("BEOWULF_NODE", node.clone()),
        ];
        env.extend(vars.into_iter().map(|(k, v)| (k.to_string(), v)));
        env
    }
}

/// Checks a step request against the run's assignment on this node: a command, an absolute
/// working directory, within the size limit; nodes of the job, each once, with at least one task
/// each, and no more tasks (times CPUs per task) on a node than the job has CPUs there.
fn check_step(a: &Assignment, request: &v1::StepRequest) -> Result<CheckedStep, LaunchRefusal> {
    let invalid = |why: String| Err(LaunchRefusal::Invalid(why));
    let job = a.key.job;
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return invalid("srun needs a command to run".into());
    }
    let bytes = request.argv.iter().map(String::len).sum::<usize>()
        + request
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>();
    if bytes > MAX_STEP_BYTES {
        return invalid(format!(
            "the step's command and environment are {bytes} bytes, over the {MAX_STEP_BYTES} a step takes; \
             export less environment to it"
        ));
    }
    if !request.workdir.starts_with('/') {
        return invalid(format!(
            "the step's working directory {:?} is not an absolute path",
            request.workdir
        ));
    }
    if request.nodes.is_empty() || request.nodes.len() != request.tasks_per_node.len() {
        return invalid(format!(
            "the step names {} nodes and {} task counts; it needs one count per node",
            request.nodes.len(),
            request.tasks_per_node.len()
        ));
    }
    let cpus_per_task = request.cpus_per_task.max(1);
    let mut parts = Vec::with_capacity(request.nodes.len());
    let mut next = 0u32;
    for (name, &tasks) in request.nodes.iter().zip(&request.tasks_per_node) {
        let Some(node) = a.nodelist.iter().find(|n| n.as_str() == name) else {
            return invalid(format!(
                "node {name:?} is not one of job {job}'s nodes ({})",
                hostlist::compress(
                    &a.nodelist
                        .iter()
                        .map(|n| n.as_str().to_string())
                        .collect::<Vec<_>>()
                )
            ));
        };
        if parts.iter().any(|p: &Part| &p.node == node) {
            return invalid(format!("the step names node {node} twice"));
        }
        if tasks == 0 {
            return invalid(format!("the step has no task on node {node}"));
        }
        let cpus = tasks.checked_mul(cpus_per_task);
        if a.cpus > 0 && cpus.is_none_or(|c| c > a.cpus) {
            return invalid(format!(
                "more processors requested than permitted: {tasks} tasks of {cpus_per_task} CPUs on {node}, \
                 which has {} CPUs for job {job}; ask srun for fewer tasks (-n) or CPUs per task (-c), \
                 or the job for more",
                a.cpus
            ));
        }
        let end = next
            .checked_add(tasks)
            .ok_or_else(|| LaunchRefusal::Invalid("the step's task count overflows".into()))?;
        parts.push(Part {
            node: node.clone(),
            ranks: next..end,
        });
        next = end;
    }
    if request.terminal.is_some() && next != 1 {
        return invalid(format!(
            "srun --pty runs one task on one terminal, and this step has {next}; give srun -n1"
        ));
    }
    Ok(CheckedStep { parts, tasks: next })
}

/// Slurm's compressed tasks-per-node list: `2(x3),1` for 2,2,2,1.
fn tasks_per_node_text(counts: &[u32]) -> String {
    let mut groups: Vec<(u32, usize)> = Vec::new();
    for &count in counts {
        match groups.last_mut() {
            Some((last, times)) if *last == count => *times += 1,
            _ => groups.push((count, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(count, times)| {
            if times == 1 {
                count.to_string()
            } else {
                format!("{count}(x{times})")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn task_end(rank: u32, exit_code: i32, detail: String) -> v1::StepEvent {
    v1::StepEvent {
        body: Some(step_event::Body::End(v1::StepTaskEnd {
            rank,
            exit_code,
            detail,
        })),
    }
}

/// Reads srun's later inputs (signals, keys, terminal sizes) into a channel every part of the
/// step listens to; the channel closes when srun's input ends, which tells the parts that srun
/// is gone.
fn forward_inputs<S>(mut inputs: S) -> broadcast::Sender<Control>
where
    S: Stream<Item = Result<v1::StepInput, Status>> + Send + Unpin + 'static,
{
    let (controls, _) = broadcast::channel(INPUT_QUEUE);
    let sender = controls.clone();
    tokio::spawn(async move {
        while let Some(Ok(input)) = inputs.next().await {
            let control = match input.body {
                Some(step_input::Body::Signal(number)) => Control::Signal(number),
                Some(step_input::Body::Stdin(data)) => Control::Stdin(data),
                Some(step_input::Body::Resize(size)) => Control::Resize(terminal::size_of(&size)),
                Some(step_input::Body::Start(_)) | None => continue,
            };
            let _ = sender.send(control);
        }
        // Dropping the last sender closes the channel for every part.
    });
    controls
}

/// The StepInput that carries `control` on to another node's part.
fn control_input(control: Control) -> v1::StepInput {
    let body = match control {
        Control::Signal(number) => step_input::Body::Signal(number),
        Control::Stdin(data) => step_input::Body::Stdin(data),
        Control::Resize(size) => step_input::Body::Resize(v1::TerminalSize {
            rows: u32::from(size.rows),
            cols: u32::from(size.cols),
        }),
    };
    v1::StepInput { body: Some(body) }
}

/// Sends one task's output to srun as it comes.
async fn send_output(
    rank: u32,
    mut pieces: mpsc::Receiver<Piece>,
    events: mpsc::Sender<Result<v1::StepEvent, Status>>,
) {
    while let Some(piece) = pieces.recv().await {
        let event = v1::StepEvent {
            body: Some(step_event::Body::Output(v1::StepOutput {
                rank,
                stderr: piece.stderr,
                data: piece.data,
            })),
        };
        if events.send(Ok(event)).await.is_err() {
            // srun is gone: keep reading, so the task never blocks on a full pipe.
            while pieces.recv().await.is_some() {}
            return;
        }
    }
}

/// Asks another node's agent to run its part of the step (over mutual TLS when the cluster has
/// certificates) and relays its events; srun's signals go along, and the end of them (srun
/// gone) ends the request, which kills the part there.
async fn remote_part(
    endpoint: Option<String>,
    node: &NodeName,
    tls: Option<tonic::transport::ClientTlsConfig>,
    request: v1::StepRequest,
    mut signals: broadcast::Receiver<Control>,
    events: &mpsc::Sender<Result<v1::StepEvent, Status>>,
) -> Result<(), String> {
    let endpoint = endpoint.ok_or_else(|| format!("no launch endpoint for node {node}"))?;
    let mut client = mpi::connect_launch(&endpoint, node.as_str(), tls.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let (outbound, outbound_rx) = mpsc::channel(INPUT_QUEUE);
    let _ = outbound
        .send(v1::StepInput {
            body: Some(step_input::Body::Start(request)),
        })
        .await;
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Ok(control) => {
                    if outbound.send(control_input(control)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut stream = client
        .step(tokio_stream::wrappers::ReceiverStream::new(outbound_rx))
        .await
        .map_err(|status| format!("{node} refused the step: {}", status.message()))?
        .into_inner();
    loop {
        tokio::select! {
            event = stream.message() => match event {
                Ok(Some(event)) => {
                    if matches!(event.body, Some(step_event::Body::Started(_))) {
                        continue;
                    }
                    if events.send(Ok(event)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(format!("the step's part on {node} broke: {}", status.message())),
            },
            () = events.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::Assignment;

    /// Node 1 of a 3-node batch script job with 2 CPUs per node.
    fn assignment() -> Assignment {
        Assignment::try_from(v1::Assignment {
            job_id: 7,
            run: 1,
            nodelist: vec!["n1".into(), "n2".into(), "n3".into()],
            ntasks: 1,
            cpus: 2,
            argv: vec!["/bin/sh".into()],
            workdir: "/tmp".into(),
            steps: Some(v1::StepLaunch {
                token: "secret".into(),
                endpoints: Default::default(),
            }),
            ..Default::default()
        })
        .unwrap()
    }

    fn request(nodes: &[&str], tasks: &[u32]) -> v1::StepRequest {
        v1::StepRequest {
            argv: vec!["hostname".into()],
            workdir: "/home/ada".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            tasks_per_node: tasks.to_vec(),
            cpus_per_task: 1,
            ..Default::default()
        }
    }

    fn refusal(request: &v1::StepRequest) -> String {
        match check_step(&assignment(), request) {
            Err(LaunchRefusal::Invalid(why)) => why,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn a_step_gets_ranks_in_node_order() {
        let checked = check_step(&assignment(), &request(&["n2", "n3"], &[2, 1])).unwrap();
        assert_eq!(checked.tasks, 3);
        let parts: Vec<(&str, std::ops::Range<u32>)> = checked
            .parts
            .iter()
            .map(|p| (p.node.as_str(), p.ranks.clone()))
            .collect();
        assert_eq!(parts, [("n2", 0..2), ("n3", 2..3)]);
    }

    #[test]
    fn steps_beyond_the_job_are_refused_with_the_reason() {
        assert!(refusal(&request(&["n4"], &[1])).contains("not one of job 7's nodes (n[1-3])"));
        assert!(refusal(&request(&["n1", "n1"], &[1, 1])).contains("names node n1 twice"));
        assert!(
            refusal(&request(&["n1"], &[3])).contains("more processors requested than permitted")
        );
        let mut wide = request(&["n1"], &[1]);
        wide.cpus_per_task = u32::MAX;
        assert!(refusal(&wide).contains("more processors"));
        assert!(refusal(&request(&["n1"], &[0])).contains("no task on node n1"));
        assert!(refusal(&request(&["n1", "n2"], &[1])).contains("one count per node"));
        let mut relative = request(&["n1"], &[1]);
        relative.workdir = "work".into();
        assert!(refusal(&relative).contains("not an absolute path"));
        let mut empty = request(&["n1"], &[1]);
        empty.argv.clear();
        assert!(refusal(&empty).contains("needs a command"));
        let mut pty = request(&["n1", "n2"], &[1, 1]);
        pty.terminal = Some(v1::TerminalSize { rows: 24, cols: 80 });
        assert!(refusal(&pty).contains("--pty runs one task"));
        let mut huge = request(&["n1"], &[1]);
        huge.env.insert("BIG".into(), "x".repeat(MAX_STEP_BYTES));
        assert!(refusal(&huge).contains("over the 1048576 a step takes"));
    }

    #[test]
    fn tasks_per_node_are_compressed_as_slurm_prints_them() {
        assert_eq!(tasks_per_node_text(&[2, 2, 2, 1]), "2(x3),1");
        assert_eq!(tasks_per_node_text(&[1]), "1");
        assert_eq!(tasks_per_node_text(&[1, 2, 1]), "1,2,1");
    }
}

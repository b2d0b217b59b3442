//! A recording fake [`Launcher`] for tests of the code above the launcher (the reconciler).
//!
//! Nothing is started: calls are recorded, tasks "run" until the test calls
//! [`RecordingLauncher::finish`] or the code under test calls `kill_job`. Tasks that want their
//! output in pipes get real pipes, which the test writes into with
//! [`RecordingLauncher::write_output`].

use super::{
    JobLimits, LaunchError, Launcher, StartedTask, TaskExit, TaskLaunch, TaskOutput, TaskPipes,
};
use beowulf_types::{RunKey, TaskKey};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;

/// One call made on a [`RecordingLauncher`], with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LauncherCall {
    Prepare {
        run: RunKey,
        limits: JobLimits,
    },
    Start(Box<TaskLaunch>),
    Kill {
        run: RunKey,
    },
    Signal {
        run: RunKey,
        signal: nix::sys::signal::Signal,
    },
    SignalTask {
        task: TaskKey,
        signal: nix::sys::signal::Signal,
    },
    Release {
        run: RunKey,
    },
    ShutDown,
}

/// Records calls; behaves like [`super::ProcessLauncher`] as far as bookkeeping goes (start needs
/// prepare, release fails while tasks run, kill ends the job's tasks with code 137).
#[derive(Debug, Default)]
pub struct RecordingLauncher {
    calls: Mutex<Vec<LauncherCall>>,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    prepared: BTreeSet<RunKey>,
    running: BTreeMap<TaskKey, FakeTask>,
    leftovers: Vec<RunKey>,
    start_failures: VecDeque<LaunchError>,
    last_pid: u32,
    /// Tasks trap catchable signals (a job that saves a checkpoint on SIGTERM and goes on).
    ignore_signals: bool,
    /// Runs whose processes the OOM killer ended, and how many.
    oom_kills: BTreeMap<RunKey, u64>,
}

#[derive(Debug)]
struct FakeTask {
    /// Where its exit goes.
    exits: UnboundedSender<TaskExit>,
    /// The write end of its output pipe ([`TaskOutput::Pipes`]); closed when it ends.
    output: Option<std::fs::File>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl RecordingLauncher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A launcher that reports these job runs from `leftover_jobs` (until they are released).
    pub fn with_leftovers(leftovers: Vec<RunKey>) -> Self {
        let launcher = Self::default();
        {
            let mut state = lock(&launcher.state);
            state.prepared.extend(leftovers.iter().copied());
            state.leftovers = leftovers;
        }
        launcher
    }

    /// The OOM killer ends task `task` (it exits killed by SIGKILL, and the run counts the kill).
    pub fn oom_kill(&self, task: TaskKey) {
        *lock(&self.state).oom_kills.entry(task.run).or_default() += 1;
        self.finish(task, 128 + 9);
    }

    /// From now on, tasks trap catchable signals: only a kill ends them.
    pub fn trap_signals(&self) {
        lock(&self.state).ignore_signals = true;
    }

    /// All calls so far, oldest first.
    pub fn calls(&self) -> Vec<LauncherCall> {
        lock(&self.calls).clone()
    }

    /// All calls so far, clearing the record.
    pub fn take_calls(&self) -> Vec<LauncherCall> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// Makes the next `start_task` fail with this error (queued: several calls queue several).
    pub fn fail_next_start(&self, error: LaunchError) {
        lock(&self.state).start_failures.push_back(error);
    }

    /// Every task still running.
    pub fn running_tasks(&self) -> Vec<TaskKey> {
        lock(&self.state).running.keys().copied().collect()
    }

    /// Writes into the output pipe of a running task that has one. False if there is none.
    pub fn write_output(&self, task: TaskKey, bytes: &[u8]) -> bool {
        use std::io::Write;
        let mut state = lock(&self.state);
        let Some(pipe) = state.running.get_mut(&task).and_then(|t| t.output.as_mut()) else {
            return false;
        };
        pipe.write_all(bytes).is_ok()
    }

    /// Ends a running task with this exit code, sending its TaskExit. False if no such task runs.
    pub fn finish(&self, task: TaskKey, code: i32) -> bool {
        let Some(FakeTask { exits, .. }) = lock(&self.state).running.remove(&task) else {
            return false;
        };
        let detail = if code > 128 {
            format!("killed by signal {}", code - 128)
        } else {
            format!("exited with code {code}")
        };
        let _ = exits.send(TaskExit {
            key: task,
            code,
            detail,
        });
        true
    }

    fn record(&self, call: LauncherCall) {
        lock(&self.calls).push(call);
    }
}

impl Launcher for RecordingLauncher {
    fn prepare_job(&self, key: RunKey, limits: &JobLimits) -> Result<(), LaunchError> {
        self.record(LauncherCall::Prepare {
            run: key,
            limits: *limits,
        });
        lock(&self.state).prepared.insert(key);
        Ok(())
    }

    fn start_task(
        &self,
        task: TaskLaunch,
        exits: UnboundedSender<TaskExit>,
    ) -> Result<StartedTask, LaunchError> {
        self.record(LauncherCall::Start(Box::new(task.clone())));
        let mut state = lock(&self.state);
        if let Some(error) = state.start_failures.pop_front() {
            return Err(error);
        }
        if !state.prepared.contains(&task.key.run) {
            return Err(LaunchError::NotPrepared { run: task.key.run });
        }
        if task.argv.is_empty() {
            return Err(LaunchError::EmptyArgv { task: task.key });
        }
        state.last_pid += 1;
        let pid = 10_000 + state.last_pid;
        let (pipes, output) = match task.output {
            TaskOutput::Files => (None, None),
            TaskOutput::Pipes | TaskOutput::Streams | TaskOutput::Terminal(_) => {
                let (read, write) = nix::unistd::pipe().map_err(|e| LaunchError::OutputPipe {
                    task: task.key,
                    source: e.into(),
                })?;
                let pipes = TaskPipes {
                    stdout: read,
                    stderr: None,
                };
                (Some(pipes), Some(std::fs::File::from(write)))
            }
        };
        state.running.insert(task.key, FakeTask { exits, output });
        Ok(StartedTask { pid, pipes })
    }

    fn kill_job(&self, key: RunKey) -> Result<(), LaunchError> {
        self.record(LauncherCall::Kill { run: key });
        let tasks: Vec<TaskKey> = self
            .running_tasks()
            .into_iter()
            .filter(|task| task.run == key)
            .collect();
        for task in tasks {
            self.finish(task, 128 + 9);
        }
        Ok(())
    }

    /// Like a process without a handler for it: a catchable signal ends every running task of
    /// the run (128 + its number), unless `ignore_signals` says the tasks trap it.
    fn signal_task(
        &self,
        task: TaskKey,
        _pid: u32,
        signal: nix::sys::signal::Signal,
        _session: bool,
    ) {
        self.record(LauncherCall::SignalTask { task, signal });
        if !lock(&self.state).ignore_signals && self.running_tasks().contains(&task) {
            self.finish(task, 128 + signal as i32);
        }
    }

    fn signal_job(&self, key: RunKey, signal: nix::sys::signal::Signal) -> Result<(), LaunchError> {
        self.record(LauncherCall::Signal { run: key, signal });
        if lock(&self.state).ignore_signals {
            return Ok(());
        }
        let tasks: Vec<TaskKey> = self
            .running_tasks()
            .into_iter()
            .filter(|task| task.run == key)
            .collect();
        for task in tasks {
            self.finish(task, 128 + signal as i32);
        }
        Ok(())
    }

    fn oom_kills(&self, key: RunKey) -> u64 {
        lock(&self.state).oom_kills.get(&key).copied().unwrap_or(0)
    }

    fn job_alive(&self, key: RunKey) -> bool {
        lock(&self.state).running.keys().any(|task| task.run == key)
    }

    fn release_job(&self, key: RunKey) -> Result<(), LaunchError> {
        self.record(LauncherCall::Release { run: key });
        if self.job_alive(key) {
            return Err(LaunchError::StillRunning { run: key });
        }
        let mut state = lock(&self.state);
        state.prepared.remove(&key);
        state.leftovers.retain(|&l| l != key);
        Ok(())
    }

    fn shut_down(&self) {
        self.record(LauncherCall::ShutDown);
    }

    fn leftover_jobs(&self) -> Vec<RunKey> {
        lock(&self.state).leftovers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;
    use std::path::PathBuf;

    /// Run 1 of job 5.
    const RUN: RunKey = RunKey {
        job: JobId(5),
        run: 1,
    };

    fn task(rank: u32) -> TaskLaunch {
        TaskLaunch {
            key: RUN.task(rank),
            argv: vec!["hostname".into()],
            env: vec![],
            workdir: PathBuf::from("/tmp"),
            stdout: PathBuf::from("/tmp/out"),
            stderr: PathBuf::from("/tmp/out"),
            uid: 1000,
            gid: 1000,
            groups: Vec::new(),
            umask: 0o022,
            container: None,
            output: TaskOutput::Files,
        }
    }

    #[test]
    fn records_calls_and_delivers_exits() {
        let launcher = RecordingLauncher::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        assert!(matches!(
            launcher.start_task(task(0), tx.clone()),
            Err(LaunchError::NotPrepared { .. })
        ));
        let limits = JobLimits {
            cpus: 2,
            memory_mb: 100,
            pids_max: None,
        };
        launcher.prepare_job(RUN, &limits).unwrap();
        launcher.start_task(task(0), tx.clone()).unwrap();
        launcher.start_task(task(1), tx.clone()).unwrap();
        assert!(launcher.job_alive(RUN));

        assert!(launcher.finish(RUN.task(0), 3));
        assert!(!launcher.finish(RUN.task(0), 3));
        let exit = rx.try_recv().unwrap();
        assert_eq!((exit.key.rank, exit.code), (0, 3));

        assert!(matches!(
            launcher.release_job(RUN),
            Err(LaunchError::StillRunning { .. })
        ));
        launcher.kill_job(RUN).unwrap();
        let exit = rx.try_recv().unwrap();
        assert_eq!((exit.key.rank, exit.code), (1, 137));
        assert!(!launcher.job_alive(RUN));
        launcher.release_job(RUN).unwrap();

        let calls = launcher.take_calls();
        assert_eq!(calls.len(), 7);
        assert_eq!(calls[1], LauncherCall::Prepare { run: RUN, limits });
        assert_eq!(calls[2], LauncherCall::Start(Box::new(task(0))));
        assert_eq!(calls[6], LauncherCall::Release { run: RUN });
        assert!(launcher.calls().is_empty());
    }

    #[test]
    fn injected_failures_and_leftovers() {
        let leftover = RunKey {
            job: JobId(9),
            run: 0,
        };
        let launcher = RecordingLauncher::with_leftovers(vec![leftover]);
        assert_eq!(launcher.leftover_jobs(), vec![leftover]);
        launcher.kill_job(leftover).unwrap();
        launcher.release_job(leftover).unwrap();
        assert!(launcher.leftover_jobs().is_empty());

        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        launcher
            .prepare_job(
                RUN,
                &JobLimits {
                    cpus: 1,
                    memory_mb: 0,
                    pids_max: None,
                },
            )
            .unwrap();
        launcher.fail_next_start(LaunchError::Injected("boom".into()));
        let err = launcher.start_task(task(0), tx.clone()).unwrap_err();
        assert_eq!(err.to_string(), "injected failure: boom");
        assert_eq!(TaskExit::not_started(RUN.task(0), &err).code, 126);
        assert!(launcher.start_task(task(0), tx).is_ok());
    }
}

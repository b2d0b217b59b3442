//! The terminal of a `srun --pty` step: what its task writes is sent to srun as it comes (no
//! line buffering: a shell's prompt ends without a newline), the user's keys are written into
//! it, and its size follows the user's terminal.
//!
//! ```text
//!  srun ── StepInput.stdin ──▶ writer task ──▶ master ══ pty ══ slave: the task's stdin,
//!  srun ── StepInput.resize ─▶ TIOCSWINSZ ───▶ master          stdout, stderr and controlling
//!  srun ◀── StepOutput (rank) ◀── reader task ◀── master       terminal (SIGWINCH, ^C → SIGINT)
//! ```

use crate::launcher::TerminalSize;
use beowulf_proto::v1::{self, step_event};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tonic::Status;

/// Bytes read from the terminal at once: one output event at most this big.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes one stdin input may carry; srun sends what one read of its stdin gave.
pub(super) const MAX_STDIN_CHUNK: usize = 64 * 1024;
/// Stdin inputs queued for the terminal while its program does not read: a paste of a few
/// megabytes at most; beyond it keys are dropped (and logged), never buffered without bound.
const STDIN_QUEUE: usize = 64;
/// A terminal's size when srun gives none (not itself on a terminal): the VT100's.
pub(super) const DEFAULT_SIZE: TerminalSize = TerminalSize { rows: 24, cols: 80 };

/// The master side of a step task's terminal.
pub(super) struct Terminal {
    master: Arc<AsyncFd<OwnedFd>>,
    keys: mpsc::Sender<Vec<u8>>,
}

impl Terminal {
    /// Starts reading the terminal into `events` as output of `rank`, and a writer for the
    /// user's keys. The returned handle ends when the terminal has no writer left (EIO).
    pub(super) fn attach(
        master: OwnedFd,
        rank: u32,
        events: mpsc::Sender<Result<v1::StepEvent, Status>>,
    ) -> io::Result<(Terminal, tokio::task::JoinHandle<()>)> {
        set_nonblocking(&master)?;
        // SAFETY: the AsyncFd owns the descriptor (an OwnedFd, closed only when the AsyncFd is
        // dropped, after it deregistered it), so it stays open and the same while registered.
        let registered = unsafe { AsyncFd::register(master) };
        let master = Arc::new(registered.map_err(|e| e.into_parts().1)?);
        let reader = tokio::spawn(read_terminal(Arc::clone(&master), rank, events));
        let (keys, queue) = mpsc::channel(STDIN_QUEUE);
        tokio::spawn(write_terminal(Arc::clone(&master), queue));
        Ok((Terminal { master, keys }, reader))
    }

    /// Queues what the user typed; dropped when the program has not read the last
    /// [`STDIN_QUEUE`] inputs.
    pub(super) fn type_in(&self, data: Vec<u8>) {
        if data.len() > MAX_STDIN_CHUNK {
            tracing::warn!(
                bytes = data.len(),
                "a terminal input over the limit was dropped"
            );
            return;
        }
        if self.keys.try_send(data).is_err() {
            tracing::warn!("the step's terminal is not read: input dropped");
        }
    }

    /// Gives the terminal a new size; its foreground processes get SIGWINCH.
    pub(super) fn resize(&self, size: TerminalSize) {
        let winsize = size.winsize();
        // SAFETY: TIOCSWINSZ reads one winsize, owned by this frame, from the pointer.
        let ret = unsafe {
            libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &raw const winsize,
            )
        };
        if ret == -1 {
            tracing::debug!(error = %io::Error::last_os_error(), "cannot resize a step's terminal");
        }
    }
}

/// The size srun asked for, within what a terminal can be (1..=u16::MAX rows and columns).
pub(super) fn size_of(requested: &v1::TerminalSize) -> TerminalSize {
    let clamp = |n: u32, default: u16| {
        if n == 0 {
            default
        } else {
            u16::try_from(n).unwrap_or(u16::MAX)
        }
    };
    TerminalSize {
        rows: clamp(requested.rows, DEFAULT_SIZE.rows),
        cols: clamp(requested.cols, DEFAULT_SIZE.cols),
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sends what the terminal's programs write to srun, as it comes, until no program holds the
/// terminal any more (the kernel then answers EIO). Keeps reading when srun is gone, so that no
/// program blocks on a full terminal before it is killed.
async fn read_terminal(
    master: Arc<AsyncFd<OwnedFd>>,
    rank: u32,
    events: mpsc::Sender<Result<v1::StepEvent, Status>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut forwarding = true;
    loop {
        let Ok(mut ready) = master.readable().await else {
            return;
        };
        let read = ready.try_io(|fd| {
            // SAFETY: reads at most buf.len() bytes into buf, which this frame owns.
            let n =
                unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        let n = match read {
            Err(_would_block) => continue,
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: every holder of the slave side closed it.
            Ok(Err(_)) => return,
        };
        if !forwarding {
            continue;
        }
        let event = v1::StepEvent {
            body: Some(step_event::Body::Output(v1::StepOutput {
                rank,
                stderr: false,
                data: buf[..n].to_vec(),
            })),
        };
        forwarding = events.send(Ok(event)).await.is_ok();
    }
}

/// Writes the user's keys into the terminal, in order, waiting while its input is full.
async fn write_terminal(master: Arc<AsyncFd<OwnedFd>>, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = queue.recv().await {
        let mut written = 0;
        while written < data.len() {
            let Ok(mut ready) = master.writable().await else {
                return;
            };
            let rest = &data[written..];
            let write = ready.try_io(|fd| {
                // SAFETY: writes at most rest.len() bytes from rest, which outlives the call.
                let n = unsafe {
                    libc::write(fd.get_ref().as_raw_fd(), rest.as_ptr().cast(), rest.len())
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match write {
                Err(_would_block) => {}
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_kept_within_what_a_terminal_takes() {
        let asked = |rows, cols| size_of(&v1::TerminalSize { rows, cols });
        assert_eq!(
            asked(50, 132),
            TerminalSize {
                rows: 50,
                cols: 132
            }
        );
        assert_eq!(asked(0, 0), DEFAULT_SIZE);
        assert_eq!(
            asked(u32::MAX, 7),
            TerminalSize {
                rows: u16::MAX,
                cols: 7
            }
        );
    }

    /// A real pty: what the slave side writes arrives as output of the rank, keys typed in come
    /// out on the slave side, and the reader ends when the slave is closed.
    #[tokio::test]
    async fn a_terminal_carries_output_and_keys_both_ways() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (events, mut received) = mpsc::channel(16);
        let (terminal, reader) = Terminal::attach(pty.master, 3, events).unwrap();
        let slave = std::fs::File::from(pty.slave);
        use std::io::{Read, Write};
        (&slave).write_all(b"prompt$ ").unwrap();
        let event = received.recv().await.unwrap().unwrap();
        match event.body {
            Some(step_event::Body::Output(out)) => {
                assert_eq!(out.rank, 3);
                assert_eq!(out.data, b"prompt$ ");
            }
            other => panic!("not output: {other:?}"),
        }
        terminal.type_in(b"echo hi\n".to_vec());
        let mut line = [0u8; 8];
        tokio::task::spawn_blocking(move || {
            (&slave).read_exact(&mut line).unwrap();
            assert_eq!(&line, b"echo hi\n");
            drop(slave);
        })
        .await
        .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the reader ends when the slave side is closed")
            .unwrap();
    }
}

//! srun's side of a `--pty` step: the user's terminal in raw mode while the step runs (keys go
//! to the task's terminal as typed, Ctrl-C included, and come back echoed by it), its size,
//! and its keys read as they come.

use beowulf_proto::v1;
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IsTerminal, Read};
use tokio::sync::mpsc;

/// Bytes read from srun's stdin at once: one key, or a piece of a paste.
const READ_CHUNK: usize = 4096;
/// Reads queued while the head is slow to take them.
const KEY_QUEUE: usize = 64;
/// The size of a terminal srun cannot ask (its stdin is not one): the VT100's.
const DEFAULT_SIZE: v1::TerminalSize = v1::TerminalSize { rows: 24, cols: 80 };

/// srun's terminal, in raw mode until dropped; then as it was.
pub struct Raw {
    saved: Termios,
}

impl Raw {
    /// Puts srun's terminal in raw mode; `None` when its stdin is not a terminal (a pipe, a
    /// file: the keys are sent as they are read).
    pub fn enter() -> Option<Raw> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(Raw { saved })
    }

    /// The size of srun's terminal (its stdin's), or 24 × 80.
    pub fn size_of_stdin() -> v1::TerminalSize {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `size`, which this frame owns.
        let ret = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &raw mut size) };
        if ret == -1 || size.ws_row == 0 || size.ws_col == 0 {
            return DEFAULT_SIZE;
        }
        v1::TerminalSize {
            rows: u32::from(size.ws_row),
            cols: u32::from(size.ws_col),
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// srun's stdin as it is read (a thread blocks on it); the channel ends at its end.
pub fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (keys, queue) = mpsc::channel(KEY_QUEUE);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if keys.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
    queue
}

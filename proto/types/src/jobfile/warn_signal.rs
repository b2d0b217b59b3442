//! A job's signal before its time limit: sbatch's `--signal=[B:]SIG[@TIME]`, the job file's
//! `signal = "B:USR1@90"`.

use serde::{Deserialize, Serialize};

/// Signal names as Slurm and kill(1) take them (with or without `SIG`), by their Linux numbers.
const SIGNALS: [(&str, i32); 26] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
];

/// Seconds before the end when `@TIME` is left out: Slurm's default.
pub const DEFAULT_WARN_SECONDS: u32 = 60;
/// The latest a signal may come before the end: Slurm's limit (`@TIME` is at most 65535 s).
pub const MAX_WARN_SECONDS: u32 = 65_535;

/// A signal a job asks for before its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarnSignal {
    /// The signal's number.
    pub signal: i32,
    /// How long before the time limit.
    pub seconds_before: u32,
    /// Only the batch script's shell (`B:`); else the job's steps' tasks, not the shell.
    pub batch_only: bool,
}

/// `[B:]SIG[@TIME]`: SIG a name (`USR1`, `SIGUSR1`) or a number, TIME seconds before the end.
pub fn parse_warn_signal(text: &str) -> Result<WarnSignal, String> {
    let usage = "write [B:]SIG[@SECONDS], e.g. B:USR1@90 or 10@120";
    let (batch_only, rest) = match text.split_once(':') {
        Some(("B", rest)) => (true, rest),
        Some(("R", _)) => {
            return Err(format!(
                "{text:?}: R: (signal when a reservation ends) is not supported; {usage}"
            ));
        }
        Some(_) => {
            return Err(format!(
                "{text:?}: only B: may come before the signal; {usage}"
            ));
        }
        None => (false, text),
    };
    let (name, seconds) = match rest.split_once('@') {
        Some((name, seconds)) => {
            let seconds: u32 = seconds
                .parse()
                .ok()
                .filter(|s| *s <= MAX_WARN_SECONDS)
                .ok_or_else(|| {
                    format!("{text:?}: the time after @ must be 0 to {MAX_WARN_SECONDS} seconds")
                })?;
            (name, seconds)
        }
        None => (rest, DEFAULT_WARN_SECONDS),
    };
    let signal = signal_number(name).ok_or_else(|| {
        format!("{text:?}: {name:?} is not a signal name or number (USR1, TERM, 10, ...); {usage}")
    })?;
    Ok(WarnSignal {
        signal,
        seconds_before: seconds,
        batch_only,
    })
}

/// The number of a signal given by name (`USR1`, `SIGUSR1`, any case) or number (1 to 31).
pub fn signal_number(name: &str) -> Option<i32> {
    if let Ok(number) = name.parse::<i32>() {
        return (1..=31).contains(&number).then_some(number);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(_, number)| *number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_forms_are_read() {
        assert_eq!(
            parse_warn_signal("B:USR1@90").unwrap(),
            WarnSignal {
                signal: 10,
                seconds_before: 90,
                batch_only: true
            }
        );
        assert_eq!(parse_warn_signal("SIGTERM").unwrap().seconds_before, 60);
        assert_eq!(parse_warn_signal("12@0").unwrap().signal, 12);
        assert_eq!(signal_number("sigusr2"), Some(12));
    }

    #[test]
    fn bad_forms_say_what_to_write() {
        for bad in [
            "R:USR1",
            "X:USR1",
            "USR9",
            "USR1@70000",
            "USR1@-1",
            "0",
            "32",
            "B:",
        ] {
            let e = parse_warn_signal(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}

//! `begin` (sbatch `--begin`): when a job becomes eligible to start, in Slurm's forms, kept as
//! written relative to the submit time and resolved against it, so parsing needs no clock.
//!
//! Accepted, as `sbatch --begin` documents them (all times in UTC on this cluster):
//! `now`, `now+N` (seconds), `now+N{seconds|minutes|hours|days|weeks}` (singular too);
//! `HH:MM[:SS]` (today, or tomorrow when that time has passed); `midnight`, `noon`, `fika`
//! (15:00), `teatime` (16:00) likewise; `today`, `tomorrow` (their 00:00); and
//! `YYYY-MM-DD[THH:MM[:SS]]`.

use super::limits::{BadNumber, decimal, shown};
use crate::{Timestamp, UtcTime};
use serde::{Deserialize, Serialize};

/// Seconds in a day.
const DAY_SECONDS: u64 = 86_400;

/// The latest a relative `begin` (`now+N`) may be: a year after submit. A longer wait is almost
/// certainly a unit typo (`now+600000` meant as minutes), and a year keeps the sum far from any
/// overflow of the head's millisecond timestamps.
pub const MAX_BEGIN_DELAY_SECONDS: u64 = 366 * DAY_SECONDS;

/// When a job becomes eligible, as written; [`BeginTime::resolve`] turns it into an instant given
/// the submit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeginTime {
    /// `now`, `now+90`, `now+2hours`: this many seconds after submit.
    AfterSubmit(u64),
    /// `16:00`, `noon`, `teatime`: the first instant at or after submit that is this many seconds
    /// past a UTC midnight (today's, or tomorrow's when today's has passed).
    NextTimeOfDay(u64),
    /// `today` (0), `tomorrow` and `midnight` (1): 00:00 UTC this many days after the submit day.
    DayStart(u64),
    /// `2026-05-01T12:00`: this instant, in seconds since the Unix epoch.
    At(u64),
}

impl BeginTime {
    /// The instant the job becomes eligible, for a job submitted at `submitted`.
    pub fn resolve(self, submitted: Timestamp) -> Timestamp {
        let now = submitted.0 / 1000;
        let midnight = now - now % DAY_SECONDS;
        let seconds = match self {
            BeginTime::AfterSubmit(delay) => now.saturating_add(delay),
            BeginTime::NextTimeOfDay(of_day) => {
                let today = midnight.saturating_add(of_day);
                if today >= now {
                    today
                } else {
                    today.saturating_add(DAY_SECONDS)
                }
            }
            BeginTime::DayStart(days) => midnight.saturating_add(days.saturating_mul(DAY_SECONDS)),
            BeginTime::At(at) => at,
        };
        // A relative time keeps the submit time's milliseconds: `now` is the submit instant.
        let millis = match self {
            BeginTime::AfterSubmit(_) => submitted.0 % 1000,
            _ => 0,
        };
        Timestamp(seconds.saturating_mul(1000).saturating_add(millis))
    }
}

/// The forms `begin` takes, for error messages.
const FORMS: &str = "now+60 (seconds), now+10minutes, now+2hours, now+1day, 16:00, \
                     2026-05-01T12:00, midnight, noon, teatime, today or tomorrow (times in UTC)";

/// Parses `begin` in Slurm's forms (see the module's documentation).
pub fn parse_begin(text: &str) -> Result<BeginTime, String> {
    let trimmed = text.trim();
    let word = trimmed.to_ascii_lowercase();
    let unknown = || format!("`{}` is not a time; use {FORMS}", shown(trimmed));
    match word.as_str() {
        "" => return Err(format!("is empty; use {FORMS}")),
        "now" => return Ok(BeginTime::AfterSubmit(0)),
        "today" => return Ok(BeginTime::DayStart(0)),
        "tomorrow" | "midnight" => return Ok(BeginTime::DayStart(1)),
        "noon" => return Ok(BeginTime::NextTimeOfDay(12 * 3600)),
        "fika" => return Ok(BeginTime::NextTimeOfDay(15 * 3600)),
        "teatime" => return Ok(BeginTime::NextTimeOfDay(16 * 3600)),
        _ => {}
    }
    if let Some(offset) = word.strip_prefix("now+") {
        return parse_offset(offset, trimmed).map(BeginTime::AfterSubmit);
    }
    if let Some((date, time)) = word.split_once('t') {
        let (year, month, day) = parse_date(date).ok_or_else(unknown)?;
        let (hour, minute, second) = parse_clock(time).ok_or_else(unknown)?;
        return at(year, month, day, hour, minute, second, trimmed);
    }
    if let Some((year, month, day)) = parse_date(&word) {
        return at(year, month, day, 0, 0, 0, trimmed);
    }
    if let Some((hour, minute, second)) = parse_clock(&word) {
        if hour > 23 || minute > 59 || second > 59 {
            return Err(format!(
                "`{}` is not a time of day: hours go to 23, minutes and seconds to 59",
                shown(trimmed)
            ));
        }
        return Ok(BeginTime::NextTimeOfDay(hour * 3600 + minute * 60 + second));
    }
    Err(unknown())
}

/// Seconds of `N[unit]` after `now+`, at most [`MAX_BEGIN_DELAY_SECONDS`].
fn parse_offset(offset: &str, written: &str) -> Result<u64, String> {
    let digits_end = offset
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(offset.len());
    let (digits, unit) = offset.split_at(digits_end);
    let too_late = || {
        format!(
            "`{}` is more than a year away ({MAX_BEGIN_DELAY_SECONDS} seconds); give a date \
             like 2026-05-01 for a later start, or check the unit",
            shown(written)
        )
    };
    let count: u64 = decimal(digits).map_err(|e| match e {
        BadNumber::Invalid => format!(
            "`{}`: `now+` takes a count, like now+60 or now+10minutes",
            shown(written)
        ),
        BadNumber::TooLarge => too_late(),
    })?;
    let unit_seconds = match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => DAY_SECONDS,
        "w" | "week" | "weeks" => 7 * DAY_SECONDS,
        other => {
            return Err(format!(
                "`{}`: unknown unit `{}`; use seconds, minutes, hours, days or weeks",
                shown(written),
                shown(other)
            ));
        }
    };
    count
        .checked_mul(unit_seconds)
        .filter(|s| *s <= MAX_BEGIN_DELAY_SECONDS)
        .ok_or_else(too_late)
}

/// `YYYY-MM-DD` as numbers (not yet checked as a calendar date).
fn parse_date(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    Some((decimal(y).ok()?, decimal(m).ok()?, decimal(d).ok()?))
}

/// `HH:MM` or `HH:MM:SS` as numbers (not yet range-checked).
fn parse_clock(text: &str) -> Option<(u64, u64, u64)> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty() || p.len() > 2) {
        return None;
    }
    let number = |p: &str| decimal::<u64>(p).ok();
    Some((
        number(parts[0])?,
        number(parts[1])?,
        parts.get(2).map_or(Some(0), |s| number(s))?,
    ))
}

/// The instant of a calendar date and time in UTC, refused when it does not exist.
fn at(
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    minute: u64,
    second: u64,
    written: &str,
) -> Result<BeginTime, String> {
    UtcTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    }
    .to_unix_seconds()
    .map(BeginTime::At)
    .ok_or_else(|| {
        format!(
            "`{}` is not a date and time that exists (years 1970 to 9999, UTC)",
            shown(written)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-10 14:30:20.500 UTC.
    const SUBMIT: Timestamp = Timestamp(1_773_153_020_500);

    fn resolved(text: &str) -> String {
        parse_begin(text).unwrap().resolve(SUBMIT).utc().to_string()
    }

    #[test]
    fn slurm_forms_resolve_against_the_submit_time() {
        assert_eq!(SUBMIT.utc().to_string(), "2026-03-10 14:30:20 UTC");
        assert_eq!(parse_begin("now").unwrap().resolve(SUBMIT), SUBMIT);
        assert_eq!(
            parse_begin("now+60").unwrap().resolve(SUBMIT),
            SUBMIT.plus(60_000)
        );
        assert_eq!(resolved("now+10minutes"), "2026-03-10 14:40:20 UTC");
        assert_eq!(resolved("NOW+1hour"), "2026-03-10 15:30:20 UTC");
        assert_eq!(resolved("now+2days"), "2026-03-12 14:30:20 UTC");
        assert_eq!(resolved("now+1week"), "2026-03-17 14:30:20 UTC");
        // A time of day still ahead is today's; one that has passed is tomorrow's.
        assert_eq!(resolved("16:00"), "2026-03-10 16:00:00 UTC");
        assert_eq!(resolved("09:15:30"), "2026-03-11 09:15:30 UTC");
        assert_eq!(resolved("noon"), "2026-03-11 12:00:00 UTC");
        assert_eq!(resolved("teatime"), "2026-03-10 16:00:00 UTC");
        assert_eq!(resolved("fika"), "2026-03-10 15:00:00 UTC");
        assert_eq!(resolved("midnight"), "2026-03-11 00:00:00 UTC");
        assert_eq!(resolved("tomorrow"), "2026-03-11 00:00:00 UTC");
        assert_eq!(resolved("today"), "2026-03-10 00:00:00 UTC");
        assert_eq!(resolved("2026-05-01"), "2026-05-01 00:00:00 UTC");
        assert_eq!(resolved("2026-05-01T12:00"), "2026-05-01 12:00:00 UTC");
        assert_eq!(resolved("2024-02-29T23:59:59"), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn bad_times_are_refused_saying_what_is_accepted() {
        for (text, words) in [
            ("", "is empty"),
            ("soon", "is not a time; use now+60"),
            ("now+", "takes a count"),
            ("now+-5", "takes a count"),
            ("now+5fortnights", "unknown unit `fortnights`"),
            ("now+400days", "more than a year away"),
            ("now+99999999999999999999999", "more than a year away"),
            ("now+9999999999999weeks", "more than a year away"),
            ("25:00", "hours go to 23"),
            ("12:60", "minutes and seconds to 59"),
            ("2026-02-30", "not a date and time that exists"),
            ("2026-13-01T10:00", "not a date and time that exists"),
            ("1969-12-31", "not a date and time that exists"),
            ("2026-05-01T25:00", "not a date and time that exists"),
            ("2026-5-1", "is not a time"),
            ("12:00:00:00", "is not a time"),
            ("\u{1b}[2J", "is not a time"),
        ] {
            let err = parse_begin(text).unwrap_err();
            assert!(err.contains(words), "{text:?}: {err}");
        }
        // A control character is shown escaped, never printed raw.
        assert!(!parse_begin("\u{1b}[2J").unwrap_err().contains('\u{1b}'));
    }
}

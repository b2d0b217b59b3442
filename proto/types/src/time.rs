//! Time as plain numbers, so pure code (the scheduler) takes "now" as an argument and never reads a clock.

use serde::{Deserialize, Serialize};

/// A span of time in milliseconds.
pub type Millis = u64;

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn plus(self, span: Millis) -> Timestamp {
        Timestamp(self.0.saturating_add(span))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Millis {
        self.0.saturating_sub(earlier.0)
    }

    /// The calendar date and time in UTC, for people: `2026-01-31 23:59:59 UTC`.
    pub fn utc(self) -> UtcTime {
        UtcTime::from_unix_seconds(self.0 / 1000)
    }
}

/// A date and time of day in UTC (whole seconds), computed without a clock or a time zone
/// database: pure code may print one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcTime {
    pub year: u64,
    pub month: u64,
    pub day: u64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl UtcTime {
    /// The UTC date and time `unix` seconds after 1970-01-01 00:00:00.
    pub fn from_unix_seconds(unix: u64) -> UtcTime {
        let (days, secs) = (unix / 86_400, unix % 86_400);
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
        }
    }
}

impl UtcTime {
    /// Seconds since 1970-01-01 00:00:00 UTC, or `None` for a date or time that does not exist
    /// (month 13, 30 February, 24:00) or one before 1970.
    pub fn to_unix_seconds(self) -> Option<u64> {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let days_in_month = match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap(self.year) => 29,
            2 => 28,
            _ => return None,
        };
        if self.year < 1970
            || self.year > 9999
            || self.day == 0
            || self.day > days_in_month
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if self.month <= 2 {
            self.year - 1
        } else {
            self.year
        };
        let era = y / 400;
        let yoe = y - era * 400;
        let mp = if self.month > 2 {
            self.month - 3
        } else {
            self.month + 9
        };
        let doy = (153 * mp + 2) / 5 + self.day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = (era * 146_097 + doe).checked_sub(719_468)?;
        Some(days * 86_400 + self.hour * 3600 + self.minute * 60 + self.second)
    }
}

impl std::fmt::Display for UtcTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_in_utc() {
        assert_eq!(Timestamp(0).utc().to_string(), "1970-01-01 00:00:00 UTC");
        // 2024 is a leap year: its 29 February exists, and 1 March follows.
        assert_eq!(
            UtcTime::from_unix_seconds(1_709_251_199).to_string(),
            "2024-02-29 23:59:59 UTC"
        );
        for unix in [0, 951_782_400, 1_709_251_199, 1_796_628_093] {
            assert_eq!(
                UtcTime::from_unix_seconds(unix).to_unix_seconds(),
                Some(unix)
            );
        }
        let feb_30 = UtcTime {
            day: 30,
            ..UtcTime::from_unix_seconds(951_782_400)
        };
        assert_eq!(feb_30.to_unix_seconds(), None);
        assert_eq!(
            Timestamp(1_796_628_093_958).utc().to_string(),
            "2026-12-07 07:21:33 UTC"
        );
    }
}

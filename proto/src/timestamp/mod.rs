//! [`TimeStamp`]: ZODB's transaction id, exactly as the `persistent` package computes it.
//!
//! Layout (big-endian): bytes 0–3 hold the minutes since 1900-01-01 00:00 UTC, counting every
//! month as 31 days; bytes 4–7 hold `floor(seconds · 2³² / 60)`. Sorting the raw bytes sorts by
//! time. The arithmetic below follows `persistent/_timestamp.c`, the implementation Python
//! actually runs, including its floating-point steps, so that tids, `timeTime()` values and
//! `str()` output match Python's bit for bit (the golden tests check this).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Tid;

/// Seconds per unit of the low 32 bits: 60 / 2³² (`TS_SECOND_BYTES_BIAS`).
const SECOND_BIAS: f64 = 60.0 / 65536.0 / 65536.0;
const BASE_YEAR: i32 = 1900;
const MINUTES_PER_DAY: u32 = 1440;
/// Every month is 31 days in the encoding.
const MINUTES_PER_MONTH: u32 = 31 * MINUTES_PER_DAY;
const MINUTES_PER_YEAR: u32 = 12 * MINUTES_PER_MONTH;

const MONTH_LEN: [[u32; 12]; 2] =
    [[31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]];
/// Days before each month (`joff` in the C code).
const DAYS_BEFORE_MONTH: [[u32; 12]; 2] =
    [[0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335]];

/// Why a date cannot be a [`TimeStamp`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimeStampError {
    /// Years before 1900 cannot be encoded, nor years whose minute count overflows 32 bits
    /// (after 9917).
    #[error("year {0} is outside the TimeStamp range 1900..=9917")]
    Year(i64),
    /// Month outside 1..=12.
    #[error("month must be between 1 and 12: {0}")]
    Month(u32),
    /// Day outside the month.
    #[error("day must be between 1 and {max}: {day}")]
    Day {
        /// The day given.
        day: u32,
        /// Days in that month.
        max: u32,
    },
    /// Hour outside 0..=23.
    #[error("hour must be between 0 and 23: {0}")]
    Hour(u32),
    /// Minute outside 0..=59.
    #[error("minute must be between 0 and 59: {0}")]
    Minute(u32),
    /// Seconds must be finite and in `[0, 60)`. (The C code accepts anything and then
    /// overflows silently.)
    #[error("seconds must be in [0, 60): {0}")]
    Seconds(f64),
    /// A Unix time that is not finite.
    #[error("not a valid time: {0}")]
    Time(f64),
}

/// A ZODB transaction id (`persistent.TimeStamp`). Ordered like its raw bytes, which is time
/// order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeStamp(pub [u8; 8]);

fn leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1-based; out-of-range months count as 31, they only come from raw bytes
/// that no encoder writes).
fn days_in_month(year: i32, month: u32) -> u32 {
    let row = MONTH_LEN[usize::from(leap(year))];
    month.checked_sub(1).and_then(|m| row.get(m as usize)).copied().unwrap_or(31)
}

/// The date parts of the high 32 bits.
struct Parts {
    year: i32,
    month: u32,
    day: u32,
    /// Minute of the day, 0..1440.
    minute_of_day: u32,
}

impl TimeStamp {
    /// The timestamp with these raw bytes (any 8 bytes are a valid TimeStamp).
    pub const fn from_raw(raw: [u8; 8]) -> Self {
        TimeStamp(raw)
    }

    /// The raw bytes: the tid as stored and sent.
    pub const fn raw(&self) -> Tid {
        self.0
    }

    /// The raw bytes as a big-endian u64.
    pub const fn as_u64(&self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// The timestamp whose raw bytes are `n` big-endian.
    pub const fn from_u64(n: u64) -> Self {
        TimeStamp(n.to_be_bytes())
    }

    /// `TimeStamp(year, month, day, hour, minute, seconds)` in UTC. The seconds are truncated
    /// to units of 60/2³² s (about 14 ns), as the C code does.
    ///
    /// # Errors
    ///
    /// [`TimeStampError`] for a field out of range.
    pub fn from_utc(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        seconds: f64,
    ) -> Result<Self, TimeStampError> {
        if year < BASE_YEAR {
            return Err(TimeStampError::Year(i64::from(year)));
        }
        if !(1..=12).contains(&month) {
            return Err(TimeStampError::Month(month));
        }
        let max = days_in_month(year, month);
        if !(1..=max).contains(&day) {
            return Err(TimeStampError::Day { day, max });
        }
        if hour > 23 {
            return Err(TimeStampError::Hour(hour));
        }
        if minute > 59 {
            return Err(TimeStampError::Minute(minute));
        }
        if !(0.0..60.0).contains(&seconds) {
            return Err(TimeStampError::Seconds(seconds));
        }
        let years = u64::from(year.abs_diff(BASE_YEAR));
        let months = years * 12 + u64::from(month - 1);
        let days = months * 31 + u64::from(day - 1);
        let minutes = (days * 24 + u64::from(hour)) * 60 + u64::from(minute);
        let minutes = u32::try_from(minutes).map_err(|_| TimeStampError::Year(i64::from(year)))?;
        // In [0, 2^32) because seconds < 60; `as` truncates toward zero like the C cast.
        let fraction = (seconds / SECOND_BIAS) as u32;
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&minutes.to_be_bytes());
        raw[4..].copy_from_slice(&fraction.to_be_bytes());
        Ok(TimeStamp(raw))
    }

    /// The timestamp for a Unix time, as ZODB's `newTid` builds it:
    /// `TimeStamp(*time.gmtime(t)[:5] + (t % 60,))`.
    ///
    /// # Errors
    ///
    /// [`TimeStampError`] for a non-finite time or one outside years 1900..=9917.
    pub fn from_unix(t: f64) -> Result<Self, TimeStampError> {
        if !t.is_finite() {
            return Err(TimeStampError::Time(t));
        }
        // Far outside the encodable years; also keeps the i64 conversion below exact.
        if t.abs() > 1e13 {
            return Err(TimeStampError::Year(if t < 0.0 { 0 } else { i64::MAX }));
        }
        let whole = t.floor() as i64; // |t| <= 1e13, so this is exact.
        let days = whole.div_euclid(86_400);
        let second_of_day = whole.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let year = i32::try_from(year).map_err(|_| TimeStampError::Year(year))?;
        // Python's float `%`: fmod, shifted into [0, 60) for negative times.
        let mut seconds = t % 60.0;
        if seconds < 0.0 {
            seconds += 60.0;
        }
        let hour = (second_of_day / 3600) as u32; // 0..24
        let minute = (second_of_day % 3600 / 60) as u32; // 0..60
        Self::from_utc(year, month, day, hour, minute, seconds)
    }

    /// The current time, as ZODB's `newTid(None)`.
    ///
    /// A clock outside years 1900..=9917 is clamped to the nearest end of that range: this is
    /// infallible because a server cannot do anything better with a broken clock, and
    /// [`TimeStamp::later_than`] keeps tids increasing regardless.
    pub fn now() -> Self {
        let t = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as f64 / 1e9,
            Err(e) => -(e.duration().as_nanos() as f64 / 1e9),
        };
        Self::from_unix(t).unwrap_or(if t < 0.0 { TimeStamp([0; 8]) } else { TimeStamp([0xff; 8]) })
    }

    /// `self` if it is later than `prev`, otherwise the smallest timestamp after `prev`:
    /// `prev`'s low 32 bits plus one, and when those overflow, the next minute (with real
    /// calendar arithmetic: month lengths and leap years) at second 0. This is how a storage
    /// keeps tids strictly increasing when the clock stalls or steps back.
    pub fn later_than(&self, prev: &TimeStamp) -> TimeStamp {
        if self > prev {
            return *self;
        }
        let [a0, a1, a2, a3, b0, b1, b2, b3] = prev.0;
        let low = u32::from_be_bytes([b0, b1, b2, b3]);
        if let Some(next) = low.checked_add(1) {
            let mut raw = prev.0;
            raw[4..].copy_from_slice(&next.to_be_bytes());
            return TimeStamp(raw);
        }
        let p = prev.parts();
        let (mut year, mut month, mut day, mut minute_of_day) = (p.year, p.month, p.day, p.minute_of_day);
        if minute_of_day >= 1439 {
            minute_of_day = 0;
            if day == days_in_month(year, month) {
                day = 1;
                if month == 12 {
                    month = 1;
                    year += 1;
                } else {
                    month += 1;
                }
            } else {
                day += 1;
            }
        } else {
            minute_of_day += 1;
        }
        let next = Self::from_utc(year, month, day, minute_of_day / 60, minute_of_day % 60, 0.0);
        // Only raw bytes no encoder writes (a day past the end of its month, the last minute
        // of 9917) fail the calendar step, where Python would raise. We still must return
        // something later than `prev`: the next minute count, at second 0.
        // At the very last minute there is nothing later; the maximum is the best we can do.
        next.unwrap_or_else(|_| match u32::from_be_bytes([a0, a1, a2, a3]).checked_add(1) {
            Some(minutes) => {
                let mut raw = [0u8; 8];
                raw[..4].copy_from_slice(&minutes.to_be_bytes());
                TimeStamp(raw)
            }
            None => TimeStamp([0xff; 8]),
        })
    }

    fn minutes(&self) -> u32 {
        let [a0, a1, a2, a3, ..] = self.0;
        u32::from_be_bytes([a0, a1, a2, a3])
    }

    fn parts(&self) -> Parts {
        let m = self.minutes();
        Parts {
            // At most 1900 + 2^32 / 535680 = 9917: no overflow.
            year: (m / MINUTES_PER_YEAR) as i32 + BASE_YEAR,
            month: m % MINUTES_PER_YEAR / MINUTES_PER_MONTH + 1,
            day: m % MINUTES_PER_MONTH / MINUTES_PER_DAY + 1,
            minute_of_day: m % MINUTES_PER_DAY,
        }
    }

    /// The year (UTC).
    pub fn year(&self) -> i32 {
        self.parts().year
    }

    /// The month, 1..=12.
    pub fn month(&self) -> u32 {
        self.parts().month
    }

    /// The day of the month, 1..=31.
    pub fn day(&self) -> u32 {
        self.parts().day
    }

    /// The hour, 0..=23.
    pub fn hour(&self) -> u32 {
        self.parts().minute_of_day / 60
    }

    /// The minute, 0..=59.
    pub fn minute(&self) -> u32 {
        self.parts().minute_of_day % 60
    }

    /// The seconds within the minute, with the encoding's resolution.
    pub fn second(&self) -> f64 {
        let [.., b0, b1, b2, b3] = self.0;
        SECOND_BIAS * f64::from(u32::from_be_bytes([b0, b1, b2, b3]))
    }

    /// Seconds since the Unix epoch (`timeTime()`), reported by `history` and `undoLog`.
    /// Computed with the C code's floating-point steps so the float is identical.
    pub fn time_time(&self) -> f64 {
        let p = self.parts();
        abs_seconds(p.year, p.month - 1, p.day - 1, p.minute_of_day) + self.second() - abs_seconds(1970, 0, 0, 0)
    }
}

/// Days before Jan 1 of `year`, relative to 1900, as a float (`TimeStamp_yad`).
fn year_days(year: i32) -> f64 {
    let mut y = year - BASE_YEAR;
    let d = f64::from((y - 1) * 365);
    let s = if y > 0 {
        y -= 1;
        1.0
    } else {
        y = -y;
        -1.0
    };
    d + s * f64::from(y / 4 - y / 100 + (y + 300) / 400)
}

/// Seconds since 1900 for a 0-based month and day (`TimeStamp_abst` with seconds 0).
fn abs_seconds(year: i32, month0: u32, day0: u32, minute_of_day: u32) -> f64 {
    let before = DAYS_BEFORE_MONTH[usize::from(leap(year))].get(month0 as usize).copied().unwrap_or(0);
    (year_days(year) + f64::from(before) + f64::from(day0)) * 86400.0 + f64::from(minute_of_day * 60)
}

/// Proleptic Gregorian date for days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `str(TimeStamp)`: `YYYY-MM-DD HH:MM:SS.ffffff`.
impl fmt::Display for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.parts();
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:09.6}",
            p.year,
            p.month,
            p.day,
            p.minute_of_day / 60,
            p.minute_of_day % 60,
            self.second()
        )
    }
}

/// Hex of the raw bytes plus the date, e.g. `TimeStamp(040d2a9043ad2911 = 2026-…)`.
impl fmt::Debug for TimeStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeStamp({:016x} = {self})", self.as_u64())
    }
}

impl From<[u8; 8]> for TimeStamp {
    fn from(raw: [u8; 8]) -> Self {
        TimeStamp(raw)
    }
}

impl From<TimeStamp> for [u8; 8] {
    fn from(ts: TimeStamp) -> Self {
        ts.0
    }
}

#[cfg(test)]
#[rustfmt::skip] // generated by proto/testdata/gen_golden.py
mod golden_data;
#[cfg(test)]
mod tests;

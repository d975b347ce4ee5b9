use proptest::prelude::*;

use super::golden_data::{FROM_RAW, FROM_UNIX, FROM_UTC, LATER_THAN};
use super::*;

fn ts(hex: &str) -> TimeStamp {
    let n = u64::from_str_radix(hex, 16).expect("hex");
    TimeStamp::from_u64(n)
}

fn hex(t: TimeStamp) -> String {
    format!("{:016x}", t.as_u64())
}

/// `TimeStamp(y, m, d, h, mi, s)`: raw bytes, `str()` and `timeTime()` as persistent computes
/// them (including the six-decimal rounding of `%09.6f`, ties and all).
#[test]
fn from_utc_matches_persistent() {
    for &(y, mo, d, hh, mi, s, raw, text, time) in FROM_UTC {
        let s = f64::from_bits(s);
        let t = TimeStamp::from_utc(y, mo, d, hh, mi, s).expect("valid date");
        assert_eq!(hex(t), raw, "{y}-{mo}-{d} {hh}:{mi}:{s}");
        assert_eq!(t.to_string(), text, "{raw}");
        assert_eq!(t.time_time().to_bits(), time, "{raw}: {}", t.time_time());
    }
}

/// ZODB's `newTid`: `TimeStamp(*time.gmtime(t)[:5] + (t % 60,))`.
#[test]
fn from_unix_matches_new_tid() {
    for &(t, raw) in FROM_UNIX {
        let t = f64::from_bits(t);
        assert_eq!(hex(TimeStamp::from_unix(t).expect("in range")), raw, "{t}");
    }
}

/// Accessors, `str()` and `timeTime()` on arbitrary raw bytes, even impossible dates.
#[test]
fn accessors_match_persistent_on_any_bytes() {
    for &(raw, text, time, y, mo, d, hh, mi, sec) in FROM_RAW {
        let t = ts(raw);
        assert_eq!(t.to_string(), text, "{raw}");
        assert_eq!(t.time_time().to_bits(), time, "{raw}");
        assert_eq!((t.year(), t.month(), t.day(), t.hour(), t.minute()), (y, mo, d, hh, mi), "{raw}");
        assert_eq!(t.second().to_bits(), sec, "{raw}");
    }
}

/// `laterThan`, including the carry into the next minute, day, month and year (Dec 31 23:59
/// with low bits ffffffff), leap years, and `self` already being later.
#[test]
fn later_than_matches_persistent() {
    for &(this, prev, expected) in LATER_THAN {
        assert_eq!(hex(ts(this).later_than(&ts(prev))), expected, "{this}.laterThan({prev})");
    }
    let dec31 = TimeStamp::from_utc(2025, 12, 31, 23, 59, 0.0).expect("valid");
    let prev = TimeStamp::from_u64(dec31.as_u64() | 0xffff_ffff);
    let next = dec31.later_than(&prev);
    assert_eq!(next, TimeStamp::from_utc(2026, 1, 1, 0, 0, 0.0).expect("valid"));
    assert_eq!(next.to_string(), "2026-01-01 00:00:00.000000");
}

#[test]
fn validation() {
    use TimeStampError as E;
    assert_eq!(TimeStamp::from_utc(1899, 12, 31, 0, 0, 0.0), Err(E::Year(1899)));
    assert_eq!(TimeStamp::from_utc(9918, 1, 1, 0, 0, 0.0), Err(E::Year(9918)));
    assert!(TimeStamp::from_utc(9917, 1, 1, 0, 0, 0.0).is_ok());
    assert_eq!(TimeStamp::from_utc(2000, 13, 1, 0, 0, 0.0), Err(E::Month(13)));
    assert_eq!(TimeStamp::from_utc(2000, 0, 1, 0, 0, 0.0), Err(E::Month(0)));
    assert_eq!(TimeStamp::from_utc(2023, 2, 29, 0, 0, 0.0), Err(E::Day { day: 29, max: 28 }));
    assert!(TimeStamp::from_utc(2024, 2, 29, 0, 0, 0.0).is_ok());
    assert_eq!(TimeStamp::from_utc(2000, 1, 0, 0, 0, 0.0), Err(E::Day { day: 0, max: 31 }));
    assert_eq!(TimeStamp::from_utc(2000, 1, 1, 24, 0, 0.0), Err(E::Hour(24)));
    assert_eq!(TimeStamp::from_utc(2000, 1, 1, 0, 60, 0.0), Err(E::Minute(60)));
    assert_eq!(TimeStamp::from_utc(2000, 1, 1, 0, 0, 60.0), Err(E::Seconds(60.0)));
    assert_eq!(TimeStamp::from_utc(2000, 1, 1, 0, 0, -0.5), Err(E::Seconds(-0.5)));
    assert!(TimeStamp::from_utc(2000, 1, 1, 0, 0, f64::NAN).is_err());
    assert!(TimeStamp::from_unix(f64::INFINITY).is_err());
    assert!(TimeStamp::from_unix(-3e9).is_err());
    assert!(TimeStamp::from_unix(1e300).is_err());
}

#[test]
fn conversions_and_order() {
    let t = TimeStamp::from_raw([4, 13, 42, 144, 67, 173, 41, 17]);
    assert_eq!(t.as_u64(), 0x040d_2a90_43ad_2911);
    assert_eq!(TimeStamp::from_u64(t.as_u64()), t);
    assert_eq!(<[u8; 8]>::from(t), t.raw());
    assert_eq!(TimeStamp::from(t.raw()), t);
    assert!(TimeStamp::from_u64(1) < TimeStamp::from_u64(2));
    assert!(TimeStamp::from_u64(0x0100) < TimeStamp::from_u64(0x0001_0000_0000));
    assert!(format!("{t:?}").starts_with("TimeStamp(040d2a9043ad2911 = "));
}

#[test]
fn now_is_plausible_and_increasing_with_later_than() {
    let a = TimeStamp::now();
    assert!(a.year() >= 2025, "{a}");
    let b = TimeStamp::now().later_than(&a);
    assert!(b > a);
    assert!(a.later_than(&a) > a);
}

proptest! {
    /// The result is never earlier than `prev`, and later unless `prev` is the very last
    /// encodable minute's last tick.
    #[test]
    fn later_than_is_later(this in any::<u64>(), prev in any::<u64>()) {
        let (this, prev) = (TimeStamp::from_u64(this), TimeStamp::from_u64(prev));
        let next = this.later_than(&prev);
        prop_assert!(next >= prev);
        if prev.as_u64() >> 32 != u64::from(u32::MAX) {
            prop_assert!(next > prev);
        }
        if this > prev {
            prop_assert_eq!(next, this);
        }
    }

    /// Every valid date survives the encoding (seconds to within one tick).
    #[test]
    fn from_utc_round_trips(y in 1900i32..9917, mo in 1u32..=12, d in 1u32..=28, hh in 0u32..24,
                            mi in 0u32..60, s in 0.0f64..60.0) {
        let t = TimeStamp::from_utc(y, mo, d, hh, mi, s).expect("valid");
        prop_assert_eq!((t.year(), t.month(), t.day(), t.hour(), t.minute()), (y, mo, d, hh, mi));
        prop_assert!((t.second() - s).abs() < 2e-8);
    }
}

//! ZConfig's datatypes for the keys zeo-server reads (`datatypes.py` of ZConfig, ZEO's
//! `socket-binding-address`, the logger's levels), each giving an error on the key's line.

use std::path::PathBuf;

use super::parse::Key;
use super::{ConfigError, HostPort, LogLevel, err};
use crate::config::values::Setting;

/// ZConfig's `boolean`.
pub(super) fn boolean(k: &Key) -> Result<bool, ConfigError> {
    match k.value.to_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err(err(&k.loc, format!("{} {:?}: not a boolean (true/false, yes/no, on/off)", k.name, k.value))),
    }
}

/// ZConfig's `integer`, for counts and seconds (never negative here).
pub(super) fn integer(k: &Key) -> Result<u64, ConfigError> {
    k.value.trim().parse().map_err(|_| err(&k.loc, format!("{} {:?}: not a non-negative integer", k.name, k.value)))
}

/// ZConfig's `byte-size`: an integer with an optional KB, MB or GB suffix (powers of 1024).
pub(super) fn byte_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let lower = v.to_lowercase();
    let (digits, mult) = match lower.len().checked_sub(2).map(|i| lower.split_at(i)) {
        Some((d, "kb")) => (d, 1u64 << 10),
        Some((d, "mb")) => (d, 1 << 20),
        Some((d, "gb")) => (d, 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: u64 =
        digits.trim().parse().map_err(|_| format!("{value:?} is not a byte size (e.g. 500000, 300KB, 10MB, 2GB)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{value:?} is too large"))
}

/// ZConfig's `existing-dirpath`, as far as zeo-server follows it: the path as written (relative
/// to the working directory). ZConfig expands a leading `~`; zeo-server refuses it rather than
/// guess whose home directory the file meant.
pub(super) fn dirpath(k: &Key) -> Result<PathBuf, ConfigError> {
    if k.value.starts_with('~') {
        return Err(err(&k.loc, format!("{} {}: zeo-server does not expand ~; write the full path", k.name, k.value)));
    }
    Ok(PathBuf::from(&k.value))
}

/// ZEO's `socket-binding-address`: `host:port`, `:port` or `port` (every interface), or a Unix
/// socket path (anything with a `/`), which zeo-server does not serve.
pub(super) fn address(value: &str) -> Result<HostPort, String> {
    let v = value.trim();
    if v.contains('/') {
        return Err(format!("{v:?} is a Unix socket path; zeo-server listens on TCP only (write HOST:PORT)"));
    }
    let port_only = v.strip_prefix(':').unwrap_or(v);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        return HostPort::parse(&format!("0.0.0.0:{port_only}"));
    }
    HostPort::parse(v)
}

/// ZConfig's logging levels (names or 0..=50), as a threshold number.
pub(super) fn level_number(k: &Key) -> Result<u8, ConfigError> {
    let n = match k.value.to_lowercase().as_str() {
        "critical" | "fatal" => 50,
        "error" => 40,
        "warn" | "warning" => 30,
        "info" => 20,
        "blather" => 15,
        "debug" => 10,
        "trace" => 5,
        "all" => 1,
        "notset" => 0,
        other => other.parse::<u8>().ok().filter(|n| *n <= 50).ok_or_else(|| {
            err(
                &k.loc,
                format!("level {:?}: not a log level (critical, error, warn, info, debug, trace, all)", k.value),
            )
        })?,
    };
    Ok(n)
}

pub(super) fn log_level(threshold: u8) -> LogLevel {
    match threshold {
        40.. => LogLevel::Error,
        30.. => LogLevel::Warn,
        20.. => LogLevel::Info,
        10.. => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

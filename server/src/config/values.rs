//! Parsers for setting values. Flags, environment variables and YAML scalars all go through the same
//! `Setting::parse`, so "30s", "64MiB" or "10.0.0.0/8" mean the same thing in every layer.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer};

/// A value that can be written as text (a flag, an environment variable or a YAML scalar).
pub(super) trait Setting: Sized {
    fn parse(s: &str) -> Result<Self, String>;
}

/// Any YAML scalar, turned into text so that `Setting::parse` decides what it means.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Bool(bool),
    Int(u64),
    Float(f64),
    Str(String),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Str(s) => s,
        }
    }
}

fn deserialize_setting<'de, T: Setting, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    let text = Scalar::deserialize(d)?.into_string();
    T::parse(&text).map_err(de::Error::custom)
}

macro_rules! yaml_via_setting {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_setting(d)
            }
        }
    )*};
}
yaml_via_setting!(
    HostPort,
    ByteSize,
    Seconds,
    Cidr,
    super::LogFormat,
    super::LogLevel,
    Toggle<Seconds>,
    Toggle<HostPort>
);

/// A `HOST:PORT` address, kept unresolved so a host name can be bound (`localhost:8100`).
/// IPv6 literals are written in brackets (`[::1]:8100`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port; 0 asks the OS for a free one (see `--ready-file`).
    pub port: u16,
}

impl HostPort {
    /// The form `tokio::net::TcpListener::bind` takes.
    pub fn as_tuple(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Setting for HostPort {
    fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or_else(|| format!("{s:?} is not [IPv6]:PORT"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("{host:?} is not an IPv6 address"))?;
            (host, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
            if host.contains(':') {
                return Err(format!("{s:?}: write IPv6 addresses in brackets, e.g. [::1]:8100"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(format!("{s:?} has no host (use 0.0.0.0:PORT to listen everywhere)"));
        }
        let port = port.parse().map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
        Ok(HostPort { host: host.to_owned(), port })
    }
}

/// A byte count: a plain number or one with a `KiB`, `MiB` or `GiB` suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ByteSize(pub u64);

impl Setting for ByteSize {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a byte count (e.g. 1048576 or 64MiB)"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// A duration: humantime (`30s`, `1m 30s`, `500ms`) or a plain number of seconds (`30`, `1.5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seconds(pub Duration);

impl Setting for Seconds {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Duration::try_from_secs_f64(secs)
                .map(Seconds)
                .map_err(|_| format!("{s:?} is not a valid number of seconds"));
        }
        humantime::parse_duration(t).map(Seconds).map_err(|e| format!("{s:?} is not a duration like 30s or 1m ({e})"))
    }
}

/// A setting that can also be switched off with `off` or `none` (for example to override a value a
/// lower layer set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Toggle<T>(pub Option<T>);

impl<T: Setting> Setting for Toggle<T> {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "false" => Ok(Toggle(None)),
            other => T::parse(other).map(|v| Toggle(Some(v))),
        }
    }
}

/// An allow-list entry: a CIDR network, or a bare address meaning just that host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cidr(pub IpNet);

impl Setting for Cidr {
    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Cidr(net));
        }
        t.parse::<IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| format!("{s:?} is not a CIDR network or address"))
    }
}

impl Setting for super::LogFormat {
    fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "plain" => Ok(super::LogFormat::Plain),
            "json" => Ok(super::LogFormat::Json),
            other => Err(format!("log format {other:?} is not json or plain")),
        }
    }
}

impl Setting for super::LogLevel {
    fn parse(s: &str) -> Result<Self, String> {
        use super::LogLevel::*;
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Error),
            "warn" | "warning" => Ok(Warn),
            "info" => Ok(Info),
            "debug" => Ok(Debug),
            "trace" => Ok(Trace),
            other => Err(format!("log level {other:?} is not error, warn, info, debug or trace")),
        }
    }
}

/// `true`/`false` and the usual spellings (`1`, `yes`, `on`, ...), for environment variables.
pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true/false)")),
    }
}

/// A non-negative integer count.
pub(super) fn parse_count(s: &str) -> Result<usize, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not a non-negative integer"))
}

/// `NAME=VALUE`, as in `--storage NAME=FILE` and `--storage-blob-dir NAME=DIR`.
pub(super) fn parse_named_path(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=PATH"))?;
    if path.is_empty() {
        return Err(format!("{s:?} has an empty path"));
    }
    Ok((name.trim().to_owned(), PathBuf::from(path)))
}

/// What a client identity may do (`--identity NAME=rw|ro`). A read-only connection is served as if it had registered read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
pub enum AccessMode {
    #[serde(rename = "rw", alias = "read-write")]
    ReadWrite,
    #[serde(rename = "ro", alias = "read-only")]
    ReadOnly,
}

impl AccessMode {
    pub fn is_read_only(self) -> bool {
        self == AccessMode::ReadOnly
    }
}

impl FromStr for AccessMode {
    type Err = String;

    fn from_str(s: &str) -> Result<AccessMode, String> {
        match s.trim() {
            "rw" | "read-write" => Ok(AccessMode::ReadWrite),
            "ro" | "read-only" => Ok(AccessMode::ReadOnly),
            other => Err(format!("role {other:?} is not rw or ro")),
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_read_only() { "ro" } else { "rw" })
    }
}

/// `NAME=rw|ro`, as in `--identity`.
pub(super) fn parse_identity(s: &str) -> Result<(String, AccessMode), String> {
    let (name, mode) = s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not NAME=rw or NAME=ro"))?;
    if name.trim().is_empty() {
        return Err(format!("{s:?} has an empty identity name"));
    }
    Ok((name.trim().to_owned(), mode.parse()?))
}

/// Splits a comma-separated environment value, ignoring blanks around and between items.
pub(super) fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// A peer address `HOST:PORT`, kept as text so that it is resolved again at every connection (the
/// primary's address moves in a failover).
pub fn parse_peer(s: &str) -> Result<String, String> {
    let hp = HostPort::parse(s)?;
    if hp.port == 0 {
        return Err(format!("{s:?}: the port must not be 0"));
    }
    Ok(s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes_parse_and_display() {
        assert_eq!("rw".parse::<AccessMode>().unwrap(), AccessMode::ReadWrite);
        assert_eq!("read-only".parse::<AccessMode>().unwrap(), AccessMode::ReadOnly);
        assert!("admin".parse::<AccessMode>().is_err());
        assert_eq!((AccessMode::ReadWrite.to_string(), AccessMode::ReadOnly.to_string()), ("rw".into(), "ro".into()));
        assert!(AccessMode::ReadOnly.is_read_only() && !AccessMode::ReadWrite.is_read_only());
    }

    #[test]
    fn host_port_forms() {
        let hp = HostPort::parse("127.0.0.1:0").unwrap();
        assert_eq!(hp.as_tuple(), ("127.0.0.1", 0));
        assert_eq!(HostPort::parse("localhost:8100").unwrap().to_string(), "localhost:8100");
        let v6 = HostPort::parse("[::1]:8100").unwrap();
        assert_eq!((v6.host.as_str(), v6.to_string().as_str()), ("::1", "[::1]:8100"));
        for bad in ["8100", ":8100", "::1:8100", "[::1]8100", "[nope]:1", "host:99999", "host:"] {
            assert!(HostPort::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("2 GiB").unwrap().0, 2 << 30);
        assert!(ByteSize::parse("12MB").unwrap_err().contains("unit"));
        assert!(ByteSize::parse("-1").is_err());
        assert!(ByteSize::parse("99999999999999GiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(Seconds::parse("30s").unwrap().0, Duration::from_secs(30));
        assert_eq!(Seconds::parse("30").unwrap().0, Duration::from_secs(30));
        assert_eq!(Seconds::parse("1.5").unwrap().0, Duration::from_millis(1500));
        assert_eq!(Seconds::parse("1m 30s").unwrap().0, Duration::from_secs(90));
        assert!(Seconds::parse("-1").is_err());
        assert!(Seconds::parse("soon").is_err());
        assert_eq!(Toggle::<Seconds>::parse("off").unwrap().0, None);
        assert_eq!(Toggle::<Seconds>::parse("5s").unwrap().0, Some(Seconds(Duration::from_secs(5))));
    }

    #[test]
    fn cidrs_bools_and_pairs() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().0.to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().0.to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("::1").unwrap().0.to_string(), "::1/128");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(parse_bool("yes").unwrap() && !parse_bool("0").unwrap() && parse_bool("maybe").is_err());
        assert_eq!(parse_named_path("a=/x=y").unwrap(), ("a".to_owned(), PathBuf::from("/x=y")));
        assert!(parse_named_path("a").is_err() && parse_named_path("a=").is_err());
        assert_eq!(parse_identity("CN=x=ro").unwrap(), ("CN=x".to_owned(), AccessMode::ReadOnly));
        assert!(parse_identity("alice=admin").is_err() && parse_identity("=rw").is_err());
        assert_eq!(split_list(" a, ,b ,").collect::<Vec<_>>(), ["a", "b"]);
    }
}

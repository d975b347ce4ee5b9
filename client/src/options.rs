//! [`ClientOptions`]: what a client connects to and how patient it is, their defaults and
//! the rules they must follow; and the [`RetryPolicy`] of [`Client::transact`].
//!
//! [`Client::transact`]: crate::Client::transact

use std::time::Duration;

use zeo_proto::frame::DEFAULT_MAX_FRAME;

use crate::connection::ConnConfig;
use crate::error::{ClientError, Result};
use crate::transport::{DialConfig, Tls, TlsOptions};

/// What a [`Client`](crate::Client) connects to and how patient it is.
///
/// Build with [`ClientOptions::new`] and adjust fields; [`Client::connect`](crate::Client::connect)
/// validates them.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Server addresses as `host:port`, or `unix:/path` (or an absolute path) for a Unix
    /// socket. Host names are resolved again at every connection attempt, so a service address
    /// that moves (failover) is followed. All addresses are
    /// tried in parallel; a writable server is preferred.
    pub addrs: Vec<String>,
    /// The storage name to register for (ZEO's default is `"1"`).
    pub storage: String,
    /// Register read-only: writes fail locally with [`ClientError::ReadOnly`].
    pub read_only: bool,
    /// Accept a read-only server when no writable one is reachable, and keep looking for a
    /// writable one every [`ClientOptions::upgrade_interval`] (ZEO's `read_only_fallback`).
    pub read_only_fallback: bool,
    /// Deadline of each call to the server, including the wait for a connection.
    pub call_timeout: Duration,
    /// Budget of one connection attempt: TCP connect, hello and `register`.
    pub connect_timeout: Duration,
    /// How long [`Client::connect`](crate::Client::connect) waits for the first connection.
    pub wait_timeout: Duration,
    /// First delay between failed connection attempts; doubled after each failure.
    pub reconnect_min: Duration,
    /// Largest delay between failed connection attempts. Delays are jittered (50-100%).
    pub reconnect_max: Duration,
    /// How often an idle connection pings the server.
    pub heartbeat_interval: Duration,
    /// How long a ping may go unanswered before the connection is declared dead. A dead or
    /// stopped server is noticed within `heartbeat_interval + heartbeat_timeout`. It must also
    /// exceed the time needed to upload the largest transaction: pings queue behind the
    /// records being sent.
    pub heartbeat_timeout: Duration,
    /// Budget of the in-memory cache in bytes (0 disables caching).
    pub cache_bytes: usize,
    /// How often a read-only fallback connection looks for a writable server.
    pub upgrade_interval: Duration,
    /// How long a commit whose connection died during `tpc_finish` keeps trying to find out
    /// whether it committed before giving up with [`ClientError::CommitOutcomeUnknown`].
    pub commit_resolve_timeout: Duration,
    /// Accept a server that is behind the cache by dropping the cache (data the client saw
    /// may then be missing on that server). Off by default: such a server is refused.
    pub drop_cache_if_server_behind: bool,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// Retries of [`Client::transact`](crate::Client::transact).
    pub retry: RetryPolicy,
    /// TCP keepalive: probe an idle connection after this long (then every second, 3 probes),
    /// so a server whose host vanished is noticed even between heartbeats. `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// Linux `TCP_USER_TIMEOUT`: a connection whose sent data stays unacknowledged this long
    /// is closed by the kernel (a dead host during a commit), instead of after the default
    /// retransmission timeout of about 15 minutes. `None`: the system default.
    pub tcp_user_timeout: Option<Duration>,
    /// TLS (with a client certificate when the server asks for one). The files are read again
    /// at every connection, so rotated certificates are picked up. `None`: plain.
    pub tls: Option<TlsOptions>,
    /// A persistent cache file: loaded at start (then verified against the server like any
    /// cache after a disconnection), saved every [`ClientOptions::cache_save_interval`] when
    /// it changed, and on [`Client::close`](crate::Client::close). Bounded by
    /// [`ClientOptions::cache_bytes`].
    pub cache_file: Option<std::path::PathBuf>,
    pub cache_save_interval: Duration,
}

impl ClientOptions {
    /// Defaults for the given addresses: storage `"1"`, writable, 30 s calls, 10 s connect,
    /// reconnect backoff 100 ms..5 s, heartbeat every 5 s with 10 s to answer, 64 MiB cache.
    pub fn new<S: Into<String>>(addrs: impl IntoIterator<Item = S>) -> ClientOptions {
        ClientOptions {
            addrs: addrs.into_iter().map(Into::into).collect(),
            storage: "1".to_owned(),
            read_only: false,
            read_only_fallback: false,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(10),
            cache_bytes: 64 << 20,
            upgrade_interval: Duration::from_secs(5),
            commit_resolve_timeout: Duration::from_secs(60),
            drop_cache_if_server_behind: false,
            max_frame: DEFAULT_MAX_FRAME,
            retry: RetryPolicy::default(),
            tcp_keepalive: Some(Duration::from_secs(5)),
            tcp_user_timeout: Some(Duration::from_secs(10)),
            tls: None,
            cache_file: None,
            cache_save_interval: Duration::from_secs(10),
        }
    }

    /// Checks the options for mistakes that would make the client misbehave.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] explaining the first rule broken.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(ClientError::Config(msg.to_owned()));
        if self.addrs.is_empty() {
            return fail("at least one server address is needed");
        }
        let zero = Duration::ZERO;
        if [self.call_timeout, self.connect_timeout, self.heartbeat_interval, self.heartbeat_timeout].contains(&zero) {
            return fail("call_timeout, connect_timeout, heartbeat_interval and heartbeat_timeout must be > 0");
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return fail("reconnect_min must be > 0 and <= reconnect_max");
        }
        if self.read_only_fallback && self.upgrade_interval.is_zero() {
            return fail("upgrade_interval must be > 0 with read_only_fallback");
        }
        if self.retry.attempts == 0 {
            return fail("retry.attempts must be >= 1");
        }
        if self.cache_file.is_some() && self.cache_save_interval.is_zero() {
            return fail("cache_save_interval must be > 0 with a cache_file");
        }
        self.conn_config()?;
        Ok(())
    }

    /// The per-connection settings (reads the TLS files).
    pub(crate) fn conn_config(&self) -> Result<ConnConfig> {
        Ok(ConnConfig {
            connect_timeout: self.connect_timeout,
            call_timeout: self.call_timeout,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            max_frame: self.max_frame,
            dial: DialConfig {
                tcp_keepalive: self.tcp_keepalive,
                tcp_user_timeout: self.tcp_user_timeout,
                tls: self.tls.as_ref().map(Tls::load).transpose()?,
            },
        })
    }
}

/// How often [`Client::transact`](crate::Client::transact) tries, and how long it waits between
/// tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further retry, jittered (50-100%).
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 20 ms then 40 ms (jittered), like Zope's request retry.
    fn default() -> Self {
        RetryPolicy { attempts: 3, backoff_min: Duration::from_millis(20), backoff_max: Duration::from_secs(1) }
    }
}

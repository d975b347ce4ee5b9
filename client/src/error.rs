//! [`ClientError`]: everything a client call can fail with, typed so that callers can branch.
//!
//! Server error replies arrive as `(dotted_class_name, payload)` (see `zeo_proto::errors`);
//! [`ClientError::from_server`] maps the class names ZODB code reacts to onto variants, the
//! same way `ZEO.asyncio.client` rebuilds them, and keeps everything else as
//! [`ClientError::Server`] (ZEO's `ServerException`).

use std::fmt;
use std::time::Duration;

use zeo_proto::errors;
use zeo_proto::pickle::Value;
use zeo_proto::{Oid, Tid};

/// The crate's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a client call failed.
///
/// The enum is `Clone` because one failure can complete several waiters at once (folded
/// `loadBefore` calls, every call in flight when a connection dies); causes such as I/O errors
/// are therefore kept as text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A write conflict: another transaction committed `oid` after the serial this transaction
    /// based its store on. Nothing was committed; retrying with a fresh snapshot usually works.
    /// `serials` is `(committed, read)` when the server said so.
    #[error("write conflict on {}{}", fmt_oid_opt(oid), fmt_serials(serials))]
    Conflict {
        /// The conflicting object, when the server named it.
        oid: Option<Oid>,
        /// `(tid currently committed, tid this transaction read)`.
        serials: Option<(Tid, Tid)>,
    },
    /// A read conflict: a `check_current` serial was no longer current at vote, or a load found
    /// that the object did not exist yet at the transaction's snapshot. Nothing was committed;
    /// retrying with a fresh snapshot usually works.
    #[error("read conflict on {}{}", fmt_oid_opt(oid), fmt_serials(serials))]
    ReadConflict {
        /// The object, when known.
        oid: Option<Oid>,
        /// `(tid currently committed, tid this transaction read)`, for vote-time conflicts.
        serials: Option<(Tid, Tid)>,
    },
    /// A write was attempted on a read-only client, a read-only connection, or a read-only
    /// server (which refuses writable registration).
    #[error("the storage is read-only")]
    ReadOnly,
    /// The object does not exist (ZODB's `POSKeyError`): never stored, or deleted.
    #[error("no such object: {}", fmt_oid(oid))]
    PosKey {
        /// The missing object.
        oid: Oid,
    },
    /// No connection, or the connection was lost before the call completed. Whatever the call
    /// was, it had no effect that the client could not account for: a commit that may have
    /// happened is never reported as `Disconnected` (see [`ClientError::CommitOutcomeUnknown`]).
    #[error("disconnected: {reason}")]
    Disconnected {
        /// What happened, for logs.
        reason: String,
    },
    /// A call got no reply within its deadline. The connection is still up; for commits this is
    /// only returned before `tpc_finish` was sent, so nothing was committed.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The call or step that timed out.
        op: String,
        /// The deadline it had.
        after: Duration,
    },
    /// The server refused because it is behind this client's cache: its last transaction is
    /// older than one the client has already seen (for example a failover to a standby that
    /// had not caught up). Serving from it would lose committed data, so the client keeps
    /// looking instead, unless told to drop its cache (`drop_cache_if_server_behind`).
    #[error(
        "server behind client: the server's last transaction {} is older than the cache's {}",
        fmt_oid(server_tid),
        fmt_oid(cache_tid)
    )]
    ServerBehind {
        /// The newest tid the client has seen.
        cache_tid: Tid,
        /// The server's last tid at registration.
        server_tid: Tid,
    },
    /// The connection died after `tpc_finish` was sent, and the client could not find out in
    /// time whether the transaction committed. Never retried automatically: retrying could
    /// apply the same change twice.
    #[error("the outcome of a commit is unknown: {reason}")]
    CommitOutcomeUnknown {
        /// Why it could not be resolved.
        reason: String,
    },
    /// Any other error reply from the server (ZEO's `ServerException`).
    #[error("server error {class}: {message}")]
    Server {
        /// The dotted class name, e.g. `ZODB.POSException.StorageTransactionError`.
        class: String,
        /// A short rendering of the payload.
        message: String,
    },
    /// The server sent something this client does not understand (an unknown protocol
    /// version, a reply of the wrong shape, an undecodable frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The transaction was already committed or aborted.
    #[error("the transaction is already finished")]
    TransactionFinished,
    /// The options are inconsistent.
    #[error("invalid client options: {0}")]
    Config(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A local file (the persistent cache) could not be written.
    #[error("local I/O error: {0}")]
    Io(String),
    /// An object's record is not one the object layer ([`crate::objects`]) can read as the
    /// type asked for: an undecodable pickle, an unsupported class or value, or a record of
    /// another class. Retrying cannot help.
    #[error("record of {} cannot be used: {reason}", fmt_oid(oid))]
    BadRecord {
        /// The object whose record it is.
        oid: Oid,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// Maps a server error reply onto a variant, as `ZEO.asyncio.client` does: the exceptions
    /// ZODB code branches on become their variants, every other class becomes
    /// [`ClientError::Server`].
    pub fn from_server(class: &str, payload: &Value) -> ClientError {
        match class {
            errors::READ_CONFLICT_ERROR => {
                let (oid, serials) = conflict_fields(payload);
                ClientError::ReadConflict { oid, serials }
            }
            // ConflictError and its subclasses (BTreesConflictError, UnresolvableConflict...):
            // all mean "someone else committed this object first".
            c if c.starts_with("ZODB.POSException.") && c.ends_with("ConflictError") => {
                let (oid, serials) = conflict_fields(payload);
                ClientError::Conflict { oid, serials }
            }
            errors::POS_KEY_ERROR => {
                let oid = payload.as_seq().and_then(<[Value]>::first).and_then(Value::as_id);
                ClientError::PosKey { oid: oid.unwrap_or_default() }
            }
            errors::READ_ONLY_ERROR => ClientError::ReadOnly,
            _ => ClientError::Server { class: class.to_owned(), message: describe(payload) },
        }
    }

    /// Whether running the whole transaction again (new snapshot, same logic) may succeed and
    /// is safe: conflicts, and disconnections that certainly left nothing committed. This is
    /// what [`crate::Client::transact`] retries.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Conflict { .. } | ClientError::ReadConflict { .. } | ClientError::Disconnected { .. }
        )
    }

    /// A short label for metrics and logs, one per variant.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Conflict { .. } => "conflict",
            ClientError::ReadConflict { .. } => "read_conflict",
            ClientError::ReadOnly => "read_only",
            ClientError::PosKey { .. } => "pos_key",
            ClientError::Disconnected { .. } => "disconnected",
            ClientError::Timeout { .. } => "timeout",
            ClientError::ServerBehind { .. } => "server_behind",
            ClientError::CommitOutcomeUnknown { .. } => "commit_outcome_unknown",
            ClientError::Server { .. } => "server",
            ClientError::Protocol(_) => "protocol",
            ClientError::TransactionFinished => "transaction_finished",
            ClientError::Config(_) => "config",
            ClientError::Closed => "closed",
            ClientError::Io(_) => "io",
            ClientError::BadRecord { .. } => "bad_record",
        }
    }

    pub(crate) fn disconnected(reason: impl Into<String>) -> ClientError {
        ClientError::Disconnected { reason: reason.into() }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> ClientError {
        ClientError::Protocol(what.into())
    }
}

/// `oid` and `serials` of a conflict payload: the exception's `__dict__` for error replies, or
/// the conflict dicts `vote` returns in client-side conflict resolution mode.
pub(crate) fn conflict_fields(payload: &Value) -> (Option<Oid>, Option<(Tid, Tid)>) {
    let oid = payload.dict_get("oid").and_then(Value::as_id);
    let serials = payload.dict_get("serials").and_then(Value::as_seq).and_then(|s| match s {
        [committed, read] => Some((committed.as_id()?, read.as_id()?)),
        _ => None,
    });
    (oid, serials)
}

/// A short, log-safe rendering of an error payload: the args of most exceptions are a few
/// strings; anything else is shown in debug form, truncated.
fn describe(payload: &Value) -> String {
    const MAX: usize = 300;
    let text = match payload {
        Value::Tuple(items) | Value::List(items) => items.iter().map(short).collect::<Vec<_>>().join(", "),
        Value::Dict(_) => match payload.dict_get("message") {
            Some(m) => short(m),
            None => format!("{payload:?}"),
        },
        other => short(other),
    };
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Bytes(b) if b.len() == 8 => fmt_oid(&zeo_proto::id_from_slice(b).unwrap_or_default()),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// An oid or tid as ZODB prints them: `0x` and 16 hex digits.
pub(crate) fn fmt_oid(id: &[u8; 8]) -> String {
    format!("{:#018x}", u64::from_be_bytes(*id))
}

fn fmt_oid_opt(oid: &Option<Oid>) -> String {
    match oid {
        Some(o) => fmt_oid(o),
        None => "an unnamed object".to_owned(),
    }
}

fn fmt_serials(serials: &Option<(Tid, Tid)>) -> String {
    match serials {
        Some((committed, read)) => format!(" (committed {}, read {})", fmt_oid(committed), fmt_oid(read)),
        None => String::new(),
    }
}

/// Displays an oid or tid the way errors and logs do.
pub struct Hex<'a>(pub &'a [u8; 8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_oid(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_proto::p64;

    #[test]
    fn maps_server_errors_by_class() {
        let (class, payload) = errors::conflict(p64(7), p64(9), p64(3), Some("persistent.mapping.PersistentMapping"));
        assert_eq!(
            ClientError::from_server(&class, &payload),
            ClientError::Conflict { oid: Some(p64(7)), serials: Some((p64(9), p64(3))) }
        );
        let (class, payload) = errors::read_conflict(p64(7), p64(9), p64(3), None);
        assert_eq!(
            ClientError::from_server(&class, &payload),
            ClientError::ReadConflict { oid: Some(p64(7)), serials: Some((p64(9), p64(3))) }
        );
        let (class, payload) = errors::pos_key(p64(5));
        assert_eq!(ClientError::from_server(&class, &payload), ClientError::PosKey { oid: p64(5) });
        let (class, payload) = errors::read_only();
        assert_eq!(ClientError::from_server(&class, &payload), ClientError::ReadOnly);
        let (class, payload) = errors::storage_transaction("bad txn");
        assert_eq!(
            ClientError::from_server(&class, &payload),
            ClientError::Server { class: errors::STORAGE_TRANSACTION_ERROR.into(), message: "bad txn".into() }
        );
        // A subclass of ConflictError is still a conflict.
        let e = ClientError::from_server("ZODB.POSException.BTreesConflictError", &Value::Dict(vec![]));
        assert_eq!(e, ClientError::Conflict { oid: None, serials: None });
    }

    #[test]
    fn retryable_and_display() {
        assert!(ClientError::Conflict { oid: None, serials: None }.is_retryable());
        assert!(ClientError::disconnected("x").is_retryable());
        assert!(!ClientError::CommitOutcomeUnknown { reason: "x".into() }.is_retryable());
        assert!(!ClientError::ReadOnly.is_retryable());
        let e = ClientError::Conflict { oid: Some(p64(1)), serials: Some((p64(2), p64(1))) };
        assert_eq!(
            e.to_string(),
            "write conflict on 0x0000000000000001 (committed 0x0000000000000002, read 0x0000000000000001)"
        );
        assert_eq!(e.kind(), "conflict");
        let long = Value::Tuple(vec![Value::Str("é".repeat(400))]);
        assert!(describe(&long).len() <= 303 + 3);
    }
}

//! The mapping of storage errors onto the exact ZODB exception classes and payloads ZEO clients
//! decode (protocol spec section 2.4), and the few error replies the protocol layer raises itself.

use zeo_proto::errors;
use zeo_proto::pickle::Value;

use crate::storage::StorageError;

/// An error reply: dotted class name and payload (as `zeo_proto::errors` builds them, byte for
/// byte what the reference server sends).
pub use zeo_proto::errors::ErrorReply;

/// An exception whose payload is its args tuple.
pub fn exception(class: &str, args: Vec<Value>) -> ErrorReply {
    errors::other(class, args)
}

/// The wire form of a storage error.
pub fn storage_error(e: &StorageError) -> ErrorReply {
    match e {
        StorageError::PosKey { oid } => errors::pos_key(*oid),
        StorageError::Conflict { oid, committed, expected } => errors::conflict(*oid, *committed, *expected, None),
        StorageError::ReadConflict { oid, committed, expected } => {
            errors::read_conflict(*oid, *committed, *expected, None)
        }
        StorageError::ReadOnly => errors::read_only(),
        StorageError::Transaction(msg) => errors::storage_transaction(msg),
        StorageError::MultipleUndo(errs) => {
            let errs: Vec<([u8; 8], &str)> = errs.iter().map(|(o, r)| (*o, r.as_str())).collect();
            errors::multiple_undo(&errs)
        }
        StorageError::Undo(msg) => errors::undo_error(msg, None),
        StorageError::PackMissingObject { oid } => errors::key_error(Value::Bytes(oid.to_vec())),
        other => errors::other(other.zodb_name(), vec![Value::Str(other.to_string())]),
    }
}

pub fn read_only() -> ErrorReply {
    errors::read_only()
}

pub fn transaction_error(msg: &str) -> ErrorReply {
    errors::storage_transaction(msg)
}

pub fn value_error(msg: &str) -> ErrorReply {
    errors::value_error(msg)
}

pub fn key_error(key: Value) -> ErrorReply {
    errors::key_error(key)
}

pub fn type_error(msg: &str) -> ErrorReply {
    errors::type_error(msg)
}

/// A commit refused because this server may not acknowledge commits now (its write lease expired
/// or was never granted, docs/FAILOVER.md). `ReadOnlyError`, as for a demoted server: nothing of
/// the transaction was committed, and ZEO clients abort it cleanly and reconnect to find a primary.
pub fn not_writable(reason: &str) -> ErrorReply {
    errors::other(
        errors::READ_ONLY_ERROR,
        vec![Value::Str(format!("{reason}: this server may not acknowledge commits now; nothing was committed"))],
    )
}

/// The answer to a `tpc_finish` whose transaction was written and fsynced here but never
/// acknowledged: the write lease ran out first. Whether it survives depends on which server is
/// promoted next, as for a connection lost during `tpc_finish`.
pub fn unacknowledged(reason: &str) -> ErrorReply {
    errors::storage_transaction(&format!(
        "{reason} before this commit could be acknowledged: it was not acknowledged, and is kept only if this server is promoted again"
    ))
}

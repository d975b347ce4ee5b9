//! Errors of the storage engine. Variants that reach ZEO clients map one to one onto ZODB exceptions
//! (see `zodb_name`); the rest are operational failures with enough context to act on.

use std::path::PathBuf;

/// Result alias for the storage engine.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything the storage engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist (never stored, deleted, or its creation undone), or the revision asked
    /// for is gone. ZODB `POSKeyError`.
    #[error("POSKeyError: oid {}", hex::encode(oid))]
    PosKey { oid: [u8; 8] },

    /// A write based on a revision that is no longer current. ZODB `ConflictError`.
    #[error(
        "ConflictError: oid {} (committed {}, expected {})",
        hex::encode(oid),
        hex::encode(committed),
        hex::encode(expected)
    )]
    Conflict { oid: [u8; 8], committed: [u8; 8], expected: [u8; 8] },

    /// A revision read by the transaction changed before it committed. ZODB `ReadConflictError`.
    #[error(
        "ReadConflictError: oid {} (committed {}, read {})",
        hex::encode(oid),
        hex::encode(committed),
        hex::encode(expected)
    )]
    ReadConflict { oid: [u8; 8], committed: [u8; 8], expected: [u8; 8] },

    /// The storage was opened read-only. ZODB `ReadOnlyError`.
    #[error("ReadOnlyError: the storage is read-only")]
    ReadOnly,

    /// The two-phase commit protocol was misused. ZODB `StorageTransactionError`.
    #[error("StorageTransactionError: {0}")]
    Transaction(String),

    /// Undo failed for one or more objects. ZODB `MultipleUndoErrors`.
    #[error("MultipleUndoErrors: {}", .0.iter().map(|(o, r)| format!("{}: {r}", hex::encode(o))).collect::<Vec<_>>().join("; "))]
    MultipleUndo(Vec<([u8; 8], String)>),

    /// The transaction to undo cannot be undone (unknown, packed, or malformed id). ZODB `UndoError`.
    #[error("UndoError: {0}")]
    Undo(String),

    /// User, description or extension longer than FS30's u16 length fields allow.
    #[error("{field} is {len} bytes; FileStorage allows at most 65535")]
    MetadataTooLong { field: &'static str, len: usize },

    /// A caller-supplied tid that does not exceed the last committed one.
    #[error("tid {} is not greater than the last tid {}", hex::encode(given), hex::encode(last))]
    TidNotIncreasing { given: [u8; 8], last: [u8; 8] },

    /// The data file would grow past what the object index can address (6-byte positions).
    #[error("{path} would pass {limit} bytes, the largest data file the object index can address")]
    FileTooLarge { path: PathBuf, limit: u64 },

    /// Another process holds the storage's lock file.
    #[error("{path} is locked by another process (pid {holder})")]
    Locked { path: PathBuf, holder: String },

    /// The file is not an FS30 FileStorage.
    #[error("{path} is not a FileStorage (magic {magic:?}, expected \"FS30\")")]
    BadMagic { path: PathBuf, magic: Vec<u8> },

    /// Damage that recovery must not paper over (before the tail of the file).
    #[error("{path} is damaged at byte offset {offset}: {reason}")]
    Corrupted { path: PathBuf, offset: u64, reason: String },

    /// An I/O error, with the operation and file.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A previous fsync failed and the tail could not be restored; the storage refuses writes until it
    /// is reopened (after an fsync error the page cache can no longer be trusted).
    #[error("the storage is disabled for writes after an unrecoverable I/O error; reopen it")]
    Poisoned,

    /// Pack failed or was refused.
    #[error("pack: {0}")]
    Pack(String),

    /// Pack's garbage collection found a reference to an object that does not exist at the pack time
    /// (or no root object): FileStorage raises `KeyError(oid)` and packs nothing, and so do we, since
    /// collecting garbage around a dangling reference could drop live data.
    #[error("pack: object {} is referenced but does not exist at the pack time", hex::encode(oid))]
    PackMissingObject { oid: [u8; 8] },
}

impl StorageError {
    /// The dotted ZODB exception class a ZEO client expects for this error.
    pub fn zodb_name(&self) -> &'static str {
        match self {
            StorageError::PosKey { .. } => "ZODB.POSException.POSKeyError",
            StorageError::Conflict { .. } => "ZODB.POSException.ConflictError",
            StorageError::ReadConflict { .. } => "ZODB.POSException.ReadConflictError",
            StorageError::ReadOnly => "ZODB.POSException.ReadOnlyError",
            StorageError::Transaction(_) | StorageError::TidNotIncreasing { .. } => {
                "ZODB.POSException.StorageTransactionError"
            }
            StorageError::MultipleUndo(_) => "ZODB.POSException.MultipleUndoErrors",
            StorageError::Undo(_) => "ZODB.POSException.UndoError",
            StorageError::MetadataTooLong { .. } => "ZODB.FileStorage.FileStorage.FileStorageError",
            _ => "ZODB.POSException.StorageSystemError",
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StorageError::PosKey { .. } => "poskey",
            StorageError::Conflict { .. } => "conflict",
            StorageError::ReadConflict { .. } => "read_conflict",
            StorageError::ReadOnly => "read_only",
            StorageError::Transaction(_) | StorageError::TidNotIncreasing { .. } => "transaction",
            StorageError::MultipleUndo(_) | StorageError::Undo(_) => "undo",
            StorageError::MetadataTooLong { .. } => "metadata_too_long",
            StorageError::Locked { .. } => "locked",
            StorageError::FileTooLarge { .. } => "file_too_large",
            StorageError::BadMagic { .. } | StorageError::Corrupted { .. } => "corrupted",
            StorageError::Io { .. } => "io",
            StorageError::Poisoned => "poisoned",
            StorageError::Pack(_) | StorageError::PackMissingObject { .. } => "pack",
        }
    }

    /// An I/O failure of `op` on `path` (also for the server's own files beside the engine's, such
    /// as the replication history, so they report like the engine's).
    pub fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io { op, path: path.to_path_buf(), source }
    }

    /// Bytes at `offset` of `path` that cannot be what was written there.
    pub fn corrupted(path: &std::path::Path, offset: u64, reason: impl Into<String>) -> Self {
        StorageError::Corrupted { path: path.to_path_buf(), offset, reason: reason.into() }
    }
}

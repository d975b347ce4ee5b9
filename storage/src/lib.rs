//! zeo-storage, the storage engine: a FileStorage-compatible (FS30, byte for byte) transactional
//! object store.
//!
//! Synchronous and free of networking (its own crate, so Cargo enforces that): the ZEO server drives
//! it from a writer thread; readers call it from any thread. What is durable when is specified in
//! `docs/DURABILITY.md`.
//!
//! # Layout
//! - `format`: the FS30 records (transaction and data headers) and their serialization.
//! - `file`: the I/O seam (positional reads and writes, fsync, fault injection for tests).
//! - `lock`: `Data.fs.lock`, compatible with zc.lockfile.
//! - `index`: oid → position (`compact`, about 8 bytes per object) and its snapshot file
//!   `Data.fs.rsindex` (`snapshot`, read straight into the index's arrays).
//! - `cache`: a bounded record cache keyed by file position (hot loads without a system call).
//! - `oids`: oid allocation with a durable high-water mark (`Data.fs.rsoids`).
//! - `recovery`: the opening scan and crash recovery.
//! - `filestorage`: `FileStorage`, open and the read calls.
//! - `records`: navigating records (bounds-checked headers, backpointer chains, finding a
//!   transaction or an object's record in it).
//! - `txn`: a transaction's buffered operations; `commit`: vote, finish, sync (group commit), abort;
//!   `vote`: the state a vote works on (shared by `commit` and `undo`); `resolution`: where they
//!   merge conflicts with `zeo-resolve`.
//! - `undo`: undo and the undo log; `iter`: transaction iteration; `pack`: pack with GC.
//! - `rewind`: cutting the history back, or replacing the file (replication).
//! - `verify`: a full read-only consistency check (fstest).
//! - `describe`: renderings of records for tools and tests (class names, JSON).

mod cache;
mod commit;
pub mod describe;
mod error;
mod file;
mod filestorage;
mod format;
mod index;
mod iter;
mod lock;
mod oids;
mod pack;
mod records;
mod recovery;
mod resolution;
mod rewind;
mod txn;
mod undo;
mod verify;
mod vote;

pub use commit::{CommitOutcome, Committed, VoteOutcome};
pub use error::{Result, StorageError};
pub use file::{Faults, write_atomically};
pub use filestorage::{FileStorage, HistoryEntry, IterNext, LoadBefore, OpenOptions};
pub use format::{MAX_METADATA_LEN, status};
pub use iter::{DataRecord, TransactionIterator, TransactionRecord};
pub use pack::PackStats;
pub use resolution::ConflictResolution;
pub use rewind::{DurableCopy, Truncated};
pub use txn::{Oid, Op, Tid, Transaction, TxnMeta, WriteConflict};
pub use undo::{UndoEntry, parse_undo_id, undo_id};
pub use verify::{VerifyReport, verify};

/// The root object's oid, and "no tid".
pub const Z64: [u8; 8] = [0; 8];
/// The largest tid: `load_before(oid, MAXTID)` loads the current revision.
pub const MAXTID: [u8; 8] = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

#[cfg(test)]
mod tests;

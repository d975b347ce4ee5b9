//! The object index (oid → file position of its current data record) and its on-disk snapshot.
//!
//! - `compact`: the in-memory index, a sorted flat array of 14-byte entries plus a small overlay.
//! - `snapshot`: `Data.fs.rsindex`, so that a restart scans only the transactions after it; its
//!   entries are laid out like the in-memory array, so loading it is one read.

mod compact;
mod snapshot;

pub use compact::{CompactIndex, MAX_POS};
#[cfg(test)]
pub use snapshot::snapshot_path;
pub use snapshot::{Snapshot, begin_save, load, remove, remove_if_exists, write_into};

/// oid → position of the current record.
pub type Index = CompactIndex;

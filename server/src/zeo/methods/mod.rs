//! The handlers of the ZEO methods, one file per group, each an `impl Conn` block. Which method
//! runs which handler, and how it is answered, is `conn::dispatch`; blob transfer is in `blobs`.
//!
//! - `session`: `register`, and what a client asks about its storage (`get_info`,
//!   `lastTransaction`, `getInvalidations`, `server_status`, `ping`, `set_client_label`).
//! - `load`: reading object revisions (`loadBefore`, `loadSerial`, `getTid`).
//! - `history`: `history`, `undoLog`, `undoInfo`.
//! - `txn`: oid allocation and the two-phase commit, from `tpc_begin` through the buffered stores to
//!   `vote`, `tpc_finish` and `tpc_abort` (the vote and finish tasks are `commit`).
//! - `iter`: the transaction and record iterators (`iterator_*`, `record_iternext`).
//! - `pack`: `pack`.

pub(super) mod history;
pub(super) mod iter;
pub(super) mod load;
pub(super) mod pack;
pub(super) mod session;
pub(super) mod txn;

//! The client side of a two-phase commit: what a transaction carries until it is voted.
//!
//! Nothing here touches the file. Operations are buffered in memory and applied, checked and written
//! as one record by `FileStorage::vote`, under the storage's writer lock; conflicts therefore surface
//! only at vote, as in ZEO.

use super::error::{Result, StorageError};
use super::format::{check_metadata, status};

/// 8-byte object id.
pub type Oid = [u8; 8];
/// 8-byte transaction id (a TimeStamp).
pub type Tid = [u8; 8];

/// Transaction metadata, fixed at begin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnMeta {
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    /// The extension dict as a protocol-3 pickle, or empty.
    pub extension: Vec<u8>,
    /// A caller-chosen tid (copyTransactionsFrom, replication); must exceed the last tid.
    pub tid: Option<Tid>,
    /// Status to record: `b' '` normally, `b'p'` when copying an already packed source.
    pub status: u8,
}

impl TxnMeta {
    /// Metadata with the normal status and a storage-assigned tid.
    pub fn new(user: impl Into<Vec<u8>>, description: impl Into<Vec<u8>>, extension: impl Into<Vec<u8>>) -> Self {
        TxnMeta {
            user: user.into(),
            description: description.into(),
            extension: extension.into(),
            tid: None,
            status: status::COMMITTED,
        }
    }
}

/// One buffered operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new revision; `serial` is the revision the writer based it on (z64 for a new object).
    Store { oid: Oid, serial: Tid, data: Vec<u8> },
    /// Fail with a read conflict at vote unless `oid` is still at `serial`.
    CheckCurrent { oid: Oid, serial: Tid },
    /// Delete the object (a record with no data), if it is still at `serial`.
    Delete { oid: Oid, serial: Tid },
    /// Copy a revision verbatim: its own tid, data or none (an undone creation), and the transaction
    /// that holds the data, used as a backpointer when that transaction exists here.
    Restore { oid: Oid, serial: Tid, data: Option<Vec<u8>>, prev_txn: Option<Tid> },
    /// Undo the transaction `tid`.
    Undo { tid: Tid },
}

/// A write conflict, reported as a value so the caller (the ZEO client) can resolve it and store again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteConflict {
    pub oid: Oid,
    /// The tid that is current now.
    pub committed: Tid,
    /// The tid the writer based its data on.
    pub expected: Tid,
    /// The data the writer tried to store.
    pub data: Vec<u8>,
}

/// Where a transaction is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    Open,
    /// Written with status 'c' at `ticket`; waiting for finish or abort.
    Voted {
        ticket: u64,
    },
    Done,
}

/// A transaction between begin and finish/abort. Owned by the caller; cheap to create.
#[derive(Debug)]
pub struct Transaction {
    pub(crate) meta: TxnMeta,
    pub(crate) ops: Vec<Op>,
    pub(crate) state: TxnState,
    /// Bytes of data buffered, for callers that bound transaction size.
    buffered: usize,
}

impl Transaction {
    /// Starts a transaction. Metadata limits are checked here, before anything is written.
    pub fn begin(meta: TxnMeta) -> Result<Self> {
        check_metadata(&meta.user, &meta.description, &meta.extension)?;
        if ![status::COMMITTED, status::PACKED].contains(&meta.status) {
            return Err(StorageError::Transaction(format!("invalid transaction status {:?}", meta.status as char)));
        }
        Ok(Transaction { meta, ops: Vec::new(), state: TxnState::Open, buffered: 0 })
    }

    pub fn meta(&self) -> &TxnMeta {
        &self.meta
    }

    /// The operations buffered so far.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Bytes of object data buffered so far.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    fn push(&mut self, op: Op) -> Result<()> {
        if self.state != TxnState::Open {
            return Err(StorageError::Transaction("the transaction is no longer open for writes".into()));
        }
        self.buffered += match &op {
            Op::Store { data, .. } => data.len(),
            Op::Restore { data: Some(d), .. } => d.len(),
            _ => 0,
        };
        self.ops.push(op);
        Ok(())
    }

    pub fn store(&mut self, oid: Oid, serial: Tid, data: Vec<u8>) -> Result<()> {
        self.push(Op::Store { oid, serial, data })
    }

    pub fn check_current_serial(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.push(Op::CheckCurrent { oid, serial })
    }

    pub fn delete_object(&mut self, oid: Oid, serial: Tid) -> Result<()> {
        self.push(Op::Delete { oid, serial })
    }

    pub fn restore(&mut self, oid: Oid, serial: Tid, data: Option<Vec<u8>>, prev_txn: Option<Tid>) -> Result<()> {
        self.push(Op::Restore { oid, serial, data, prev_txn })
    }

    pub fn undo(&mut self, tid: Tid) -> Result<()> {
        self.push(Op::Undo { tid })
    }

    /// Drops the buffered stores of these oids (after a vote reported them as conflicts, so that the
    /// resolved data the caller stores next is what gets voted).
    pub(crate) fn drop_stores(&mut self, oids: &[Oid]) {
        self.ops.retain(|op| !matches!(op, Op::Store { oid, .. } if oids.contains(oid)));
    }
}

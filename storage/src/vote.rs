//! The state a vote works on, shared by the write path (`commit`) and undo (`undo`): the committed
//! state it checks against and the records the transaction is building, with their file positions.

use std::collections::HashMap;

use super::file::DataFile;
use super::format::DATA_HEADER_LEN;
use super::index::Index;
use super::resolution::ConflictResolution;

/// The body of a record being built.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Data(Vec<u8>),
    Back(u64),
}

/// A data record being built, with the file position it will have.
#[derive(Debug, Clone)]
pub(crate) struct NewRecord {
    pub oid: u64,
    pub tid: u64,
    pub prev: u64,
    pub body: Body,
    pub pos: u64,
}

/// What the vote computation sees: committed state (durable and pending) and the records so far.
pub(crate) struct VoteCtx<'a> {
    pub file: &'a DataFile,
    pub index: &'a Index,
    pub overlay: &'a HashMap<u64, u64>,
    /// End of finished transactions: where this one goes.
    pub end: u64,
    pub tid: u64,
    /// Whether conflicts are merged here (see `resolution`).
    pub resolution: ConflictResolution,
    pub records: Vec<NewRecord>,
    /// oid → index in `records` of its latest record in this transaction.
    pub tindex: HashMap<u64, usize>,
    next_pos: u64,
}

impl<'a> VoteCtx<'a> {
    /// A vote of transaction `tid`, whose first data record goes at `first_record_pos` (after its
    /// header, which starts at `end`).
    pub fn new(
        file: &'a DataFile,
        index: &'a Index,
        overlay: &'a HashMap<u64, u64>,
        end: u64,
        tid: u64,
        first_record_pos: u64,
        resolution: ConflictResolution,
    ) -> Self {
        VoteCtx {
            file,
            index,
            overlay,
            end,
            tid,
            resolution,
            records: Vec::new(),
            tindex: HashMap::new(),
            next_pos: first_record_pos,
        }
    }

    /// Where the next record would go: the end of the records pushed so far.
    pub fn next_pos(&self) -> u64 {
        self.next_pos
    }

    /// Position of the current committed record of `oid`.
    pub fn committed_pos(&self, oid: u64) -> Option<u64> {
        self.overlay.get(&oid).copied().or_else(|| self.index.get(oid))
    }

    pub fn push(&mut self, oid: u64, tid: u64, prev: u64, body: Body) {
        let body = match body {
            Body::Data(d) if d.is_empty() => Body::Back(0),
            b => b,
        };
        let len = DATA_HEADER_LEN
            + match &body {
                Body::Data(d) => d.len() as u64,
                Body::Back(_) => 8,
            };
        let pos = self.next_pos;
        self.next_pos += len;
        self.tindex.insert(oid, self.records.len());
        self.records.push(NewRecord { oid, tid, prev, body, pos });
    }
}

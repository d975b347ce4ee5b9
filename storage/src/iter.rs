//! Transaction iteration (`IStorageIteration`): transactions in tid order between inclusive `start`
//! and `stop`, each with its data records; backpointers are resolved to the data they stand for and
//! `data_txn` names the transaction the backpointer points into, as FileStorage's iterator does.

use std::sync::Arc;

use super::error::{Result, StorageError};
use super::file::DataFile;
use super::filestorage::FileStorage;
use super::format::{DATA_HEADER_LEN, status};
use super::records::{
    load_back, next_record, prev_txn_pos, read_any_data_header, read_backpointer, read_txn_header, read_txn_meta,
};
use super::txn::{Oid, Tid};
use zeo_proto::p64;
use zeo_proto::timestamp::TimeStamp;

/// One data record as iteration shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    pub oid: Oid,
    pub tid: Tid,
    /// The data, `None` for a deletion or undone creation.
    pub data: Option<Vec<u8>>,
    /// For a backpointer record: the tid of the record it points to.
    pub data_txn: Option<Tid>,
    /// File position of the record.
    pub pos: u64,
}

/// One transaction as iteration shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub tid: Tid,
    pub status: u8,
    pub user: Vec<u8>,
    pub description: Vec<u8>,
    pub extension: Vec<u8>,
    pub records: Vec<DataRecord>,
    /// File position of the transaction, and its length (`tlen`).
    pub pos: u64,
    pub tlen: u64,
}

/// Iterates over a snapshot of the durable transactions (later commits are not seen; a pack does not
/// disturb it, because it keeps the file it started on open).
#[derive(Debug)]
pub struct TransactionIterator {
    file: Arc<DataFile>,
    pos: u64,
    end: u64,
    stop: Option<u64>,
}

impl FileStorage {
    /// Transactions with `start <= tid <= stop` (either bound optional).
    pub fn iterator(&self, start: Option<&Tid>, stop: Option<&Tid>) -> Result<TransactionIterator> {
        let (file, end) = {
            let s = self.shared();
            (s.file.clone(), s.end)
        };
        TransactionIterator::new(file, end, start.map(|t| u64::from_be_bytes(*t)), stop.map(|t| u64::from_be_bytes(*t)))
    }
}

impl FileStorage {
    /// The last `n` durable transactions, oldest first (a backward walk over the trailing lengths;
    /// what FileStorage's `lastInvalidations` reads to seed ZEO's invalidation queue).
    pub fn last_transactions(&self, n: usize) -> Result<Vec<TransactionRecord>> {
        let (file, end) = {
            let s = self.shared();
            (s.file.clone(), s.end)
        };
        let mut pos = end;
        for _ in 0..n {
            if pos <= 4 {
                break;
            }
            pos = prev_txn_pos(&file, pos)?;
        }
        TransactionIterator { file, pos, end, stop: None }.collect()
    }
}

impl TransactionIterator {
    pub(crate) fn new(file: Arc<DataFile>, end: u64, start: Option<u64>, stop: Option<u64>) -> Result<Self> {
        let pos = match start {
            None => 4,
            Some(start) => seek_start(&file, end, start)?,
        };
        Ok(TransactionIterator { file, pos, end, stop })
    }

    fn read_next(&mut self) -> Result<Option<TransactionRecord>> {
        while self.pos < self.end {
            let tpos = self.pos;
            let th = read_txn_header(&self.file, tpos, self.end)?;
            if self.stop.is_some_and(|stop| th.tid > stop) {
                self.pos = self.end;
                return Ok(None);
            }
            self.pos = tpos + th.tlen + 8;
            if th.status == status::UNDONE {
                continue;
            }
            let (_, user, description, extension) = read_txn_meta(&self.file, tpos, self.end)?;
            let records = read_records(&self.file, tpos, th.header_len(), th.tlen, self.end)?;
            return Ok(Some(TransactionRecord {
                tid: p64(th.tid),
                status: th.status,
                user,
                description,
                extension,
                records,
                pos: tpos,
                tlen: th.tlen,
            }));
        }
        Ok(None)
    }
}

impl Iterator for TransactionIterator {
    type Item = Result<TransactionRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.read_next() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.pos = self.end;
                Some(Err(e))
            }
        }
    }
}

pub(crate) fn read_records(
    file: &DataFile,
    tpos: u64,
    header_len: u64,
    tlen: u64,
    end: u64,
) -> Result<Vec<DataRecord>> {
    let tend = tpos + tlen;
    let mut pos = tpos + header_len;
    let mut out = Vec::new();
    while pos < tend {
        let h = read_any_data_header(file, pos, end)?;
        let next = next_record(file, pos, &h, tend)?;
        if h.tloc != tpos {
            return Err(StorageError::corrupted(file.path(), pos, "data record points to another transaction"));
        }
        let (data, data_txn) = if h.plen > 0 {
            (Some(file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, end)?), None)
        } else {
            let back = read_backpointer(file, pos)?;
            if back == 0 {
                (None, None)
            } else {
                let target = read_any_data_header(file, back, end)?;
                let data = load_back(file, h.oid, pos, back, end)?.map(|(d, _, _)| d);
                (data, Some(p64(target.tid)))
            }
        };
        out.push(DataRecord { oid: p64(h.oid), tid: p64(h.tid), data, data_txn, pos });
        pos = next;
    }
    Ok(out)
}

/// Position of the first transaction with tid >= `start`, scanning from whichever end is closer in
/// time (FileStorage's `_skip_to_start`).
fn seek_start(file: &DataFile, end: u64, start: u64) -> Result<u64> {
    if end <= 4 {
        return Ok(4);
    }
    let first = read_txn_header(file, 4, end)?.tid;
    if start <= first {
        return Ok(4);
    }
    let last_pos = last_txn_pos(file, end)?;
    let last = read_txn_header(file, last_pos, end)?.tid;
    if start > last {
        return Ok(end);
    }
    if start == last {
        return Ok(last_pos);
    }
    let t = |tid: u64| TimeStamp::from_u64(tid).time_time();
    if t(start) - t(first) < t(last) - t(start) {
        let mut pos = 4;
        loop {
            let th = read_txn_header(file, pos, end)?;
            if th.tid >= start {
                return Ok(pos);
            }
            pos += th.tlen + 8;
        }
    } else {
        let mut pos = end;
        loop {
            let tpos = prev_txn_pos(file, pos)?;
            let th = read_txn_header(file, tpos, end)?;
            if th.tid < start {
                return Ok(pos);
            }
            if tpos == 4 {
                return Ok(4);
            }
            pos = tpos;
        }
    }
}

fn last_txn_pos(file: &DataFile, end: u64) -> Result<u64> {
    prev_txn_pos(file, end)
}

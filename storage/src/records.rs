//! Navigating the file's records: reading transaction and data headers with their bounds checked,
//! following backpointer chains to the data they stand for, and finding a transaction or an object's
//! record in it. Every pointer read from the file is checked before it is followed, so damage is an
//! error, never a loop or an out-of-range read.

use super::error::{Result, StorageError};
use super::file::DataFile;
use super::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader, status};

/// Chain pointers (prev, backpointers) always point to earlier records; anything else is damage and
/// would loop.
pub(crate) fn check_backwards(file: &DataFile, from: u64, to: u64) -> Result<u64> {
    if to >= from || to < 4 {
        return Err(StorageError::corrupted(file.path(), from, format!("pointer to {to} does not point backwards")));
    }
    Ok(to)
}

/// Reads the data header at `pos`, checking it lies within `end` and belongs to `oid` (when given).
pub(crate) fn read_data_header(file: &DataFile, pos: u64, end: u64, oid: u64) -> Result<DataHeader> {
    let h = read_any_data_header(file, pos, end)?;
    if h.oid != oid {
        return Err(StorageError::corrupted(
            file.path(),
            pos,
            format!("expected a record of oid {oid:#x}, found {:#x}", h.oid),
        ));
    }
    Ok(h)
}

/// Tid of the record at `pos` (of `oid`), `None` when it holds no data (a deletion or an undone
/// creation: the object does not exist as of that record).
pub(crate) fn live_tid_at(file: &DataFile, pos: u64, end: u64, oid: u64) -> Result<Option<u64>> {
    let h = read_data_header(file, pos, end, oid)?;
    if h.plen == 0 && read_backpointer(file, pos)? == 0 {
        return Ok(None);
    }
    Ok(Some(h.tid))
}

/// Position after the record at `pos`, which must end within its transaction (`tend`).
pub(crate) fn next_record(file: &DataFile, pos: u64, h: &DataHeader, tend: u64) -> Result<u64> {
    pos.checked_add(h.record_len())
        .filter(|e| *e <= tend)
        .ok_or_else(|| StorageError::corrupted(file.path(), pos, "data record exceeds its transaction"))
}

/// Bytes read with a record's header, so that a typical record (ZODB objects are mostly small) comes
/// back with one `pread` instead of two.
const RECORD_READ_AHEAD: u64 = 4096 - DATA_HEADER_LEN;

/// Reads the record at `pos` (of `oid`) with one `pread` for records up to about 4 KiB: its header
/// and, when it has inline data, the data.
pub(crate) fn read_record(file: &DataFile, pos: u64, end: u64, oid: u64) -> Result<(DataHeader, Option<Vec<u8>>)> {
    if pos < 4 || pos.saturating_add(DATA_HEADER_LEN) > end {
        return Err(StorageError::corrupted(file.path(), pos, "data record position out of range"));
    }
    let want = (DATA_HEADER_LEN + RECORD_READ_AHEAD).min(end - pos);
    let mut buf = vec![0u8; usize::try_from(want).expect("at most 4 KiB")];
    file.read_exact_at(&mut buf, pos)?;
    let mut hb = [0u8; DATA_HEADER_LEN as usize];
    hb.copy_from_slice(&buf[..DATA_HEADER_LEN as usize]);
    let h = DataHeader::decode(&hb);
    if h.oid != oid {
        return Err(StorageError::corrupted(
            file.path(),
            pos,
            format!("expected a record of oid {oid:#x}, found {:#x}", h.oid),
        ));
    }
    if h.plen == 0 {
        return Ok((h, None));
    }
    let have = want - DATA_HEADER_LEN;
    if h.plen <= have {
        buf.truncate(usize::try_from(DATA_HEADER_LEN + h.plen).expect("at most 4 KiB"));
        buf.drain(..DATA_HEADER_LEN as usize);
        return Ok((h, Some(buf)));
    }
    Ok((h, Some(file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, end)?)))
}

/// Reads any data header at `pos` (no oid check).
pub(crate) fn read_any_data_header(file: &DataFile, pos: u64, end: u64) -> Result<DataHeader> {
    if pos < 4 || pos.saturating_add(DATA_HEADER_LEN) > end {
        return Err(StorageError::corrupted(file.path(), pos, "data record position out of range"));
    }
    let mut b = [0u8; DATA_HEADER_LEN as usize];
    file.read_exact_at(&mut b, pos)?;
    Ok(DataHeader::decode(&b))
}

pub(crate) fn read_backpointer(file: &DataFile, pos: u64) -> Result<u64> {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, pos + DATA_HEADER_LEN)?;
    Ok(u64::from_be_bytes(b))
}

/// The data a record stands for: inline, or followed through backpointers; `None` when the chain
/// ends in "no data".
pub(crate) fn record_data(file: &DataFile, pos: u64, h: &DataHeader, end: u64) -> Result<Option<Vec<u8>>> {
    if h.plen > 0 {
        return file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, end).map(Some);
    }
    let back = read_backpointer(file, pos)?;
    Ok(load_back(file, h.oid, pos, back, end)?.map(|(d, _, _)| d))
}

/// Follows a backpointer chain from `back` (found in the record at `from`): `(data, tid of the record
/// holding it, its position)`, or `None` when the chain ends in "no data".
pub(crate) fn load_back(
    file: &DataFile,
    oid: u64,
    mut from: u64,
    mut back: u64,
    end: u64,
) -> Result<Option<(Vec<u8>, u64, u64)>> {
    loop {
        if back == 0 {
            return Ok(None);
        }
        back = check_backwards(file, from, back)?;
        let h = read_data_header(file, back, end, oid)?;
        if h.plen > 0 {
            return Ok(Some((file.read_vec_at(back + DATA_HEADER_LEN, h.plen, end)?, h.tid, back)));
        }
        from = back;
        back = read_backpointer(file, back)?;
    }
}

/// A transaction header with its user, description and extension.
pub(crate) type TxnHeaderAndMeta = (TxnHeader, Vec<u8>, Vec<u8>, Vec<u8>);

/// Reads a transaction header and its user, description and extension.
pub(crate) fn read_txn_meta(file: &DataFile, tpos: u64, end: u64) -> Result<TxnHeaderAndMeta> {
    let th = read_txn_header(file, tpos, end)?;
    let mut pos = tpos + TXN_HEADER_LEN;
    let user = file.read_vec_at(pos, u64::from(th.ulen), end)?;
    pos += u64::from(th.ulen);
    let desc = file.read_vec_at(pos, u64::from(th.dlen), end)?;
    pos += u64::from(th.dlen);
    let ext = file.read_vec_at(pos, u64::from(th.elen), end)?;
    Ok((th, user, desc, ext))
}

pub(crate) fn read_txn_header(file: &DataFile, tpos: u64, end: u64) -> Result<TxnHeader> {
    if tpos < 4 || tpos.saturating_add(TXN_HEADER_LEN) > end {
        return Err(StorageError::corrupted(file.path(), tpos, "transaction position out of range"));
    }
    let mut b = [0u8; TXN_HEADER_LEN as usize];
    file.read_exact_at(&mut b, tpos)?;
    let th = TxnHeader::decode(&b);
    if tpos.checked_add(th.tlen).and_then(|e| e.checked_add(8)).is_none_or(|e| e > end) || th.tlen < th.header_len() {
        return Err(StorageError::corrupted(file.path(), tpos, "transaction length out of range"));
    }
    Ok(th)
}

/// Position of the transaction that ends at `pos` (via the trailing length).
pub(crate) fn prev_txn_pos(file: &DataFile, pos: u64) -> Result<u64> {
    let mut b8 = [0u8; 8];
    file.read_exact_at(&mut b8, pos - 8)?;
    let tlen = u64::from_be_bytes(b8);
    pos.checked_sub(tlen.saturating_add(8))
        .filter(|p| *p >= 4)
        .ok_or_else(|| StorageError::corrupted(file.path(), pos - 8, "bad trailing transaction length"))
}

/// Finds the transaction `tid` scanning backwards from `end`; with `stop_at_pack`, gives up at the
/// first packed transaction (it and everything before it can no longer be undone).
pub(crate) fn txn_find(file: &DataFile, end: u64, tid: u64, stop_at_pack: bool) -> Result<Option<u64>> {
    let mut pos = end;
    while pos > 4 {
        let tpos = prev_txn_pos(file, pos)?;
        let th = read_txn_header(file, tpos, end)?;
        if th.tid == tid {
            return Ok(Some(tpos));
        }
        if th.tid < tid || (stop_at_pack && th.status == status::PACKED) {
            return Ok(None);
        }
        pos = tpos;
    }
    Ok(None)
}

/// The position restore should point its backpointer at, for `oid` in the transaction at `tpos`: its
/// latest record there, if it holds a backpointer or exactly `data`; else 0 (write the data inline).
pub(crate) fn data_find(file: &DataFile, end: u64, tpos: u64, oid: u64, data: Option<&[u8]>) -> Result<u64> {
    let th = read_txn_header(file, tpos, end)?;
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    let mut found = None;
    while pos < tend {
        let h = read_any_data_header(file, pos, end)?;
        let next = next_record(file, pos, &h, tend)?;
        if h.oid == oid {
            found = Some((pos, h));
        }
        pos = next;
    }
    let Some((pos, h)) = found else { return Ok(0) };
    if h.plen == 0 {
        return Ok(pos);
    }
    match data {
        Some(d) if d.len() as u64 == h.plen && file.read_vec_at(pos + DATA_HEADER_LEN, h.plen, end)? == d => Ok(pos),
        _ => Ok(0),
    }
}

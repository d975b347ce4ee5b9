//! Opening scan: replays transaction records after the index snapshot into the index, and recovers
//! from a crash.
//!
//! A crash can leave, at the end of the file only: a torn transaction (the write of a vote cut short,
//! or zero-filled blocks), or complete transactions still marked 'c' (voted, never finished, so never
//! acknowledged). Those are cut off; the bytes cut are first saved to `Data.fs.trN` for the operator
//! and the cut is logged. Damage anywhere else (a complete, later transaction exists after it) is never
//! "recovered": opening fails with the byte offset.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::file::{DataFile, sync_dir};
use super::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader, status};
use super::index::Index;

/// Where the scan ended.
#[derive(Debug)]
pub struct ScanEnd {
    /// Position just after the last good transaction (the new end of file).
    pub end: u64,
    /// Tid of the last transaction (0 when none).
    pub last_tid: u64,
    /// Where the file was cut, and the side file holding what was cut.
    pub truncated: Option<(u64, PathBuf)>,
}

/// Sequential reads through a large window: a full scan then costs a few hundred system calls per
/// gigabyte instead of several per record.
struct Window<'a> {
    file: &'a DataFile,
    file_len: u64,
    start: u64,
    buf: Vec<u8>,
}

/// Bytes read per window refill.
const WINDOW: u64 = 8 << 20;

impl<'a> Window<'a> {
    fn new(file: &'a DataFile, file_len: u64) -> Self {
        Window { file, file_len, start: 0, buf: Vec::new() }
    }

    fn read_exact_at(&mut self, out: &mut [u8], pos: u64) -> Result<()> {
        let len = out.len() as u64;
        let end = self.start + self.buf.len() as u64;
        if pos >= self.start && pos + len <= end {
            let at = usize::try_from(pos - self.start).expect("within the window");
            out.copy_from_slice(&self.buf[at..at + out.len()]);
            return Ok(());
        }
        if len > WINDOW / 2 {
            return self.file.read_exact_at(out, pos);
        }
        let want = WINDOW.min(self.file_len.saturating_sub(pos)).max(len);
        self.buf.resize(usize::try_from(want).expect("a window fits in memory"), 0);
        self.file.read_exact_at(&mut self.buf, pos)?;
        self.start = pos;
        out.copy_from_slice(&self.buf[..out.len()]);
        Ok(())
    }
}

/// Scans from `pos` (the snapshot's position, or 4) to the end, updating `index`.
pub fn scan(
    file: &DataFile,
    path: &Path,
    pos: u64,
    last_tid: u64,
    index: &mut Index,
    read_only: bool,
) -> Result<ScanEnd> {
    // Records go straight into the index: a new revision updates its entry in place, a new object
    // (rising oids) is appended, so the scan needs no second map (a `HashMap` delta plus its sorted
    // copy cost 3x the index at 10M objects).
    scan_into(file, path, pos, last_tid, index, read_only)
}

fn scan_into(
    file: &DataFile,
    path: &Path,
    mut pos: u64,
    mut last_tid: u64,
    index: &mut Index,
    read_only: bool,
) -> Result<ScanEnd> {
    let file_len = file.len()?;
    let mut window = Window::new(file, file_len);
    let mut tindex: Vec<(u64, u64)> = Vec::new();
    loop {
        if pos == file_len {
            return Ok(ScanEnd { end: pos, last_tid, truncated: None });
        }
        let cut = |reason: &str| -> Result<ScanEnd> {
            let truncated = if read_only {
                tracing::warn!(path = %path.display(), offset = pos, reason, "ignoring an incomplete tail (read-only)");
                None
            } else {
                Some((pos, cut_tail(file, path, pos, file_len, reason)?))
            };
            Ok(ScanEnd { end: pos, last_tid, truncated })
        };
        let torn = |reason: &str| -> Result<ScanEnd> {
            if later_transaction_exists(file, pos, file_len, last_tid)? {
                return Err(StorageError::corrupted(
                    path,
                    pos,
                    format!("{reason}, and complete transactions follow it"),
                ));
            }
            cut(reason)
        };
        if file_len - pos < TXN_HEADER_LEN {
            return torn("torn transaction header");
        }
        let mut hb = [0u8; TXN_HEADER_LEN as usize];
        window.read_exact_at(&mut hb, pos)?;
        let th = TxnHeader::decode(&hb);
        let extent = pos.checked_add(th.tlen).and_then(|e| e.checked_add(8));
        let Some(extent) = extent.filter(|e| *e <= file_len) else {
            return torn("transaction runs past the end of the file");
        };
        if th.tlen < th.header_len() {
            return torn("transaction length shorter than its header");
        }
        let mut b8 = [0u8; 8];
        window.read_exact_at(&mut b8, extent - 8)?;
        if u64::from_be_bytes(b8) != th.tlen {
            if extent == file_len {
                return torn("trailing transaction length does not match");
            }
            return Err(StorageError::corrupted(path, pos, "redundant transaction length check failed"));
        }
        if th.status == status::CHECKPOINT {
            // Voted, never finished, so never acknowledged. With group commit, transactions finished
            // after it in the same unsynced group can follow it; none of them was acknowledged either,
            // because an acknowledgement waits for an fsync issued after every earlier flip.
            return cut("unfinished transaction (status 'c')");
        }
        if ![status::COMMITTED, status::PACKED, status::UNDONE].contains(&th.status) {
            return Err(StorageError::corrupted(
                path,
                pos,
                format!("invalid transaction status byte {:#04x}", th.status),
            ));
        }
        if th.tid <= last_tid {
            tracing::warn!(path = %path.display(), offset = pos, "time-stamp reduction (tid not increasing)");
        }
        if th.status != status::UNDONE {
            scan_records(&mut window, path, pos, &th, index, &mut tindex)?;
        }
        last_tid = th.tid;
        pos = extent;
    }
}

fn scan_records(
    file: &mut Window<'_>,
    path: &Path,
    tpos: u64,
    th: &TxnHeader,
    index: &mut Index,
    tindex: &mut Vec<(u64, u64)>,
) -> Result<()> {
    let tend = tpos + th.tlen;
    let mut pos = tpos + th.header_len();
    tindex.clear();
    while pos < tend {
        if tend - pos < DATA_HEADER_LEN {
            return Err(StorageError::corrupted(path, pos, "data record header exceeds its transaction"));
        }
        let mut db = [0u8; DATA_HEADER_LEN as usize];
        file.read_exact_at(&mut db, pos)?;
        let dh = DataHeader::decode(&db);
        if dh.tloc != tpos {
            return Err(StorageError::corrupted(
                path,
                pos,
                format!("data record points to transaction {} instead of {tpos}", dh.tloc),
            ));
        }
        if dh.vlen != 0 {
            return Err(StorageError::corrupted(path, pos, "data record has a version (not supported since ZODB 3.9)"));
        }
        let len = DATA_HEADER_LEN.checked_add(if dh.plen == 0 { 8 } else { dh.plen });
        let Some(end) = len.and_then(|l| pos.checked_add(l)).filter(|e| *e <= tend) else {
            return Err(StorageError::corrupted(path, pos, "data record exceeds its transaction"));
        };
        if dh.tid != th.tid && th.status != status::PACKED {
            // restore() may legitimately write records whose tid differs; FileStorage accepts it.
            tracing::debug!(offset = pos, "data record tid differs from its transaction's");
        }
        let expected_prev = index.get(dh.oid).unwrap_or(0);
        if expected_prev != dh.prev && dh.prev != 0 {
            tracing::warn!(path = %path.display(), offset = pos, "incorrect previous pointer");
        }
        tindex.push((dh.oid, pos));
        pos = end;
    }
    index.extend(tindex.drain(..));
    Ok(())
}

/// True when the file's last 8 bytes are the trailing length of a well-formed committed transaction
/// that starts after `pos`: then the damage at `pos` is in the middle of the history, not a torn tail.
fn later_transaction_exists(file: &DataFile, pos: u64, file_len: u64, last_tid: u64) -> Result<bool> {
    if file_len < pos + 16 {
        return Ok(false);
    }
    let mut b8 = [0u8; 8];
    file.read_exact_at(&mut b8, file_len - 8)?;
    let rtl = u64::from_be_bytes(b8);
    let Some(cand) = file_len.checked_sub(8).and_then(|e| e.checked_sub(rtl)) else { return Ok(false) };
    if cand <= pos || rtl < TXN_HEADER_LEN {
        return Ok(false);
    }
    let mut hb = [0u8; TXN_HEADER_LEN as usize];
    file.read_exact_at(&mut hb, cand)?;
    let th = TxnHeader::decode(&hb);
    Ok(th.tlen == rtl && th.tid > last_tid && [status::COMMITTED, status::PACKED].contains(&th.status))
}

/// Saves `[pos, file_len)` to the first free `Data.fs.trN`, fsyncs it, then truncates the data file.
fn cut_tail(file: &DataFile, path: &Path, pos: u64, file_len: u64, reason: &str) -> Result<PathBuf> {
    let tail = file.read_vec_at(pos, file_len - pos, file_len)?;
    let side = (0u32..)
        .map(|i| PathBuf::from(format!("{}.tr{i}", path.display())))
        .find(|p| !p.exists())
        .expect("an unbounded range always yields a free name");
    std::fs::write(&side, &tail)
        .and_then(|_| std::fs::File::open(&side)?.sync_all())
        .map_err(|e| StorageError::io("save truncated tail to", &side, e))?;
    file.set_len(pos)?;
    file.sync_data()?;
    sync_dir(&super::file::parent_dir(path))?;
    tracing::warn!(path = %path.display(), offset = pos, bytes = file_len - pos, saved_to = %side.display(), reason,
        "truncated an incomplete tail left by a crash");
    Ok(side)
}

//! A full, read-only consistency check of a Data.fs (what ZODB's `fstest` does, and more): every
//! transaction's lengths and status, tid order, every data record's position, version length, prev
//! pointer and backpointer (earlier, and to a record of the same object).

use std::collections::HashMap;
use std::path::Path;

use super::error::{Result, StorageError};
use super::file::DataFile;
use super::format::{DATA_HEADER_LEN, DataHeader, MAGIC, TXN_HEADER_LEN, TxnHeader, status};

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub size: u64,
    pub transactions: u64,
    pub packed_transactions: u64,
    pub records: u64,
    pub backpointers: u64,
    pub objects: u64,
    pub last_tid: [u8; 8],
    /// Problems, each with its byte offset. Empty means the file is sound.
    pub errors: Vec<(u64, String)>,
}

/// Checks the whole file. I/O errors are `Err`; damage is reported in `errors` (the scan stops at the
/// first damage that makes the rest unreadable).
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let f = std::fs::File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let file = DataFile::new(f, path, None);
    let size = file.len()?;
    let mut r = VerifyReport { size, ..Default::default() };
    let mut magic = [0u8; 4];
    if size < 4 || file.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
        r.errors.push((0, "not an FS30 file (bad magic)".into()));
        return Ok(r);
    }
    let mut last_pos: HashMap<u64, u64> = HashMap::new();
    let mut pos = 4u64;
    let mut ltid = 0u64;
    while pos < size {
        if size - pos < TXN_HEADER_LEN {
            r.errors.push((pos, "truncated transaction header".into()));
            break;
        }
        let mut hb = [0u8; TXN_HEADER_LEN as usize];
        file.read_exact_at(&mut hb, pos)?;
        let th = TxnHeader::decode(&hb);
        let Some(extent) = pos.checked_add(th.tlen).and_then(|e| e.checked_add(8)).filter(|e| *e <= size) else {
            r.errors.push((pos, format!("transaction length {} runs past the end of the file", th.tlen)));
            break;
        };
        if th.tlen < th.header_len() {
            r.errors.push((pos, "transaction length shorter than its header".into()));
            break;
        }
        let mut b8 = [0u8; 8];
        file.read_exact_at(&mut b8, extent - 8)?;
        if u64::from_be_bytes(b8) != th.tlen {
            r.errors.push((pos, "redundant transaction length does not match".into()));
            break;
        }
        match th.status {
            status::COMMITTED | status::UNDONE => {}
            status::PACKED => r.packed_transactions += 1,
            status::CHECKPOINT => {
                r.errors.push((pos, "transaction with checkpoint flag set (unfinished commit)".into()))
            }
            other => r.errors.push((pos, format!("invalid status byte {other:#04x}"))),
        }
        if th.tid <= ltid {
            r.errors.push((pos, "time-stamp reduction".into()));
        }
        ltid = th.tid;
        r.transactions += 1;
        let tend = pos + th.tlen;
        let mut dpos = pos + th.header_len();
        while dpos < tend {
            if tend - dpos < DATA_HEADER_LEN {
                r.errors.push((dpos, "data record header exceeds its transaction".into()));
                break;
            }
            let mut db = [0u8; DATA_HEADER_LEN as usize];
            file.read_exact_at(&mut db, dpos)?;
            let dh = DataHeader::decode(&db);
            let len = DATA_HEADER_LEN.checked_add(if dh.plen == 0 { 8 } else { dh.plen });
            let Some(dend) = len.and_then(|l| dpos.checked_add(l)).filter(|e| *e <= tend) else {
                r.errors.push((dpos, "data record exceeds its transaction".into()));
                break;
            };
            if dh.tloc != pos {
                r.errors.push((dpos, format!("transaction back pointer {} should be {pos}", dh.tloc)));
            }
            if dh.vlen != 0 {
                r.errors.push((dpos, "non-zero version length".into()));
            }
            if dh.prev != 0 {
                check_points_to_same_oid(&file, size, dpos, dh.prev, dh.oid, "previous-record pointer", &mut r.errors)?;
            }
            if dh.plen == 0 {
                let mut bp = [0u8; 8];
                file.read_exact_at(&mut bp, dpos + DATA_HEADER_LEN)?;
                let back = u64::from_be_bytes(bp);
                if back != 0 {
                    r.backpointers += 1;
                    check_points_to_same_oid(&file, size, dpos, back, dh.oid, "backpointer", &mut r.errors)?;
                }
            }
            last_pos.insert(dh.oid, dpos);
            r.records += 1;
            dpos = dend;
        }
        if r.errors.len() > 1000 {
            break;
        }
        pos = extent;
    }
    r.objects = last_pos.len() as u64;
    r.last_tid = ltid.to_be_bytes();
    Ok(r)
}

fn check_points_to_same_oid(
    file: &DataFile,
    size: u64,
    at: u64,
    target: u64,
    oid: u64,
    what: &str,
    errors: &mut Vec<(u64, String)>,
) -> Result<()> {
    if target >= at || target < 4 + TXN_HEADER_LEN || target + DATA_HEADER_LEN > size {
        errors.push((at, format!("{what} {target} does not point to an earlier record")));
        return Ok(());
    }
    let mut db = [0u8; DATA_HEADER_LEN as usize];
    file.read_exact_at(&mut db, target)?;
    let th = DataHeader::decode(&db);
    if th.oid != oid {
        errors.push((at, format!("{what} {target} points to a record of another object ({:#x})", th.oid)));
    }
    Ok(())
}

//! The object index (oid → file position of its current data record) and its on-disk snapshot,
//! `Data.fs.rsindex`, so that a restart scans only the transactions after the snapshot.
//!
//! Snapshot layout (big-endian): `ZRSIDX01` · covered position u64 · tid of the last transaction
//! before it u64 · entry count u64 · `count` × (oid u64, pos u64) in oid order · CRC-32 of all of it.
//! It is written atomically (temporary file, fsync, rename, directory fsync) and checked on load
//! against the data file (the transaction that ends at the covered position must carry that tid and
//! its records must be indexed where they are), like FileStorage's own `_check_sanity`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::file::{DataFile, write_atomically};
use super::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader, be64, status};

/// oid → position of the current record.
pub type Index = BTreeMap<u64, u64>;

const MAGIC: &[u8; 8] = b"ZRSIDX01";

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction before this position is reflected in `index`.
    pub pos: u64,
    /// Tid of the transaction that ends at `pos` (0 for an empty storage).
    pub last_tid: u64,
    pub index: Index,
}

/// Path of the snapshot beside `data_path`.
pub fn snapshot_path(data_path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.rsindex", data_path.display()))
}

/// Writes a snapshot atomically.
pub fn save(data_path: &Path, snap: &Snapshot) -> Result<()> {
    let mut buf = Vec::with_capacity(32 + snap.index.len() * 16 + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&snap.pos.to_be_bytes());
    buf.extend_from_slice(&snap.last_tid.to_be_bytes());
    buf.extend_from_slice(&(snap.index.len() as u64).to_be_bytes());
    for (oid, pos) in &snap.index {
        buf.extend_from_slice(&oid.to_be_bytes());
        buf.extend_from_slice(&pos.to_be_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    write_atomically(&snapshot_path(data_path), &buf)
}

/// Reads the snapshot if there is a valid one; `None` (with a log line) for missing, damaged or stale
/// snapshots, which only cost a full scan.
pub fn load(data_path: &Path, file: &DataFile, file_len: u64) -> Option<Snapshot> {
    let path = snapshot_path(data_path);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read index snapshot; scanning the whole file");
            return None;
        }
    };
    match decode(&bytes) {
        Some(snap) if is_consistent(file, file_len, &snap).unwrap_or(false) => Some(snap),
        _ => {
            tracing::warn!(path = %path.display(), "ignoring damaged or stale index snapshot; scanning the whole file");
            None
        }
    }
}

fn decode(bytes: &[u8]) -> Option<Snapshot> {
    if bytes.len() < 36 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let pos = be64(&body[8..16]);
    let last_tid = be64(&body[16..24]);
    let count = usize::try_from(be64(&body[24..32])).ok()?;
    let entries = &body[32..];
    if entries.len() != count.checked_mul(16)? {
        return None;
    }
    let index = entries.chunks_exact(16).map(|c| (be64(&c[..8]), be64(&c[8..]))).collect();
    Some(Snapshot { pos, last_tid, index })
}

fn is_consistent(file: &DataFile, file_len: u64, snap: &Snapshot) -> Result<bool> {
    if snap.pos == 4 {
        return Ok(snap.index.is_empty() && snap.last_tid == 0);
    }
    if snap.pos < 4 + TXN_HEADER_LEN + 8 || snap.pos > file_len {
        return Ok(false);
    }
    let mut b8 = [0u8; 8];
    file.read_exact_at(&mut b8, snap.pos - 8)?;
    let tlen = u64::from_be_bytes(b8);
    let Some(tpos) = snap.pos.checked_sub(8 + tlen).filter(|p| *p >= 4) else { return Ok(false) };
    let mut hb = [0u8; TXN_HEADER_LEN as usize];
    file.read_exact_at(&mut hb, tpos)?;
    let th = TxnHeader::decode(&hb);
    if th.tid != snap.last_tid || th.tlen != tlen || ![status::COMMITTED, status::PACKED].contains(&th.status) {
        return Ok(false);
    }
    // A few records of that transaction must be indexed exactly where they are, unless superseded
    // later in the same transaction.
    let tend = tpos + tlen;
    let mut pos = tpos + th.header_len();
    let mut checked = 0;
    while pos < tend && checked < 5 {
        let mut db = [0u8; DATA_HEADER_LEN as usize];
        file.read_exact_at(&mut db, pos)?;
        let dh = DataHeader::decode(&db);
        if dh.tloc != tpos || pos.saturating_add(dh.record_len()) > tend {
            return Ok(false);
        }
        match snap.index.get(&dh.oid) {
            Some(&p) if p >= pos && p < tend => {}
            _ => return Ok(false),
        }
        checked += 1;
        pos += dh.record_len();
    }
    Ok(true)
}

/// Removes the snapshot (before a pack swaps files, so it can never describe the wrong file).
pub fn remove(data_path: &Path) -> Result<()> {
    remove_if_exists(&snapshot_path(data_path))
}

/// Removes a file if it exists.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_damage() {
        let snap = Snapshot { pos: 100, last_tid: 5, index: [(1, 10), (2, 20)].into_iter().collect() };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        save(&data, &snap).unwrap();
        let bytes = std::fs::read(snapshot_path(&data)).unwrap();
        assert_eq!(decode(&bytes), Some(snap));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }
}

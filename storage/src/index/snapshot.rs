//! `Data.fs.rsindex`: a snapshot of the object index and the position it covers, so that a restart
//! scans only the transactions after it.
//!
//! Layout (big-endian): `ZRSIDX02` · covered position u64 · tid of the last transaction before it
//! u64 · entry count u64 · `count` × (oid u64, position u48) in oid order · CRC-32 of all of it. The
//! entries are exactly `CompactIndex`'s in-memory base array, so a load reads them into it in one go
//! and only checks them (CRC, order); nothing is built per entry. `ZRSIDX01` files (the same with
//! 8-byte positions) are still read, and replaced by a `ZRSIDX02` at the next save.
//!
//! It is written atomically (temporary file, fsync, rename, directory fsync) and checked on load
//! against the data file (the transaction that ends at the covered position must carry that tid and
//! its records must be indexed where they are), like FileStorage's own `_check_sanity`. Anything
//! wrong with it only costs a full scan.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::compact::{CompactIndex, ENTRY_LEN, MAX_POS};
use crate::error::{Result, StorageError};
use crate::file::{DataFile, write_atomically};
use crate::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader, be64, status};

const MAGIC_V1: &[u8; 8] = b"ZRSIDX01";
const MAGIC: &[u8; 8] = b"ZRSIDX02";
/// Magic, position, tid, count.
const HEADER_LEN: usize = 32;

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction before this position is reflected in `index`.
    pub pos: u64,
    /// Tid of the transaction that ends at `pos` (0 for an empty storage).
    pub last_tid: u64,
    pub index: CompactIndex,
}

/// Path of the snapshot beside `data_path`.
pub fn snapshot_path(data_path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.rsindex", data_path.display()))
}

/// Serializes a snapshot (the caller may hold the storage's read lock: this is one copy of the
/// index, and no I/O).
pub fn encode(pos: u64, last_tid: u64, index: &CompactIndex) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + index.len() * ENTRY_LEN + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&pos.to_be_bytes());
    buf.extend_from_slice(&last_tid.to_be_bytes());
    buf.extend_from_slice(&(index.len() as u64).to_be_bytes());
    index.write_entries(&mut buf);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    buf
}

/// Writes a snapshot atomically.
#[cfg(test)]
pub fn save(data_path: &Path, snap: &Snapshot) -> Result<()> {
    save_encoded(data_path, &encode(snap.pos, snap.last_tid, &snap.index))
}

/// Writes an already encoded snapshot atomically.
pub fn save_encoded(data_path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(&snapshot_path(data_path), bytes)
}

/// Reads the snapshot if there is a valid one; `None` (with a log line) for missing, damaged or stale
/// snapshots, which only cost a full scan.
pub fn load(data_path: &Path, file: &DataFile, file_len: u64) -> Option<Snapshot> {
    let path = snapshot_path(data_path);
    let bytes = match read_snapshot(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read index snapshot; scanning the whole file");
            return None;
        }
    };
    match bytes.and_then(decode_parts) {
        Some(snap) if is_consistent(file, file_len, &snap).unwrap_or(false) => Some(snap),
        _ => {
            tracing::warn!(path = %path.display(), "ignoring damaged or stale index snapshot; scanning the whole file");
            None
        }
    }
}

/// A snapshot file split as read: header, entries (read straight into the buffer that becomes the
/// index), CRC.
struct Parts {
    header: [u8; HEADER_LEN],
    entries: Vec<u8>,
    crc: [u8; 4],
}

/// `Ok(None)` when the file is too short to hold a header and a CRC.
fn read_snapshot(path: &Path) -> std::io::Result<Option<Parts>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let Some(entries_len) = len.checked_sub((HEADER_LEN + 4) as u64).and_then(|n| usize::try_from(n).ok()) else {
        return Ok(None);
    };
    let mut header = [0u8; HEADER_LEN];
    f.read_exact(&mut header)?;
    let mut entries = Vec::with_capacity(entries_len);
    (&mut f).take(entries_len as u64).read_to_end(&mut entries)?;
    let mut crc = [0u8; 4];
    if entries.len() != entries_len || f.read_exact(&mut crc).is_err() {
        return Ok(None);
    }
    Ok(Some(Parts { header, entries, crc }))
}

#[cfg(test)]
fn decode(bytes: &[u8]) -> Option<Snapshot> {
    if bytes.len() < HEADER_LEN + 4 {
        return None;
    }
    let (head, rest) = bytes.split_at(HEADER_LEN);
    let (entries, crc) = rest.split_at(rest.len() - 4);
    decode_parts(Parts { header: head.try_into().ok()?, entries: entries.to_vec(), crc: crc.try_into().ok()? })
}

fn decode_parts(parts: Parts) -> Option<Snapshot> {
    let Parts { header, entries, crc } = parts;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&entries);
    if hasher.finalize() != u32::from_be_bytes(crc) {
        return None;
    }
    let pos = be64(&header[8..16]);
    let last_tid = be64(&header[16..24]);
    let count = usize::try_from(be64(&header[24..32])).ok()?;
    let index = match &header[..8] {
        m if m == MAGIC => {
            if entries.len() != count.checked_mul(ENTRY_LEN)? {
                return None;
            }
            CompactIndex::from_base(entries)?
        }
        m if m == MAGIC_V1 => {
            if entries.len() != count.checked_mul(16)? {
                return None;
            }
            let pairs: Vec<(u64, u64)> = entries.chunks_exact(16).map(|c| (be64(&c[..8]), be64(&c[8..]))).collect();
            if pairs.iter().any(|&(_, p)| p >= MAX_POS) {
                return None;
            }
            CompactIndex::from_sorted(&pairs)?
        }
        _ => return None,
    };
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
        match snap.index.get(dh.oid) {
            Some(p) if p >= pos && p < tend => {}
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

    /// The new layout is the in-memory one: header, 14 bytes per entry, CRC.
    #[test]
    fn v2_entries_are_the_base_array() {
        let index: CompactIndex = [(1, 10), (0x0102_0304_0506_0708, MAX_POS - 1)].into_iter().collect();
        let bytes = encode(100, 5, &index);
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * ENTRY_LEN + 4);
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + 14], &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 10]);
        assert_eq!(decode(&bytes).unwrap().index, index);
    }

    /// Snapshots written before the compact index are still read.
    #[test]
    fn reads_v1_snapshots() {
        let entries = [(3u64, 40u64), (7, 4000)];
        let mut buf = Vec::new();
        buf.extend_from_slice(MAGIC_V1);
        buf.extend_from_slice(&100u64.to_be_bytes());
        buf.extend_from_slice(&5u64.to_be_bytes());
        buf.extend_from_slice(&2u64.to_be_bytes());
        for (o, p) in entries {
            buf.extend_from_slice(&o.to_be_bytes());
            buf.extend_from_slice(&p.to_be_bytes());
        }
        let crc = crc32fast::hash(&buf);
        let mut good = buf.clone();
        good.extend_from_slice(&crc.to_be_bytes());
        let snap = decode(&good).unwrap();
        assert_eq!((snap.pos, snap.last_tid), (100, 5));
        assert_eq!(snap.index.iter().collect::<Vec<_>>(), entries);
        // A v1 position the compact index cannot hold makes the snapshot unusable (a scan).
        let mut big = buf.clone();
        let at = big.len() - 8;
        big[at..].copy_from_slice(&MAX_POS.to_be_bytes());
        let crc = crc32fast::hash(&big);
        big.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(decode(&big), None);
    }
}

//! `Data.fs.rsindex`: a snapshot of the object index and the position it covers, so that a restart
//! scans only the transactions after it.
//!
//! Layout (big-endian): `ZRSIDX02` · covered position u64 · tid of the last transaction before it
//! u64 · entry count u64 · block count u64 · the directory (`blocks` × (oid prefix u64, first entry
//! u64)) · the entries (`count` × (oid suffix u16, position u48)) · CRC-32 of all of it. The two
//! arrays are exactly `CompactIndex`'s in memory, so a load reads each into its buffer in one go and
//! only checks them (CRC, order); nothing is built per entry. `ZRSIDX01` files (magic, position,
//! tid, count, `count` × (oid u64, position u64), CRC) are still read, and replaced by a `ZRSIDX02`
//! at the next save.
//!
//! It is written atomically (temporary file, fsync, rename, directory fsync) and checked on load
//! against the data file (the transaction that ends at the covered position must carry that tid and
//! its records must be indexed where they are), like FileStorage's own `_check_sanity`. Anything
//! wrong with it only costs a full scan.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::compact::{CompactIndex, DIR_LEN, ENTRY_LEN, EntryCheck, MAX_POS};
use crate::error::{Result, StorageError};
use crate::file::{AtomicWrite, DataFile};
use crate::format::{DATA_HEADER_LEN, DataHeader, TXN_HEADER_LEN, TxnHeader, be64, status};

const MAGIC_V1: &[u8; 8] = b"ZRSIDX01";
const MAGIC: &[u8; 8] = b"ZRSIDX02";
/// Magic, position, tid, entry count, block count.
const HEADER_LEN: usize = 40;
/// Magic, position, tid, entry count.
const HEADER_LEN_V1: usize = 32;
/// Bytes of entries read, checksummed and checked at a time: a multiple of `ENTRY_LEN` that fits
/// in a core's L2 cache.
const LOAD_CHUNK: usize = 256 * 1024;

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

/// Serializes a snapshot in memory (tests; `write_into` writes the same bytes to a file).
#[cfg(test)]
pub fn encode(pos: u64, last_tid: u64, index: &CompactIndex) -> Vec<u8> {
    let (dir, entries) = index.parts();
    let mut buf = Vec::with_capacity(HEADER_LEN + dir.len() + entries.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&pos.to_be_bytes());
    buf.extend_from_slice(&last_tid.to_be_bytes());
    buf.extend_from_slice(&((entries.len() / ENTRY_LEN) as u64).to_be_bytes());
    buf.extend_from_slice(&((dir.len() / DIR_LEN) as u64).to_be_bytes());
    buf.extend_from_slice(&dir);
    buf.extend_from_slice(&entries);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_be_bytes());
    buf
}

/// Writes a snapshot atomically.
#[cfg(test)]
pub fn save(data_path: &Path, snap: &Snapshot) -> Result<()> {
    let mut w = begin_save(data_path)?;
    write_into(&mut w, snap.pos, snap.last_tid, &snap.index)?;
    w.commit()
}

/// Starts writing a snapshot: `write_into` it (under the storage's read lock), then `commit` it
/// (fsync and rename, after the lock is released).
pub fn begin_save(data_path: &Path) -> Result<AtomicWrite> {
    AtomicWrite::create(&snapshot_path(data_path))
}

/// Writes a snapshot's bytes straight from the index's arrays (as `encode` lays them out), with no
/// copy of the index in memory: at 10M objects that copy was 80 MB on top of the index, at every
/// close and after every pack.
pub fn write_into(w: &mut AtomicWrite, pos: u64, last_tid: u64, index: &CompactIndex) -> Result<()> {
    let (dir, entries) = index.parts();
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&pos.to_be_bytes());
    header.extend_from_slice(&last_tid.to_be_bytes());
    header.extend_from_slice(&((entries.len() / ENTRY_LEN) as u64).to_be_bytes());
    header.extend_from_slice(&((dir.len() / DIR_LEN) as u64).to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    for part in [&header[..], &dir, &entries] {
        hasher.update(part);
        w.write_all(part)?;
    }
    w.write_all(&hasher.finalize().to_be_bytes())
}

/// Reads the snapshot if there is a valid one; `None` (with a log line) for missing, damaged or stale
/// snapshots, which only cost a full scan.
pub fn load(data_path: &Path, file: &DataFile, file_len: u64) -> Option<Snapshot> {
    let path = snapshot_path(data_path);
    let snap = match std::fs::File::open(&path).and_then(read_from) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read index snapshot; scanning the whole file");
            return None;
        }
    };
    match snap {
        Some(snap) if is_consistent(file, file_len, &snap).unwrap_or(false) => Some(snap),
        _ => {
            tracing::warn!(path = %path.display(), "ignoring damaged or stale index snapshot; scanning the whole file");
            None
        }
    }
}

/// Reads exactly `n` bytes into a new buffer of that capacity (no zeroing, no regrowth); `None` if
/// the input ends first.
fn read_vec(r: &mut impl Read, n: u64) -> std::io::Result<Option<Vec<u8>>> {
    let Ok(cap) = usize::try_from(n) else { return Ok(None) };
    let mut v = Vec::with_capacity(cap);
    r.take(n).read_to_end(&mut v)?;
    Ok((v.len() == cap).then_some(v))
}

/// Decodes a snapshot from `r`, which holds it whole (a file, or bytes in tests). `Ok(None)` for
/// anything but a well-formed snapshot with a good CRC; I/O errors are errors.
fn read_from(mut r: impl Read + Seekish) -> std::io::Result<Option<Snapshot>> {
    let total = r.total_len()?;
    let mut header = [0u8; HEADER_LEN];
    if total < (HEADER_LEN_V1 + 4) as u64 {
        return Ok(None);
    }
    r.read_exact(&mut header[..HEADER_LEN_V1])?;
    let (pos, last_tid, count) = (be64(&header[8..16]), be64(&header[16..24]), be64(&header[24..32]));
    let mut hasher = crc32fast::Hasher::new();
    let index = if &header[..8] == MAGIC {
        if total < (HEADER_LEN + 4) as u64 {
            return Ok(None);
        }
        r.read_exact(&mut header[HEADER_LEN_V1..])?;
        let blocks = be64(&header[32..40]);
        let (Some(dir_len), Some(entries_len)) =
            (blocks.checked_mul(DIR_LEN as u64), count.checked_mul(ENTRY_LEN as u64))
        else {
            return Ok(None);
        };
        if dir_len.checked_add(entries_len).and_then(|n| n.checked_add((HEADER_LEN + 4) as u64)) != Some(total) {
            return Ok(None);
        }
        let Some(dir) = read_vec(&mut r, dir_len)? else { return Ok(None) };
        hasher.update(&header);
        hasher.update(&dir);
        let Some(mut check) = usize::try_from(count).ok().and_then(|n| EntryCheck::new(&dir, n)) else {
            return Ok(None);
        };
        // The entries are read straight into the index's buffer, a chunk at a time, and each chunk
        // is checksummed and checked while it is still in cache: one pass over memory, not three.
        let Ok(cap) = usize::try_from(entries_len) else { return Ok(None) };
        let mut entries = Vec::with_capacity(cap);
        while entries.len() < cap {
            let start = entries.len();
            let want = (cap - start).min(LOAD_CHUNK);
            (&mut r).take(want as u64).read_to_end(&mut entries)?;
            if entries.len() != start + want {
                return Ok(None);
            }
            hasher.update(&entries[start..]);
            check.feed(&entries[start..]);
        }
        if !crc_matches(&mut r, hasher)? || check.finish().is_none() {
            return Ok(None);
        }
        Some(CompactIndex::from_checked_parts(dir, entries))
    } else if &header[..8] == MAGIC_V1 {
        let Some(entries_len) = count.checked_mul(16) else { return Ok(None) };
        if entries_len.checked_add((HEADER_LEN_V1 + 4) as u64) != Some(total) {
            return Ok(None);
        }
        let Some(entries) = read_vec(&mut r, entries_len)? else { return Ok(None) };
        hasher.update(&header[..HEADER_LEN_V1]);
        hasher.update(&entries);
        if !crc_matches(&mut r, hasher)? {
            return Ok(None);
        }
        let pairs: Vec<(u64, u64)> = entries.chunks_exact(16).map(|c| (be64(&c[..8]), be64(&c[8..]))).collect();
        if pairs.iter().any(|&(_, p)| p >= MAX_POS) {
            return Ok(None);
        }
        CompactIndex::from_sorted(&pairs)
    } else {
        return Ok(None);
    };
    Ok(index.map(|index| Snapshot { pos, last_tid, index }))
}

fn crc_matches(r: &mut impl Read, hasher: crc32fast::Hasher) -> std::io::Result<bool> {
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc)?;
    Ok(hasher.finalize() == u32::from_be_bytes(crc))
}

/// The total length of what `read_from` reads: a file's size, a slice's length.
trait Seekish {
    fn total_len(&self) -> std::io::Result<u64>;
}

impl Seekish for std::fs::File {
    fn total_len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl Seekish for &[u8] {
    fn total_len(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

#[cfg(test)]
fn decode(bytes: &[u8]) -> Option<Snapshot> {
    read_from(bytes).expect("reading a slice cannot fail")
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
        assert_eq!(bytes, encode(snap.pos, snap.last_tid, &snap.index), "written as encode lays it out");
        assert_eq!(decode(&bytes), Some(snap));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad), None, "flipped byte {i}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }

    /// The new layout is the in-memory one: header, directory, 8 bytes per entry, CRC.
    #[test]
    fn v2_holds_the_in_memory_arrays() {
        let index: CompactIndex = [(1, 10), (0x0102_0304_0506_0708, MAX_POS - 1)].into_iter().collect();
        let bytes = encode(100, 5, &index);
        assert_eq!(&bytes[..8], MAGIC);
        // Two blocks (prefixes 0 and 0x0102_0304_0506), one entry each.
        assert_eq!(bytes.len(), HEADER_LEN + 2 * DIR_LEN + 2 * ENTRY_LEN + 4);
        let entries = &bytes[HEADER_LEN + 2 * DIR_LEN..];
        assert_eq!(&entries[..ENTRY_LEN], &[0, 1, 0, 0, 0, 0, 0, 10]);
        assert_eq!(&bytes[HEADER_LEN + DIR_LEN..][..8], &0x0102_0304_0506u64.to_be_bytes());
        assert_eq!(decode(&bytes).unwrap().index, index);
    }

    /// A snapshot larger than one load chunk, over several blocks, read from a file as `load` does;
    /// damage deep in the entries is caught (by the CRC or the order check).
    #[test]
    fn large_snapshots_load_chunk_by_chunk() {
        let index: CompactIndex = (0..200_000u64).map(|o| (o * 3, o * 100 + 4)).collect();
        let bytes = encode(100, 5, &index);
        assert!(bytes.len() > 3 * LOAD_CHUNK);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        std::fs::write(&path, &bytes).unwrap();
        let snap = read_from(std::fs::File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(snap.index, index);
        for at in [HEADER_LEN + 40, bytes.len() / 2, bytes.len() - 10] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(read_from(std::fs::File::open(&path).unwrap()).unwrap(), None, "flipped byte {at}");
        }
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

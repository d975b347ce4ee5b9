//! The persistent cache file: the in-memory cache saved to disk, so that a restarted process
//! starts warm instead of reloading everything (ZEO's `client`/`var` persistent cache).
//!
//! It is a snapshot: `ZRSCACHE1`, the cache's last tid, then each revision (oid, start, end or
//! zero for current, length, data), and a CRC-32 of everything before it. It is written whole
//! to a temporary file, fsynced and renamed, so a crash leaves the previous snapshot. A snapshot
//! is never trusted as it stands: the client verifies it against the server on connect (oids
//! changed since are dropped, everything is dropped if the server cannot say, and a server that
//! is behind the snapshot is refused), exactly as after a disconnection. A damaged or foreign
//! file is ignored (and logged), never an error.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use zeo_proto::{Tid, Z64};

use crate::cache::{Cache, SavedRevision};

const MAGIC: &[u8; 9] = b"ZRSCACHE1";

/// Serializes the cache (nothing when it has no last tid yet: it was never verified).
pub(crate) fn encode(cache: &Cache) -> Option<Vec<u8>> {
    let (last, revs) = cache.saved();
    let last = last?;
    let mut out = Vec::with_capacity(cache.bytes() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&last);
    out.extend_from_slice(&(revs.len() as u64).to_be_bytes());
    for (oid, start, end, data) in &revs {
        out.extend_from_slice(oid);
        out.extend_from_slice(start);
        out.extend_from_slice(&end.unwrap_or(Z64));
        out.extend_from_slice(&(data.len() as u64).to_be_bytes());
        out.extend_from_slice(data);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// Parses a cache file; `None` for anything damaged.
pub(crate) fn decode(bytes: &[u8]) -> Option<(Tid, Vec<SavedRevision>)> {
    if bytes.len() < MAGIC.len() + 20 || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_be_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (h, t) = r.split_at(n);
        r = t;
        Some(h)
    };
    let tid = |b: &[u8]| -> Tid { b.try_into().expect("8 bytes") };
    let last = tid(take(8)?);
    let n = u64::from_be_bytes(take(8)?.try_into().ok()?);
    let mut revs = Vec::new();
    for _ in 0..n {
        let oid = tid(take(8)?);
        let start = tid(take(8)?);
        let end = tid(take(8)?);
        let len = usize::try_from(u64::from_be_bytes(take(8)?.try_into().ok()?)).ok()?;
        let data = Bytes::copy_from_slice(take(len)?);
        revs.push((oid, start, (end != Z64).then_some(end), data));
    }
    Some((last, revs))
}

/// Writes `bytes` to `path` atomically and durably.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Loads `path` into `cache` if it holds a valid snapshot. Returns how many revisions were loaded.
pub(crate) fn load_into(path: &Path, cache: &mut Cache) -> usize {
    match std::fs::read(path) {
        Ok(bytes) => match decode(&bytes) {
            Some((last, revs)) => {
                cache.load_saved(last, revs);
                tracing::info!(path = %path.display(), revisions = cache.len(), last_tid = %hex(&last),
                    "loaded the persistent cache; it is verified against the server on connect");
                cache.len()
            }
            None => {
                tracing::warn!(path = %path.display(), "ignoring a damaged persistent cache file");
                0
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the persistent cache file; starting cold");
            0
        }
    }
}

fn hex(t: &Tid) -> String {
    t.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_proto::p64;

    #[test]
    fn roundtrip_keeps_revisions_and_last_tid_and_rejects_damage() {
        let mut c = Cache::new(1 << 20);
        c.set_last_tid(p64(5));
        c.store(p64(1), Bytes::from_static(b"one"), p64(3), None, true);
        c.store(p64(2), Bytes::from_static(b"two-old"), p64(1), Some(p64(4)), true);
        let bytes = encode(&c).unwrap();
        let mut d = Cache::new(1 << 20);
        let (last, revs) = decode(&bytes).unwrap();
        d.load_saved(last, revs);
        assert_eq!(d.last_tid(), Some(p64(5)));
        assert_eq!(d.load(&p64(1), &p64(5)).unwrap().0, Bytes::from_static(b"one"));
        assert_eq!(d.load(&p64(2), &p64(2)).unwrap().0, Bytes::from_static(b"two-old"));
        assert!(d.load(&p64(2), &p64(4)).is_none(), "the old revision ended at 4");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_none(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(encode(&Cache::new(100)).is_none(), "a never-verified cache is not saved");
        // A smaller budget keeps the most recently used revisions.
        let mut big = Cache::new(1 << 20);
        big.set_last_tid(p64(100));
        for i in 1..=10u64 {
            big.store(p64(i), Bytes::from(vec![i as u8; 100]), p64(i), None, true);
        }
        let (last, revs) = decode(&encode(&big).unwrap()).unwrap();
        let mut small = Cache::new(4 * (100 + crate::cache::ENTRY_OVERHEAD));
        small.load_saved(last, revs);
        assert_eq!(small.len(), 4);
        assert!(small.load(&p64(10), &p64(100)).is_some() && small.load(&p64(1), &p64(100)).is_none());
    }
}

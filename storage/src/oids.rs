//! Oid allocation that never hands out an oid twice, across restarts too.
//!
//! FileStorage derives its next oid from the largest oid stored, so oids handed out but never stored
//! can be handed out again after a restart. We also persist a reservation, `Data.fs.rsoids`: before an
//! oid at or above the reservation is handed out, a larger reservation is written atomically. After
//! a restart allocation resumes above both the reservation and every stored oid.

use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::file::write_atomically;

const MAGIC: &[u8; 8] = b"ZRSOID01";
/// Oids reserved per durable write: one small atomic write per this many oids.
const RESERVATION_BLOCK: u64 = 1 << 20;

/// The allocator's state. Oids are u64 here; oid 0 is the root and is never allocated.
#[derive(Debug)]
pub struct OidAllocator {
    path: PathBuf,
    /// Next oid to hand out.
    next: u64,
    /// Every oid below this may have been handed out (durable).
    reserved: u64,
}

impl OidAllocator {
    /// Loads the reservation beside `data_path`; `max_stored` is the largest oid in the index.
    pub fn open(data_path: &Path, max_stored: Option<u64>) -> Result<Self> {
        let path = PathBuf::from(format!("{}.rsoids", data_path.display()));
        let reserved = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).ok_or_else(|| StorageError::corrupted(&path, 0, "bad oid reservation file"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StorageError::io("read", &path, e)),
        };
        let after_stored = max_stored.map_or(1, |m| m.saturating_add(1));
        Ok(OidAllocator { path, next: after_stored.max(reserved).max(1), reserved })
    }

    /// Hands out `n` new oids, making the reservation durable first when needed.
    pub fn allocate(&mut self, n: u64) -> Result<Vec<u64>> {
        let end = self.next.checked_add(n).ok_or_else(|| StorageError::Transaction("oid space exhausted".into()))?;
        if end > self.reserved {
            let reserved = end.saturating_add(RESERVATION_BLOCK);
            write_atomically(&self.path, &encode(reserved))?;
            self.reserved = reserved;
        }
        let oids = (self.next..end).collect();
        self.next = end;
        Ok(oids)
    }

    /// Notes an oid that a client stored without allocating it (FileStorage's `set_max_oid`).
    pub fn saw(&mut self, oid: u64) {
        if oid >= self.next {
            self.next = oid.saturating_add(1);
        }
    }
}

fn encode(reserved: u64) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&reserved.to_be_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 20 || &bytes[..8] != MAGIC {
        return None;
    }
    if crc32fast::hash(&bytes[..16]).to_be_bytes() != bytes[16..20] {
        return None;
    }
    Some(u64::from_be_bytes(bytes[8..16].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_reissues_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("Data.fs");
        let mut a = OidAllocator::open(&data, None).unwrap();
        assert_eq!(a.allocate(3).unwrap(), vec![1, 2, 3]);
        drop(a);
        let mut b = OidAllocator::open(&data, None).unwrap();
        let next = b.allocate(1).unwrap()[0];
        assert!(next > 3, "{next}");
        // An oid a client stored without allocating it moves allocation past it.
        b.saw(next + 10);
        assert_eq!(b.allocate(1).unwrap(), vec![next + 11]);
        let reserved = b.reserved;
        drop(b);
        // Stored oids beyond the reservation win too.
        let mut c = OidAllocator::open(&data, Some(reserved + 5)).unwrap();
        assert_eq!(c.allocate(1).unwrap(), vec![reserved + 6]);
    }
}

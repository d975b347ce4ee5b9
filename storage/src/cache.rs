//! A bounded cache of data records, keyed by file position, so that hot loads cost no system call.
//!
//! Coherence is free: a record never changes once written (only a transaction's status byte is
//! flipped, and that is not cached), and positions are only reused by a pack, which swaps in a new
//! cache with the new file. Memory is bounded in bytes; eviction is CLOCK (second chance), sharded
//! to keep lock contention low under many reader threads.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::format::DataHeader;

const SHARDS: usize = 16;
/// Memory a cached record costs beyond its data (map slot, clock entry, Arc header, allocation),
/// counted against the capacity so the bound is about real memory.
const ENTRY_OVERHEAD: usize = 160;

/// Records larger than this are not cached (one would crowd out thousands of small ones).
const MAX_CACHED_RECORD: usize = 64 << 10;

#[derive(Debug)]
struct Entry {
    header: DataHeader,
    data: Arc<[u8]>,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Entry>,
    clock: VecDeque<u64>,
    bytes: usize,
}

/// The record cache of one open file.
#[derive(Debug)]
pub struct RecordCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
}

impl RecordCache {
    /// A cache holding at most about `capacity` bytes of record data (0 disables it).
    pub fn new(capacity: usize) -> Self {
        RecordCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity / SHARDS,
        }
    }

    fn shard(&self, pos: u64) -> &Mutex<Shard> {
        // Positions are spread by record length; mix the bits so shards fill evenly.
        let h = pos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
        &self.shards[usize::try_from(h).unwrap_or(0) % SHARDS]
    }

    /// The configured capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.shard_capacity * SHARDS
    }

    pub fn get(&self, pos: u64) -> Option<(DataHeader, Arc<[u8]>)> {
        if self.shard_capacity == 0 {
            return None;
        }
        let mut s = self.shard(pos).lock().expect("cache shard poisoned");
        let e = s.map.get_mut(&pos)?;
        e.referenced = true;
        Some((e.header, e.data.clone()))
    }

    pub fn insert(&self, pos: u64, header: DataHeader, data: Arc<[u8]>) {
        let cost = data.len() + ENTRY_OVERHEAD;
        if data.len() > MAX_CACHED_RECORD || cost > self.shard_capacity {
            return;
        }
        let mut guard = self.shard(pos).lock().expect("cache shard poisoned");
        let s = &mut *guard;
        if s.map.contains_key(&pos) {
            return;
        }
        while s.bytes + cost > self.shard_capacity {
            let Some(victim) = s.clock.pop_front() else { break };
            match s.map.get_mut(&victim) {
                Some(e) if e.referenced => {
                    e.referenced = false;
                    s.clock.push_back(victim);
                }
                Some(_) => {
                    if let Some(e) = s.map.remove(&victim) {
                        s.bytes -= e.data.len() + ENTRY_OVERHEAD;
                    }
                }
                None => {}
            }
        }
        s.bytes += cost;
        s.map.insert(pos, Entry { header, data, referenced: false });
        s.clock.push_back(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(oid: u64) -> DataHeader {
        DataHeader { oid, tid: 1, prev: 0, tloc: 4, vlen: 0, plen: 3 }
    }

    #[test]
    fn bounded_and_second_chance() {
        let c = RecordCache::new(SHARDS * (10 + ENTRY_OVERHEAD) * 5);
        for pos in 0..10_000u64 {
            c.insert(pos, h(pos), Arc::from(&[7u8; 10][..]));
        }
        let total: usize = c.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
        assert!(total <= SHARDS * (10 + ENTRY_OVERHEAD) * 5, "{total}");
        // The most recent entries are present and correct.
        let (hd, d) = c.get(9_999).unwrap();
        assert_eq!((hd.oid, &*d), (9_999, &[7u8; 10][..]));
        // Disabled cache.
        let off = RecordCache::new(0);
        off.insert(1, h(1), Arc::from(&b"abc"[..]));
        assert!(off.get(1).is_none());
    }
}

//! The in-memory object cache: bounded in bytes, keyed for MVCC reads.
//!
//! # What is stored
//!
//! - **Current revisions**, `oid -> (data, start_tid)`: the newest revision the client knows of.
//!   It is valid for every snapshot from `start_tid` up to the cache's [`Cache::last_tid`],
//!   because every invalidation up to that tid has been applied.
//! - **Old revisions**, `(oid, start_tid) -> (data, end_tid)`: a revision that was current from
//!   `start_tid` until `end_tid` (exclusive). These are facts about history that never change,
//!   so they serve transactions whose snapshot is older than the latest commits.
//!
//! A transaction with snapshot `S` (it sees every transaction with tid <= `S`) may use a
//! revision when `start <= S < end` (old) or `start <= S <= last_tid` (current).
//!
//! # Staleness contract
//!
//! The cache never answers for a snapshot newer than [`Cache::last_tid`], and it only moves
//! `last_tid` forward through [`Cache::invalidate`] (or [`Cache::commit`] for the client's own
//! transactions), which first turns each affected current revision into an old one ending at
//! that tid. Those calls must come in tid order with none missing, which is what the server
//! guarantees on one connection; the client applies them on the connection's reader task, in
//! wire order, interleaved exactly with load replies.
//!
//! On (re)connect the client verifies the cache against the server (see
//! [`crate::client`]): oids changed while disconnected lose their current revision
//! ([`Cache::drop_current`]), and when the server cannot say what changed the whole cache goes
//! ([`Cache::clear`]). Old revisions survive [`Cache::drop_current`]: history does not change.
//!
//! # The load/invalidation race (ZEO issues 155 and 166)
//!
//! A `loadBefore` reply whose end tid is `None` claims "this is current", but only as of the
//! moment the server computed it. If an invalidation for that oid is applied between sending
//! the request and applying the reply, the claim may already be false. The server is required
//! to order a reply before the invalidations of later commits, and the client applies both in
//! wire order, which rules the race out; as a second line of defence (ZEO 5.2.3's rule), a load
//! in flight is registered with [`Cache::begin_load`], an invalidation of its oid marks it, and
//! [`Cache::end_load`] reports the mark so that the reply is then not cached as current. The
//! data itself is still correct for the snapshot it was asked for.
//!
//! # Bounds
//!
//! Every entry is charged its data length plus [`ENTRY_OVERHEAD`]; once the total exceeds the
//! budget the least recently used entries are evicted. Records larger than a quarter of the
//! budget are not cached at all, so one huge object cannot flush everything else.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use zeo_proto::{Oid, Tid, Z64};

/// Bytes charged per entry on top of its data, roughly the bookkeeping it costs, so that many
/// tiny records cannot blow the budget through overhead.
pub const ENTRY_OVERHEAD: usize = 96;

/// Where an entry lives, as recorded in the LRU index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current(Oid),
    Old(Oid, Tid),
}

#[derive(Debug)]
struct Current {
    data: Bytes,
    start: Tid,
    tick: u64,
}

#[derive(Debug)]
struct Old {
    data: Bytes,
    end: Tid,
    tick: u64,
}

/// Loads in flight for one oid (see the module docs on the race).
#[derive(Debug, Default)]
struct Inflight {
    loads: u32,
    invalidated: bool,
}

/// The object cache (see the module docs). Not thread-safe by itself: the client keeps it
/// under a mutex together with the connection generation.
#[derive(Debug)]
pub struct Cache {
    max_bytes: usize,
    bytes: usize,
    /// Every invalidation up to this tid has been applied; `None` before the first connection.
    last_tid: Option<Tid>,
    current: HashMap<Oid, Current>,
    old: BTreeMap<(Oid, Tid), Old>,
    /// Tick -> entry, oldest first: the eviction order.
    lru: BTreeMap<u64, Slot>,
    tick: u64,
    inflight: HashMap<Oid, Inflight>,
}

impl Cache {
    /// An empty cache holding at most about `max_bytes` (0 disables caching of data; the
    /// cache still tracks [`Cache::last_tid`]).
    pub fn new(max_bytes: usize) -> Cache {
        Cache {
            max_bytes,
            bytes: 0,
            last_tid: None,
            current: HashMap::new(),
            old: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            inflight: HashMap::new(),
        }
    }

    /// The tid up to which every invalidation has been applied: the newest snapshot the cache
    /// can answer for, and the snapshot new transactions start from.
    pub fn last_tid(&self) -> Option<Tid> {
        self.last_tid
    }

    /// Sets [`Cache::last_tid`] after verification against a server. It may move backwards
    /// only when the caller chose to accept a server that is behind (and cleared the cache).
    pub fn set_last_tid(&mut self, tid: Tid) {
        self.last_tid = Some(tid);
    }

    /// Number of cached revisions, current and old.
    pub fn len(&self) -> usize {
        self.current.len() + self.old.len()
    }

    /// Whether no revision is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the cached revisions (data plus [`ENTRY_OVERHEAD`] each).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The revision of `oid` a transaction with snapshot `snapshot` must see, as
    /// `(data, start_tid)`, if cached.
    pub fn load(&mut self, oid: &Oid, snapshot: &Tid) -> Option<(Bytes, Tid)> {
        if self.last_tid.is_none_or(|last| *snapshot > last) {
            return None;
        }
        if let Some(c) = self.current.get(oid)
            && c.start <= *snapshot
        {
            let found = (c.data.clone(), c.start);
            self.touch(Slot::Current(*oid));
            return Some(found);
        }
        let (&(_, start), rev) = self.old.range((*oid, Z64)..=(*oid, *snapshot)).next_back()?;
        if *snapshot >= rev.end {
            return None;
        }
        let found = (rev.data.clone(), start);
        self.touch(Slot::Old(*oid, start));
        Some(found)
    }

    /// Caches a `loadBefore` reply `(data, start, end)`. With `end` the revision is history
    /// and always cacheable; without, it is the current revision as of when the server
    /// computed it, cached only if `may_be_current` (see the module docs on the race).
    pub fn store(&mut self, oid: Oid, data: Bytes, start: Tid, end: Option<Tid>, may_be_current: bool) {
        if !self.fits(&data) {
            return;
        }
        match end {
            Some(end) => {
                if end <= start || self.old.contains_key(&(oid, start)) {
                    return;
                }
                self.insert_old(oid, start, data, end);
            }
            None => {
                if !may_be_current {
                    return;
                }
                if let Some(c) = self.current.get(&oid) {
                    if c.start >= start {
                        // Already known (or a newer one is): nothing to learn.
                        return;
                    }
                    // A newer current revision than ours while no invalidation said so: the
                    // reply overtook its invalidation. We don't know where our revision ends,
                    // so drop it rather than guess; the invalidation will find nothing to do.
                    self.remove(Slot::Current(oid));
                }
                self.insert_current(oid, start, data);
            }
        }
        self.evict();
    }

    /// Applies `invalidateTransaction(tid, oids)`: every listed oid's current revision (if
    /// older than `tid`) becomes an old revision ending at `tid`, and [`Cache::last_tid`]
    /// becomes `tid`. Invalidations at or below `last_tid` were already applied and are ignored.
    /// Returns whether it was applied.
    pub fn invalidate(&mut self, tid: Tid, oids: &[Oid]) -> bool {
        if self.last_tid.is_some_and(|last| tid <= last) {
            return false;
        }
        for oid in oids {
            if let Some(inflight) = self.inflight.get_mut(oid) {
                inflight.invalidated = true;
            }
            let ends_here = self.current.get(oid).is_some_and(|c| c.start < tid);
            if ends_here && let Some(c) = self.current.remove(oid) {
                self.lru.remove(&c.tick);
                self.bytes -= charge(&c.data);
                if self.old.contains_key(&(*oid, c.start)) {
                    continue;
                }
                self.insert_old(*oid, c.start, c.data, tid);
            }
        }
        self.last_tid = Some(tid);
        true
    }

    /// Applies the client's own commit `tid`, which the server never echoes as an
    /// invalidation: an invalidation of every written oid, then the written data as the new
    /// current revisions. `uncached` lists oids whose stored data is not what the server kept
    /// (resolved conflicts, undo), which are only invalidated.
    pub fn commit(&mut self, tid: Tid, written: &[(Oid, Bytes)], uncached: &[Oid]) {
        let mut oids: Vec<Oid> = written.iter().map(|(o, _)| *o).collect();
        oids.extend_from_slice(uncached);
        if !self.invalidate(tid, &oids) {
            // Out of order (cannot happen on a healthy connection): forget what we know.
            self.drop_current(&oids);
            return;
        }
        for (oid, data) in written {
            if uncached.contains(oid) || !self.fits(data) {
                continue;
            }
            if self.current.contains_key(oid) {
                self.remove(Slot::Current(*oid));
            }
            self.insert_current(*oid, tid, data.clone());
        }
        self.evict();
    }

    /// Forgets the current revision of each oid (old revisions stay: history is immutable).
    /// Used when reconnect verification reports oids changed while disconnected, without
    /// saying when.
    pub fn drop_current(&mut self, oids: &[Oid]) {
        for oid in oids {
            if self.current.contains_key(oid) {
                self.remove(Slot::Current(*oid));
            }
        }
    }

    /// Forgets every revision and [`Cache::last_tid`]: what the server cannot vouch for.
    pub fn clear(&mut self) {
        self.current.clear();
        self.old.clear();
        self.lru.clear();
        self.bytes = 0;
        self.last_tid = None;
        self.inflight.clear();
    }

    /// Registers a `loadBefore` of `oid` about to be sent (see the module docs on the race).
    pub fn begin_load(&mut self, oid: Oid) {
        self.inflight.entry(oid).or_default().loads += 1;
    }

    /// Ends a load registered with [`Cache::begin_load`]; true when an invalidation of its oid
    /// was applied meanwhile, so that its reply must not be cached as current.
    pub fn end_load(&mut self, oid: &Oid) -> bool {
        let Some(inflight) = self.inflight.get_mut(oid) else {
            // Registered under an earlier connection: be conservative.
            return true;
        };
        let invalidated = inflight.invalidated;
        inflight.loads = inflight.loads.saturating_sub(1);
        if inflight.loads == 0 {
            self.inflight.remove(oid);
        }
        invalidated
    }

    /// Forgets every registered load: done when the serving connection changes, because
    /// replies from the old one are no longer applied.
    pub fn reset_inflight(&mut self) {
        self.inflight.clear();
    }

    fn fits(&self, data: &Bytes) -> bool {
        charge(data) <= self.max_bytes / 4
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn insert_current(&mut self, oid: Oid, start: Tid, data: Bytes) {
        let tick = self.next_tick();
        self.bytes += charge(&data);
        self.lru.insert(tick, Slot::Current(oid));
        self.current.insert(oid, Current { data, start, tick });
    }

    fn insert_old(&mut self, oid: Oid, start: Tid, data: Bytes, end: Tid) {
        let tick = self.next_tick();
        self.bytes += charge(&data);
        self.lru.insert(tick, Slot::Old(oid, start));
        self.old.insert((oid, start), Old { data, end, tick });
    }

    fn touch(&mut self, slot: Slot) {
        let tick = self.next_tick();
        let old_tick = match slot {
            Slot::Current(oid) => self.current.get_mut(&oid).map(|c| std::mem::replace(&mut c.tick, tick)),
            Slot::Old(oid, start) => self.old.get_mut(&(oid, start)).map(|o| std::mem::replace(&mut o.tick, tick)),
        };
        if let Some(old_tick) = old_tick {
            self.lru.remove(&old_tick);
            self.lru.insert(tick, slot);
        }
    }

    fn remove(&mut self, slot: Slot) {
        let removed = match slot {
            Slot::Current(oid) => self.current.remove(&oid).map(|c| (c.tick, c.data)),
            Slot::Old(oid, start) => self.old.remove(&(oid, start)).map(|o| (o.tick, o.data)),
        };
        if let Some((tick, data)) = removed {
            self.lru.remove(&tick);
            self.bytes -= charge(&data);
        }
    }

    fn evict(&mut self) {
        while self.bytes > self.max_bytes {
            let Some((_, slot)) = self.lru.pop_first() else {
                break;
            };
            // pop_first already dropped the LRU entry; remove() finds none to drop again.
            self.remove(slot);
        }
    }
}

/// One cached revision as the cache file keeps it: oid, start tid, end tid (`None`: current),
/// data.
pub(crate) type SavedRevision = (Oid, Tid, Option<Tid>, Bytes);

impl Cache {
    /// Every revision, least recently used first, with [`Cache::last_tid`]: what the cache file
    /// saves. Cheap: the data is reference-counted.
    pub(crate) fn saved(&self) -> (Option<Tid>, Vec<SavedRevision>) {
        let revs = self
            .lru
            .values()
            .filter_map(|slot| match *slot {
                Slot::Current(oid) => self.current.get(&oid).map(|c| (oid, c.start, None, c.data.clone())),
                Slot::Old(oid, start) => self.old.get(&(oid, start)).map(|o| (oid, start, Some(o.end), o.data.clone())),
            })
            .collect();
        (self.last_tid, revs)
    }

    /// Fills an empty cache from a cache file (least recently used first). The revisions are
    /// only as fresh as `last_tid`: the client verifies them with the server before use, as it
    /// does after any disconnection.
    pub(crate) fn load_saved(&mut self, last_tid: Tid, revs: Vec<SavedRevision>) {
        self.clear();
        for (oid, start, end, data) in revs {
            if !self.fits(&data) || end.is_some_and(|e| e <= start) || start > last_tid {
                continue;
            }
            match end {
                Some(end) if !self.old.contains_key(&(oid, start)) => self.insert_old(oid, start, data, end),
                None if !self.current.contains_key(&oid) => self.insert_current(oid, start, data),
                _ => {}
            }
        }
        self.last_tid = Some(last_tid);
        self.evict();
    }
}

/// What an entry costs against the budget.
fn charge(data: &Bytes) -> usize {
    data.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeo_proto::p64;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn cache_at(tid: u64) -> Cache {
        let mut c = Cache::new(1 << 20);
        c.set_last_tid(p64(tid));
        c
    }

    #[test]
    fn current_revision_serves_snapshots_from_its_start() {
        let mut c = cache_at(10);
        c.store(p64(1), b("a"), p64(5), None, true);
        assert_eq!(c.load(&p64(1), &p64(10)), Some((b("a"), p64(5))));
        assert_eq!(c.load(&p64(1), &p64(5)), Some((b("a"), p64(5))));
        assert_eq!(c.load(&p64(1), &p64(4)), None, "created after that snapshot as far as we know");
        assert_eq!(c.load(&p64(1), &p64(11)), None, "newer than the cache can vouch for");
        assert_eq!(c.load(&p64(2), &p64(10)), None);
    }

    #[test]
    fn invalidation_turns_current_into_history() {
        let mut c = cache_at(10);
        c.store(p64(1), b("a"), p64(5), None, true);
        assert!(c.invalidate(p64(12), &[p64(1)]));
        assert_eq!(c.last_tid(), Some(p64(12)));
        // Old snapshots still see "a"; the new one must load.
        assert_eq!(c.load(&p64(1), &p64(11)), Some((b("a"), p64(5))));
        assert_eq!(c.load(&p64(1), &p64(12)), None);
        // A duplicate or older invalidation is ignored.
        assert!(!c.invalidate(p64(12), &[p64(1)]));
        assert!(!c.invalidate(p64(11), &[p64(1)]));
        // The new revision arrives, and both coexist.
        c.store(p64(1), b("b"), p64(12), None, true);
        assert_eq!(c.load(&p64(1), &p64(12)), Some((b("b"), p64(12))));
        assert_eq!(c.load(&p64(1), &p64(7)), Some((b("a"), p64(5))));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn invalidation_of_a_revision_starting_at_that_tid_is_a_no_op() {
        // A reply computed after commit 12 overtook invalidation 12 (tolerated, see the docs).
        let mut c = cache_at(10);
        c.store(p64(1), b("b"), p64(12), None, true);
        c.invalidate(p64(12), &[p64(1)]);
        assert_eq!(c.load(&p64(1), &p64(12)), Some((b("b"), p64(12))));
    }

    #[test]
    fn history_replies_are_cached_by_range() {
        let mut c = cache_at(20);
        c.store(p64(1), b("old"), p64(3), Some(p64(8)), true);
        assert_eq!(c.load(&p64(1), &p64(3)), Some((b("old"), p64(3))));
        assert_eq!(c.load(&p64(1), &p64(7)), Some((b("old"), p64(3))));
        assert_eq!(c.load(&p64(1), &p64(8)), None);
        assert_eq!(c.load(&p64(1), &p64(2)), None);
        // Nonsense ranges are refused.
        c.store(p64(2), b("x"), p64(8), Some(p64(8)), true);
        assert_eq!(c.load(&p64(2), &p64(8)), None);
    }

    #[test]
    fn a_load_raced_by_an_invalidation_is_not_cached_as_current() {
        let mut c = cache_at(10);
        c.begin_load(p64(1));
        c.invalidate(p64(11), &[p64(1)]);
        let raced = c.end_load(&p64(1));
        assert!(raced);
        c.store(p64(1), b("stale?"), p64(5), None, !raced);
        assert_eq!(c.load(&p64(1), &p64(11)), None);
        // Without an invalidation in between, the reply is cached.
        c.begin_load(p64(2));
        assert!(!c.end_load(&p64(2)));
        // An end_load without begin (an earlier connection's) is treated as raced.
        assert!(c.end_load(&p64(3)));
        // Two loads of one oid: the mark stays until both ended.
        c.begin_load(p64(4));
        c.begin_load(p64(4));
        c.invalidate(p64(12), &[p64(4)]);
        assert!(c.end_load(&p64(4)));
        assert!(c.end_load(&p64(4)));
        assert!(c.end_load(&p64(4)), "registry entry gone: conservative");
    }

    #[test]
    fn own_commit_installs_written_data() {
        let mut c = cache_at(10);
        c.store(p64(1), b("a"), p64(5), None, true);
        c.commit(p64(11), &[(p64(1), b("mine")), (p64(2), b("new"))], &[p64(3)]);
        assert_eq!(c.last_tid(), Some(p64(11)));
        assert_eq!(c.load(&p64(1), &p64(11)), Some((b("mine"), p64(11))));
        assert_eq!(c.load(&p64(1), &p64(10)), Some((b("a"), p64(5))));
        assert_eq!(c.load(&p64(2), &p64(11)), Some((b("new"), p64(11))));
        // An out-of-order commit only drops what it touched.
        c.commit(p64(9), &[(p64(2), b("weird"))], &[]);
        assert_eq!(c.load(&p64(2), &p64(11)), None);
        assert_eq!(c.last_tid(), Some(p64(11)));
    }

    #[test]
    fn a_newer_current_revision_is_kept() {
        let mut c = cache_at(20);
        c.store(p64(1), b("new"), p64(15), None, true);
        c.store(p64(1), b("older"), p64(5), None, true);
        assert_eq!(c.load(&p64(1), &p64(20)), Some((b("new"), p64(15))));
        // The reverse order replaces the older one without inventing its end.
        let mut c = cache_at(20);
        c.store(p64(1), b("older"), p64(5), None, true);
        c.store(p64(1), b("new"), p64(15), None, true);
        assert_eq!(c.load(&p64(1), &p64(20)), Some((b("new"), p64(15))));
        assert_eq!(c.load(&p64(1), &p64(10)), None);
    }

    #[test]
    fn verification_helpers() {
        let mut c = cache_at(10);
        c.store(p64(1), b("a"), p64(5), None, true);
        c.store(p64(1), b("h"), p64(2), Some(p64(5)), true);
        c.drop_current(&[p64(1)]);
        assert_eq!(c.load(&p64(1), &p64(10)), None);
        assert_eq!(c.load(&p64(1), &p64(3)), Some((b("h"), p64(2))));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        assert_eq!(c.last_tid(), None);
        assert_eq!(c.load(&p64(1), &p64(3)), None);
    }

    #[test]
    fn bounded_in_bytes_with_lru_eviction() {
        let budget = 10 * (100 + ENTRY_OVERHEAD);
        let mut c = Cache::new(budget);
        c.set_last_tid(p64(1000));
        let data = Bytes::from(vec![7u8; 100]);
        for i in 1..=10 {
            c.store(p64(i), data.clone(), p64(1), None, true);
        }
        assert_eq!(c.len(), 10);
        // Use oid 1 so that oid 2 is the least recently used.
        assert!(c.load(&p64(1), &p64(5)).is_some());
        c.store(p64(11), data.clone(), p64(1), None, true);
        assert!(c.bytes() <= budget);
        assert_eq!(c.len(), 10);
        assert!(c.load(&p64(1), &p64(5)).is_some());
        assert!(c.load(&p64(2), &p64(5)).is_none(), "least recently used went first");
        // Too big for the budget: not cached at all.
        c.store(p64(50), Bytes::from(vec![0u8; budget]), p64(1), None, true);
        assert!(c.load(&p64(50), &p64(5)).is_none());
        for i in 100..2000 {
            c.store(p64(i), data.clone(), p64(1), Some(p64(2)), true);
            assert!(c.bytes() <= budget);
        }
        // Zero budget: nothing cached, but the tid is still tracked.
        let mut z = Cache::new(0);
        z.set_last_tid(p64(3));
        z.store(p64(1), b("a"), p64(1), None, true);
        assert!(z.is_empty());
        assert!(z.invalidate(p64(4), &[p64(1)]));
        assert_eq!(z.last_tid(), Some(p64(4)));
    }
}

//! The in-memory object index, oid → position of the current data record, in about 14 bytes per
//! object (a `BTreeMap<u64, u64>` costs about 40).
//!
//! The bulk of it is `base`, one sorted flat array of 14-byte entries: the oid as 8 big-endian bytes,
//! then the position as 6 big-endian bytes. That is also the entry layout of the `ZRSIDX02` snapshot,
//! so loading a snapshot is one read into this array (see `snapshot`). Big-endian oids sort as bytes
//! the way they sort as numbers, which keeps the file portable and the comparisons simple.
//!
//! Writes take three paths, cheapest first:
//! - an oid already in `base` is updated in place (the common case: a new revision of an object);
//! - an oid above every indexed oid is appended (new objects: the allocator hands out rising oids);
//! - anything else (a transaction that allocated its oids before another that committed first, a
//!   pack copying records in tid order) goes to `overlay`, a small `BTreeMap` merged into `base` in
//!   one pass when it passes `1/MERGE_FRACTION` of the index.
//!
//! A removed `base` entry keeps its slot with the position `TOMBSTONE` until the next merge, so
//! removals never shift the array. Only the snapshot tests and the model use removal today.

use std::collections::BTreeMap;
use std::collections::btree_map;

/// Bytes per `base` entry: an 8-byte oid and a 6-byte position.
pub const ENTRY_LEN: usize = 14;
/// Positions must be below this (2^48 - 1, 256 TiB); the value itself marks a removed entry.
/// FileStorage offsets are far below it; `FileStorage` refuses to grow a file past it.
pub const MAX_POS: u64 = (1 << 48) - 1;
const TOMBSTONE: [u8; 6] = [0xff; 6];
/// The overlay (plus tombstones) is merged when it passes this fraction of the index: large enough
/// that merging costs a bounded number of entry copies per out-of-order insert (about 32, amortized),
/// small enough that its ~40 bytes per entry add little more than one byte per object.
const MERGE_FRACTION: usize = 32;
/// ... but never below this many entries, so small indexes do not merge on every insert (tests use
/// a small one so that the property test's short sequences merge too).
const MIN_MERGE: usize = if cfg!(test) { 16 } else { 4096 };
/// Appends grow `base` by an eighth (not by doubling) so unused capacity stays under 2 bytes/object.
const GROWTH_FRACTION: usize = 8;

/// oid → position, ordered by oid. See the module comment for the layout.
#[derive(Clone, Default)]
pub struct CompactIndex {
    /// Sorted, unique oids; `len(base) % ENTRY_LEN == 0`.
    base: Vec<u8>,
    /// Live entries whose oid is not in `base`.
    overlay: BTreeMap<u64, u64>,
    /// Live entries in total.
    len: usize,
    /// `base` entries holding `TOMBSTONE`.
    removed: usize,
}

fn oid_at(base: &[u8], i: usize) -> u64 {
    let at = i * ENTRY_LEN;
    u64::from_be_bytes(base[at..at + 8].try_into().expect("8 bytes"))
}

fn raw_pos_at(base: &[u8], i: usize) -> [u8; 6] {
    let at = i * ENTRY_LEN + 8;
    base[at..at + 6].try_into().expect("6 bytes")
}

fn decode_pos(raw: [u8; 6]) -> Option<u64> {
    if raw == TOMBSTONE {
        return None;
    }
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&raw);
    Some(u64::from_be_bytes(b))
}

fn encode_pos(pos: u64) -> [u8; 6] {
    assert!(pos < MAX_POS, "position {pos} is beyond what the object index can hold ({MAX_POS})");
    pos.to_be_bytes()[2..].try_into().expect("6 bytes")
}

fn push_entry(base: &mut Vec<u8>, oid: u64, pos: u64) {
    base.extend_from_slice(&oid.to_be_bytes());
    base.extend_from_slice(&encode_pos(pos));
}

impl CompactIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a `base` array as laid out in memory (and in a `ZRSIDX02` snapshot). `None` unless it
    /// is whole entries with strictly rising oids and valid positions: a snapshot that passes its CRC
    /// but breaks these would make lookups wrong, so it costs a scan instead.
    pub fn from_base(mut base: Vec<u8>) -> Option<Self> {
        if !base.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let n = base.len() / ENTRY_LEN;
        let mut prev = None;
        for i in 0..n {
            let oid = oid_at(&base, i);
            if prev.is_some_and(|p| p >= oid) || raw_pos_at(&base, i) == TOMBSTONE {
                return None;
            }
            prev = Some(oid);
        }
        base.shrink_to_fit();
        Some(CompactIndex { base, overlay: BTreeMap::new(), len: n, removed: 0 })
    }

    /// Builds from entries sorted by strictly rising oid (the opening scan's output); `None` if they
    /// are not, or a position is out of range.
    pub fn from_sorted(entries: &[(u64, u64)]) -> Option<Self> {
        let mut base = Vec::with_capacity(entries.len() * ENTRY_LEN);
        for w in entries.windows(2) {
            if w[0].0 >= w[1].0 {
                return None;
            }
        }
        for &(oid, pos) in entries {
            if pos >= MAX_POS {
                return None;
            }
            push_entry(&mut base, oid, pos);
        }
        Some(CompactIndex { base, overlay: BTreeMap::new(), len: entries.len(), removed: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn base_len(&self) -> usize {
        self.base.len() / ENTRY_LEN
    }

    /// Binary search of `base` for `oid`: `Ok(slot)` or `Err(insertion point)`.
    fn find(&self, oid: u64) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.base_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match oid_at(&self.base, mid).cmp(&oid) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    pub fn get(&self, oid: u64) -> Option<u64> {
        match self.find(oid) {
            Ok(i) => decode_pos(raw_pos_at(&self.base, i)),
            Err(_) if self.overlay.is_empty() => None,
            Err(_) => self.overlay.get(&oid).copied(),
        }
    }

    /// Sets `oid`'s position and returns the previous one.
    ///
    /// # Panics
    /// If `pos >= MAX_POS` (`FileStorage` refuses to write past it, so this is a bug).
    pub fn insert(&mut self, oid: u64, pos: u64) -> Option<u64> {
        let raw = encode_pos(pos);
        match self.find(oid) {
            Ok(i) => {
                let at = i * ENTRY_LEN + 8;
                let old = decode_pos(raw_pos_at(&self.base, i));
                self.base[at..at + 6].copy_from_slice(&raw);
                if old.is_none() {
                    self.removed -= 1;
                    self.len += 1;
                }
                old
            }
            Err(i) if i == self.base_len() && self.overlay.last_key_value().is_none_or(|(&k, _)| k < oid) => {
                if self.base.capacity() - self.base.len() < ENTRY_LEN {
                    let more = (self.base_len() / GROWTH_FRACTION).max(1024) * ENTRY_LEN;
                    self.base.reserve_exact(more);
                }
                push_entry(&mut self.base, oid, pos);
                self.len += 1;
                None
            }
            Err(_) => {
                let old = self.overlay.insert(oid, pos);
                if old.is_none() {
                    self.len += 1;
                    self.merge_if_large();
                }
                old
            }
        }
    }

    /// Removes `oid` and returns its position. The engine itself never removes (an undone creation
    /// stays indexed, pointing at a record without data); this keeps the type a complete map, held
    /// to the `BTreeMap` model by the property test.
    #[cfg_attr(not(test), expect(dead_code, reason = "the engine never removes an oid; see above"))]
    pub fn remove(&mut self, oid: u64) -> Option<u64> {
        match self.find(oid) {
            Ok(i) => {
                let old = decode_pos(raw_pos_at(&self.base, i));
                if old.is_some() {
                    let at = i * ENTRY_LEN + 8;
                    self.base[at..at + 6].copy_from_slice(&TOMBSTONE);
                    self.removed += 1;
                    self.len -= 1;
                    self.merge_if_large();
                }
                old
            }
            Err(_) => {
                let old = self.overlay.remove(&oid);
                if old.is_some() {
                    self.len -= 1;
                }
                old
            }
        }
    }

    fn merge_if_large(&mut self) {
        if self.overlay.len() + self.removed > (self.len / MERGE_FRACTION).max(MIN_MERGE) {
            self.merge();
        }
    }

    /// Folds the overlay into `base` and drops tombstones, in one pass.
    fn merge(&mut self) {
        let mut base = Vec::with_capacity(self.len * ENTRY_LEN);
        for (oid, pos) in self.iter() {
            push_entry(&mut base, oid, pos);
        }
        self.base = base;
        self.overlay.clear();
        self.removed = 0;
    }

    /// Entries in oid order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_from(0)
    }

    /// Entries with oid `>= from`, in oid order.
    pub fn range_from(&self, from: u64) -> Iter<'_> {
        let start = self.find(from).unwrap_or_else(|i| i);
        Iter { base: &self.base, next: start, end: self.base_len(), overlay: self.overlay.range(from..).peekable() }
    }

    /// The largest indexed oid.
    pub fn last_oid(&self) -> Option<u64> {
        let in_base = (0..self.base_len()).rev().find(|&i| raw_pos_at(&self.base, i) != TOMBSTONE);
        let in_base = in_base.map(|i| oid_at(&self.base, i));
        let in_overlay = self.overlay.last_key_value().map(|(&k, _)| k);
        in_base.max(in_overlay)
    }

    /// Appends every live entry in `base` layout (what a `ZRSIDX02` snapshot holds): a copy of `base`
    /// when there is nothing to merge.
    pub fn write_entries(&self, out: &mut Vec<u8>) {
        out.reserve(self.len * ENTRY_LEN);
        if self.overlay.is_empty() && self.removed == 0 {
            out.extend_from_slice(&self.base);
        } else {
            for (oid, pos) in self.iter() {
                push_entry(out, oid, pos);
            }
        }
    }

    /// Heap bytes held (capacity, not length), for diagnostics and benchmarks. The overlay is
    /// estimated at 40 bytes per entry, what a `BTreeMap<u64, u64>` costs.
    pub fn heap_bytes(&self) -> usize {
        self.base.capacity() + self.overlay.len() * 40
    }
}

impl PartialEq for CompactIndex {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for CompactIndex {}

impl std::fmt::Debug for CompactIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Extend<(u64, u64)> for CompactIndex {
    fn extend<I: IntoIterator<Item = (u64, u64)>>(&mut self, iter: I) {
        for (oid, pos) in iter {
            self.insert(oid, pos);
        }
    }
}

impl FromIterator<(u64, u64)> for CompactIndex {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut index = CompactIndex::new();
        index.extend(iter);
        index
    }
}

/// Iterator over entries in oid order: `base` (skipping tombstones) merged with the overlay (whose
/// oids are never in `base`).
pub struct Iter<'a> {
    base: &'a [u8],
    next: usize,
    end: usize,
    overlay: std::iter::Peekable<btree_map::Range<'a, u64, u64>>,
}

impl Iterator for Iter<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        loop {
            let from_base = (self.next < self.end).then(|| oid_at(self.base, self.next));
            match (from_base, self.overlay.peek()) {
                (Some(b), Some(&(&o, &p))) if o < b => {
                    self.overlay.next();
                    return Some((o, p));
                }
                (Some(b), _) => {
                    let raw = raw_pos_at(self.base, self.next);
                    self.next += 1;
                    if let Some(p) = decode_pos(raw) {
                        return Some((b, p));
                    }
                }
                (None, _) => return self.overlay.next().map(|(&o, &p)| (o, p)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64),
        Get(u64),
        RangeFrom(u64),
    }

    /// Oids from a small space (so operations hit existing entries) with runs of rising ones (the
    /// append path) and scattered ones (the overlay), and positions up to the largest allowed.
    fn op() -> impl Strategy<Value = Op> {
        let oid = prop_oneof![0u64..3000, Just(u64::MAX), Just(0)];
        prop_oneof![
            6 => (oid.clone(), prop_oneof![0u64..1 << 20, Just(MAX_POS - 1)]).prop_map(|(o, p)| Op::Insert(o, p)),
            2 => oid.clone().prop_map(Op::Remove),
            2 => oid.clone().prop_map(Op::Get),
            1 => oid.prop_map(Op::RangeFrom),
        ]
    }

    fn check(ops: Vec<Op>, seed: Vec<(u64, u64)>) {
        let mut model: BTreeMap<u64, u64> = seed.iter().copied().collect();
        let mut sorted: Vec<(u64, u64)> = model.iter().map(|(&k, &v)| (k, v)).collect();
        sorted.dedup_by_key(|e| e.0);
        let mut index = CompactIndex::from_sorted(&sorted).expect("sorted");
        for op in ops {
            match op {
                Op::Insert(o, p) => assert_eq!(index.insert(o, p), model.insert(o, p)),
                Op::Remove(o) => assert_eq!(index.remove(o), model.remove(&o)),
                Op::Get(o) => assert_eq!(index.get(o), model.get(&o).copied()),
                Op::RangeFrom(o) => {
                    let got: Vec<_> = index.range_from(o).take(50).collect();
                    let want: Vec<_> = model.range(o..).take(50).map(|(&k, &v)| (k, v)).collect();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(index.len(), model.len());
        }
        assert!(index.iter().eq(model.iter().map(|(&k, &v)| (k, v))));
        assert_eq!(index.last_oid(), model.keys().next_back().copied());
        let mut bytes = Vec::new();
        index.write_entries(&mut bytes);
        assert_eq!(CompactIndex::from_base(bytes).expect("valid base"), index);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Random operation sequences give what a `BTreeMap` gives, from empty and from a loaded base.
        #[test]
        fn matches_a_btreemap(ops in proptest::collection::vec(op(), 0..600),
                              seed in proptest::collection::vec((0u64..3000, 0u64..1 << 40), 0..300)) {
            check(ops, seed);
        }
    }

    /// Enough out-of-order inserts and removals to merge several times.
    #[test]
    fn merges_keep_every_entry() {
        let mut index = CompactIndex::new();
        let mut model = BTreeMap::new();
        for i in 0..50_000u64 {
            let oid = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 100_000;
            assert_eq!(index.insert(oid, i), model.insert(oid, i));
            if i % 3 == 0 {
                let gone = (oid * 7) % 100_000;
                assert_eq!(index.remove(gone), model.remove(&gone));
            }
        }
        assert!(index.overlay.len() <= (index.len() / MERGE_FRACTION).max(MIN_MERGE));
        assert_eq!(index.len(), model.len());
        assert!(index.iter().eq(model.into_iter()));
    }

    #[test]
    fn rising_oids_stay_in_base_with_little_slack() {
        let mut index = CompactIndex::new();
        for oid in 0..200_000u64 {
            index.insert(oid, oid * 100);
        }
        assert!(index.overlay.is_empty());
        assert!(index.heap_bytes() <= 200_000 * 16, "{} bytes", index.heap_bytes());
    }

    #[test]
    fn from_base_rejects_unsorted_duplicates_and_tombstones() {
        let mut b = Vec::new();
        push_entry(&mut b, 2, 10);
        push_entry(&mut b, 1, 20);
        assert!(CompactIndex::from_base(b).is_none());
        let mut b = Vec::new();
        push_entry(&mut b, 1, 10);
        push_entry(&mut b, 1, 20);
        assert!(CompactIndex::from_base(b).is_none());
        let mut b = Vec::new();
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&TOMBSTONE);
        assert!(CompactIndex::from_base(b).is_none());
        assert!(CompactIndex::from_base(vec![0; 13]).is_none());
        assert!(CompactIndex::from_sorted(&[(1, MAX_POS)]).is_none());
    }

    #[test]
    #[should_panic(expected = "beyond what the object index can hold")]
    fn positions_past_the_limit_are_refused() {
        CompactIndex::new().insert(1, MAX_POS);
    }
}

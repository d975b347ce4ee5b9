//! The in-memory object index, oid → position of the current data record, in about 8 bytes per
//! object for ZODB's dense oids (a `BTreeMap<u64, u64>` costs about 40).
//!
//! Like ZODB's fsIndex, oids are split into a 48-bit prefix and a 16-bit suffix. `entries` is one
//! sorted flat array of 8-byte entries (suffix u16, position u48, big-endian); `dir` has one
//! 16-byte record per prefix (prefix u64, index of its first entry u64), so a block of up to 65536
//! consecutive oids costs 8 bytes each plus 16 for the block. Both arrays are laid out exactly as in
//! the `ZRSIDX02` snapshot, so loading a snapshot is two reads into them (see `snapshot`).
//! Big-endian fields sort as bytes the way they sort as numbers, and keep the file portable.
//!
//! Writes take three paths, cheapest first:
//! - an oid already indexed is updated in place (the common case: a new revision of an object);
//! - an oid above every indexed oid is appended (new objects: the allocator hands out rising oids);
//! - anything else (a transaction that allocated its oids before another that committed first, a
//!   pack copying records in tid order) goes to `overlay`, a small `BTreeMap` merged into the arrays
//!   in one pass when it passes `1/MERGE_FRACTION` of the index.
//!
//! A removed entry keeps its slot with the position `TOMBSTONE` until the next merge, so removals
//! never shift the arrays. Pack uses the same type for its oid-keyed maps.

use std::collections::BTreeMap;
use std::collections::btree_map;

/// Bytes per entry: a 2-byte oid suffix and a 6-byte position.
pub const ENTRY_LEN: usize = 8;
/// Bytes per directory record: the oid prefix (`oid >> 16`) and the index of its first entry.
pub const DIR_LEN: usize = 16;
/// Positions must be below this (2^48 - 1, 256 TiB); the value itself marks a removed entry.
/// FileStorage offsets are far below it; `FileStorage` refuses to grow a file past it.
pub const MAX_POS: u64 = (1 << 48) - 1;
const TOMBSTONE: [u8; 6] = [0xff; 6];
/// The overlay (plus tombstones) is merged when it passes this fraction of the index: large enough
/// that merging costs a bounded number of entry copies per out-of-order insert (about 32, amortized),
/// small enough that its ~40 bytes per entry add about one byte per object.
const MERGE_FRACTION: usize = 32;
/// ... but never below this many entries, so small indexes do not merge on every insert (tests use
/// a small one so that the property test's short sequences merge too).
const MIN_MERGE: usize = if cfg!(test) { 16 } else { 4096 };
/// Appends grow `entries` by an eighth (not by doubling) so unused capacity stays under 1 byte/object.
const GROWTH_FRACTION: usize = 8;

/// oid → position, ordered by oid. See the module comment for the layout.
#[derive(Clone, Default)]
pub struct CompactIndex {
    /// Per prefix, rising: prefix u64, first entry u64 (rising, each block non-empty).
    dir: Vec<u8>,
    /// Per oid, sorted by (prefix, suffix): suffix u16, position u48.
    entries: Vec<u8>,
    /// Live entries whose oid is not in `entries`.
    overlay: BTreeMap<u64, u64>,
    /// Live entries in total.
    len: usize,
    /// Entries holding `TOMBSTONE`.
    removed: usize,
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn decode_pos(raw: &[u8]) -> Option<u64> {
    if raw == TOMBSTONE {
        return None;
    }
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(raw);
    Some(u64::from_be_bytes(b))
}

fn encode_pos(pos: u64) -> [u8; 6] {
    assert!(pos < MAX_POS, "position {pos} is beyond what the object index can hold ({MAX_POS})");
    pos.to_be_bytes()[2..].try_into().expect("6 bytes")
}

/// A growing pair of arrays, for appends and merges.
#[derive(Default)]
struct Builder {
    dir: Vec<u8>,
    entries: Vec<u8>,
    last_prefix: Option<u64>,
}

impl Builder {
    fn with_capacity(n: usize) -> Self {
        Builder { entries: Vec::with_capacity(n * ENTRY_LEN), ..Default::default() }
    }

    /// Appends `oid` (greater than every oid so far).
    fn push(&mut self, oid: u64, raw_pos: &[u8; 6]) {
        let prefix = oid >> 16;
        if self.last_prefix != Some(prefix) {
            self.dir.extend_from_slice(&prefix.to_be_bytes());
            self.dir.extend_from_slice(&((self.entries.len() / ENTRY_LEN) as u64).to_be_bytes());
            self.last_prefix = Some(prefix);
        }
        self.entries.extend_from_slice(&(oid as u16).to_be_bytes());
        self.entries.extend_from_slice(raw_pos);
    }
}

impl CompactIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the two arrays as laid out in memory (and in a `ZRSIDX02` snapshot). `None` unless they
    /// are whole records, the directory's prefixes rise and its blocks are non-empty and cover the
    /// entries in order, suffixes rise within each block, and no position is a tombstone: a
    /// snapshot that passes its CRC but breaks these would make lookups wrong, so it costs a scan.
    #[cfg(test)]
    pub fn from_parts(dir: Vec<u8>, entries: Vec<u8>) -> Option<Self> {
        if !entries.len().is_multiple_of(ENTRY_LEN) {
            return None;
        }
        let mut check = EntryCheck::new(&dir, entries.len() / ENTRY_LEN)?;
        check.feed(&entries);
        check.finish()?;
        Some(Self::from_checked_parts(dir, entries))
    }

    /// Takes arrays that passed `EntryCheck` (the snapshot loader checks the entries chunk by chunk
    /// as it reads them, while they are in cache).
    pub fn from_checked_parts(mut dir: Vec<u8>, mut entries: Vec<u8>) -> Self {
        dir.shrink_to_fit();
        entries.shrink_to_fit();
        let len = entries.len() / ENTRY_LEN;
        CompactIndex { dir, entries, overlay: BTreeMap::new(), len, removed: 0 }
    }

    /// Builds from entries sorted by strictly rising oid (the opening scan's output); `None` if they
    /// are not, or a position is out of range.
    pub fn from_sorted(sorted: &[(u64, u64)]) -> Option<Self> {
        if sorted.windows(2).any(|w| w[0].0 >= w[1].0) || sorted.iter().any(|&(_, p)| p >= MAX_POS) {
            return None;
        }
        let mut b = Builder::with_capacity(sorted.len());
        for &(oid, pos) in sorted {
            b.push(oid, &encode_pos(pos));
        }
        Some(CompactIndex { dir: b.dir, entries: b.entries, overlay: BTreeMap::new(), len: sorted.len(), removed: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn blocks(&self) -> usize {
        self.dir.len() / DIR_LEN
    }

    fn entry_count(&self) -> usize {
        self.entries.len() / ENTRY_LEN
    }

    fn prefix_of(&self, block: usize) -> u64 {
        be_u64(&self.dir[block * DIR_LEN..][..8])
    }

    /// First entry of `block`, or the entry count past the last block.
    fn start_of(&self, block: usize) -> usize {
        if block < self.blocks() { be_u64(&self.dir[block * DIR_LEN + 8..][..8]) as usize } else { self.entry_count() }
    }

    fn suffix_at(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.entries[i * ENTRY_LEN], self.entries[i * ENTRY_LEN + 1]])
    }

    fn raw_pos_at(&self, i: usize) -> &[u8] {
        &self.entries[i * ENTRY_LEN + 2..][..6]
    }

    /// The entry for `oid`: `Ok(index)`, or `Err(index of the first entry above it)`.
    fn find(&self, oid: u64) -> Result<usize, usize> {
        let prefix = oid >> 16;
        let (mut lo, mut hi) = (0, self.blocks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.prefix_of(mid).cmp(&prefix) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let suffix = oid as u16;
                    let (mut lo, mut hi) = (self.start_of(mid), self.start_of(mid + 1));
                    while lo < hi {
                        let m = lo + (hi - lo) / 2;
                        match self.suffix_at(m).cmp(&suffix) {
                            std::cmp::Ordering::Less => lo = m + 1,
                            std::cmp::Ordering::Greater => hi = m,
                            std::cmp::Ordering::Equal => return Ok(m),
                        }
                    }
                    return Err(lo);
                }
            }
        }
        Err(self.start_of(lo))
    }

    pub fn get(&self, oid: u64) -> Option<u64> {
        match self.find(oid) {
            Ok(i) => decode_pos(self.raw_pos_at(i)),
            Err(_) if self.overlay.is_empty() => None,
            Err(_) => self.overlay.get(&oid).copied(),
        }
    }

    /// The largest oid in the arrays (tombstoned or not).
    fn last_array_oid(&self) -> Option<u64> {
        let n = self.entry_count();
        (n > 0).then(|| (self.prefix_of(self.blocks() - 1) << 16) | u64::from(self.suffix_at(n - 1)))
    }

    /// Sets `oid`'s position and returns the previous one.
    ///
    /// # Panics
    /// If `pos >= MAX_POS` (`FileStorage` refuses to write past it, so this is a bug).
    pub fn insert(&mut self, oid: u64, pos: u64) -> Option<u64> {
        let raw = encode_pos(pos);
        match self.find(oid) {
            Ok(i) => {
                let old = decode_pos(self.raw_pos_at(i));
                self.entries[i * ENTRY_LEN + 2..][..6].copy_from_slice(&raw);
                if old.is_none() {
                    self.removed -= 1;
                    self.len += 1;
                }
                old
            }
            Err(_)
                if self.last_array_oid().is_none_or(|l| l < oid)
                    && self.overlay.last_key_value().is_none_or(|(&k, _)| k < oid) =>
            {
                self.append(oid, &raw);
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

    fn append(&mut self, oid: u64, raw: &[u8; 6]) {
        if self.entries.capacity() - self.entries.len() < ENTRY_LEN {
            let more = (self.entry_count() / GROWTH_FRACTION).max(1024) * ENTRY_LEN;
            self.entries.reserve_exact(more);
        }
        let prefix = oid >> 16;
        if self.blocks() == 0 || self.prefix_of(self.blocks() - 1) != prefix {
            let start = self.entry_count() as u64;
            self.dir.extend_from_slice(&prefix.to_be_bytes());
            self.dir.extend_from_slice(&start.to_be_bytes());
        }
        self.entries.extend_from_slice(&(oid as u16).to_be_bytes());
        self.entries.extend_from_slice(raw);
    }

    /// Removes `oid` and returns its position. The object index never loses an oid (an undone
    /// creation stays indexed, pointing at a record without data); pack's map of current revisions
    /// does, for records without data.
    pub fn remove(&mut self, oid: u64) -> Option<u64> {
        match self.find(oid) {
            Ok(i) => {
                let old = decode_pos(self.raw_pos_at(i));
                if old.is_some() {
                    self.entries[i * ENTRY_LEN + 2..][..6].copy_from_slice(&TOMBSTONE);
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

    /// Folds the overlay into the arrays and drops tombstones, in one pass.
    fn merge(&mut self) {
        let mut b = Builder::with_capacity(self.len);
        for (oid, pos) in self.iter() {
            b.push(oid, &encode_pos(pos));
        }
        (self.dir, self.entries) = (b.dir, b.entries);
        self.overlay.clear();
        self.removed = 0;
    }

    /// Entries in oid order.
    pub fn iter(&self) -> Iter<'_> {
        self.range_from(0)
    }

    /// Entries with oid `>= from`, in oid order.
    pub fn range_from(&self, from: u64) -> Iter<'_> {
        let next = self.find(from).unwrap_or_else(|i| i);
        Iter { index: self, block: self.block_of(next), next, overlay: self.overlay.range(from..).peekable() }
    }

    /// The largest indexed oid.
    pub fn last_oid(&self) -> Option<u64> {
        let in_arrays = (0..self.entry_count()).rev().find(|&i| self.raw_pos_at(i) != TOMBSTONE);
        let in_arrays = in_arrays.map(|i| self.oid_at(i));
        let in_overlay = self.overlay.last_key_value().map(|(&k, _)| k);
        in_arrays.max(in_overlay)
    }

    /// The block holding entry `i` (`i` below the entry count): the last one starting at or before it.
    fn block_of(&self, i: usize) -> usize {
        let (mut lo, mut hi) = (0, self.blocks());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.start_of(mid) <= i { lo = mid + 1 } else { hi = mid }
        }
        lo.saturating_sub(1)
    }

    fn oid_at(&self, i: usize) -> u64 {
        (self.prefix_of(self.block_of(i)) << 16) | u64::from(self.suffix_at(i))
    }

    /// The directory and entry arrays of every live entry, as a `ZRSIDX02` snapshot holds them:
    /// borrowed when there is nothing to merge, else built.
    pub fn parts(&self) -> (std::borrow::Cow<'_, [u8]>, std::borrow::Cow<'_, [u8]>) {
        if self.overlay.is_empty() && self.removed == 0 {
            return (self.dir.as_slice().into(), self.entries.as_slice().into());
        }
        let mut b = Builder::with_capacity(self.len);
        for (oid, pos) in self.iter() {
            b.push(oid, &encode_pos(pos));
        }
        (b.dir.into(), b.entries.into())
    }

    /// Heap bytes held (capacity, not length), for diagnostics and benchmarks. The overlay is
    /// estimated at 40 bytes per entry, what a `BTreeMap<u64, u64>` costs.
    pub fn heap_bytes(&self) -> usize {
        self.dir.capacity() + self.entries.capacity() + self.overlay.len() * 40
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

/// Checks a directory and, fed in order and in whole entries, the entries it describes: what
/// `from_parts` requires. Fed in chunks, it lets a loader check each chunk while it is in cache.
pub struct EntryCheck {
    /// First entry of each block after the current one, in reverse (`pop` gives the next).
    starts: Vec<usize>,
    /// Entries fed so far, and how many there must be.
    fed: usize,
    count: usize,
    /// Suffix of the last entry fed (-1 at a block start).
    prev: i64,
    bad: bool,
}

impl EntryCheck {
    /// Checks the directory for `count` entries; `None` if it is malformed.
    pub fn new(dir: &[u8], count: usize) -> Option<Self> {
        if !dir.len().is_multiple_of(DIR_LEN) {
            return None;
        }
        let blocks = dir.len() / DIR_LEN;
        if (blocks == 0) != (count == 0) {
            return None;
        }
        let mut starts = Vec::with_capacity(blocks);
        let mut prev_prefix = None;
        for b in 0..blocks {
            let (prefix, start) = (be_u64(&dir[b * DIR_LEN..][..8]), be_u64(&dir[b * DIR_LEN + 8..][..8]));
            let start = usize::try_from(start).ok()?;
            let rises = starts.last().is_none_or(|&s| s < start);
            if prefix >> 48 != 0 || prev_prefix.is_some_and(|p| p >= prefix) || (b == 0) != (start == 0) || !rises {
                return None;
            }
            if start >= count {
                return None;
            }
            starts.push(start);
            prev_prefix = Some(prefix);
        }
        starts.reverse();
        Some(EntryCheck { starts, fed: 0, count, prev: -1, bad: false })
    }

    /// Checks the next entries (`chunk.len()` a multiple of `ENTRY_LEN`).
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if !chunk.len().is_multiple_of(ENTRY_LEN) || self.fed + chunk.len() / ENTRY_LEN > self.count {
            self.bad = true;
            return;
        }
        while !chunk.is_empty() {
            if self.starts.last() == Some(&self.fed) {
                self.starts.pop();
                self.prev = -1;
            }
            // Entries up to the next block's start: one u64 each, no early exit, so the loop stays
            // branch-free (this is the hot loop of a snapshot load).
            let run = self.starts.last().map_or(usize::MAX, |&s| s - self.fed).min(chunk.len() / ENTRY_LEN);
            let (now, rest) = chunk.split_at(run * ENTRY_LEN);
            let (mut prev, mut bad) = (self.prev, false);
            for e in now.chunks_exact(ENTRY_LEN) {
                let v = be_u64(e);
                let suffix = (v >> 48) as i64;
                bad |= (suffix <= prev) | (v & MAX_POS == MAX_POS);
                prev = suffix;
            }
            (self.prev, self.bad) = (prev, self.bad | bad);
            self.fed += run;
            chunk = rest;
        }
    }

    /// `Some` if every entry was fed and all were good.
    pub fn finish(self) -> Option<()> {
        (!self.bad && self.fed == self.count && self.starts.is_empty()).then_some(())
    }
}

/// Iterator over entries in oid order: the arrays (skipping tombstones) merged with the overlay
/// (whose oids are never in the arrays).
pub struct Iter<'a> {
    index: &'a CompactIndex,
    /// The block holding entry `next` (when there is one).
    block: usize,
    next: usize,
    overlay: std::iter::Peekable<btree_map::Range<'a, u64, u64>>,
}

impl Iterator for Iter<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let ix = self.index;
        loop {
            let from_arrays = (self.next < ix.entry_count()).then(|| {
                while ix.start_of(self.block + 1) <= self.next {
                    self.block += 1;
                }
                (ix.prefix_of(self.block) << 16) | u64::from(ix.suffix_at(self.next))
            });
            match (from_arrays, self.overlay.peek()) {
                (Some(a), Some(&(&o, &p))) if o < a => {
                    self.overlay.next();
                    return Some((o, p));
                }
                (Some(a), _) => {
                    let pos = decode_pos(ix.raw_pos_at(self.next));
                    self.next += 1;
                    if let Some(p) = pos {
                        return Some((a, p));
                    }
                }
                (None, _) => return self.overlay.next().map(|(&o, &p)| (o, p)),
            }
        }
    }
}

#[cfg(test)]
mod tests;

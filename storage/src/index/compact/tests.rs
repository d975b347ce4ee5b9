//! The compact index against a `BTreeMap` model, and its merge, growth and validation paths.

use super::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, u64),
    Remove(u64),
    Get(u64),
    RangeFrom(u64),
}

/// Oids from a small space (so operations hit existing entries) over a few prefixes (several
/// directory blocks) and the extremes, and positions up to the largest allowed.
fn op() -> impl Strategy<Value = Op> {
    let oid = prop_oneof![
        8 => (0u64..4, 0u64..400).prop_map(|(p, s)| (p << 16) | ((s * 163) % 65536)),
        1 => Just(u64::MAX),
        1 => Just(0),
    ];
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
    let (dir, entries) = index.parts();
    assert_eq!(CompactIndex::from_parts(dir.into_owned(), entries.into_owned()).expect("valid parts"), index);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Random operation sequences give what a `BTreeMap` gives, from empty and from a loaded base.
    #[test]
    fn matches_a_btreemap(ops in proptest::collection::vec(op(), 0..600),
                          seed in proptest::collection::vec((0u64..300_000, 0u64..1 << 40), 0..300)) {
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
    assert!(index.heap_bytes() <= 200_000 * 9, "{} bytes", index.heap_bytes());
}

fn parts_of(entries: &[(u64, u64)]) -> (Vec<u8>, Vec<u8>) {
    let mut b = Builder::default();
    for &(oid, pos) in entries {
        let raw = if pos == MAX_POS { TOMBSTONE } else { encode_pos(pos) };
        b.push(oid, &raw);
    }
    (b.dir, b.entries)
}

#[test]
fn from_parts_rejects_what_would_break_lookups() {
    let (dir, entries) = parts_of(&[(1, 10), (2, 20), (1 << 16, 30)]);
    assert!(CompactIndex::from_parts(dir.clone(), entries.clone()).is_some());
    // Suffixes out of order within a block, duplicates, a tombstone.
    for bad in [&[(2, 10), (1, 20)][..], &[(1, 10), (1, 20)], &[(1, MAX_POS)]] {
        let (d, e) = parts_of(bad);
        assert!(CompactIndex::from_parts(d, e).is_none(), "{bad:?}");
    }
    // Prefixes out of order, an empty block, a block past the end, torn records.
    let mut swapped = dir.clone();
    swapped[..8].copy_from_slice(&5u64.to_be_bytes());
    assert!(CompactIndex::from_parts(swapped, entries.clone()).is_none());
    let mut empty = dir.clone();
    empty[DIR_LEN + 8..].copy_from_slice(&0u64.to_be_bytes());
    assert!(CompactIndex::from_parts(empty, entries.clone()).is_none());
    let mut past = dir.clone();
    past[DIR_LEN + 8..].copy_from_slice(&3u64.to_be_bytes());
    assert!(CompactIndex::from_parts(past, entries.clone()).is_none());
    assert!(CompactIndex::from_parts(dir.clone(), entries[..entries.len() - 1].to_vec()).is_none());
    assert!(CompactIndex::from_parts(Vec::new(), entries).is_none());
    assert!(CompactIndex::from_sorted(&[(1, MAX_POS)]).is_none());
    assert!(CompactIndex::from_sorted(&[(2, 1), (1, 1)]).is_none());
}

#[test]
#[should_panic(expected = "beyond what the object index can hold")]
fn positions_past_the_limit_are_refused() {
    CompactIndex::new().insert(1, MAX_POS);
}

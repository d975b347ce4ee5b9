//! The mutation engine shared by the crate's fuzz tests (pickle decoding, framing and messages):
//! a deterministic RNG and byte-level mutations, parameterised by what makes inputs interesting;
//! and the byte edits the property tests (pickle, msgpack) apply to valid encodings.

use proptest::prelude::*;
use proptest::sample::Index;

/// xorshift64*: deterministic, dependency-free randomness.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// What one fuzzer's mutations favour.
pub(crate) struct Profile {
    /// Bytes worth inserting: opcodes, type bytes, boundary values.
    pub(crate) interesting: &'static [u8],
    /// Up to this many extra mutations per input (so 1..=this+1 in all).
    pub(crate) max_extra_rounds: usize,
    /// Replace the input by a few random bytes once in this many (None: never).
    pub(crate) random_input_one_in: Option<usize>,
    /// Boundary values written over 4-byte length fields.
    pub(crate) lengths: &'static [u32],
    /// Write them big-endian half the time too (framing and msgpack are big-endian, pickle little).
    pub(crate) both_byte_orders: bool,
}

/// Mutates `data` in place; `corpus` supplies chunks to splice in.
pub(crate) fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>], p: &Profile) {
    if let Some(one_in) = p.random_input_one_in
        && rng.below(one_in) == 0
    {
        let n = rng.below(64);
        data.clear();
        data.extend((0..n).map(|_| rng.next() as u8));
        return;
    }
    for _ in 0..=rng.below(p.max_extra_rounds) {
        let len = data.len();
        let i = rng.below(len.max(1));
        match rng.below(9) {
            0 if len > 0 => data[i] ^= 1 << rng.below(8),
            1 if len > 0 => data[i] = rng.next() as u8,
            2 if len > 0 => data[i] = p.interesting[rng.below(p.interesting.len())],
            3 => data.insert(i.min(len), p.interesting[rng.below(p.interesting.len())]),
            4 if len > 0 => {
                data.remove(i);
            }
            5 => data.truncate(i),
            6 if len > 0 => {
                let end = (i + 1 + rng.below(16)).min(len);
                let chunk = data[i..end].to_vec();
                let at = rng.below(len);
                data.splice(at..at, chunk);
            }
            7 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(32)).min(other.len());
                data.splice(i.min(len)..i.min(len), other[from..end].iter().copied());
            }
            8 if len >= 4 => {
                let n = p.lengths[rng.below(p.lengths.len())];
                let bytes = if p.both_byte_orders && rng.below(2) == 0 { n.to_be_bytes() } else { n.to_le_bytes() };
                let at = rng.below(len - 3);
                data[at..at + 4].copy_from_slice(&bytes);
            }
            _ => {}
        }
    }
}

/// One property-test edit: where (an index into the data), a byte, and which edit (0..4).
pub(crate) type Edit = (Index, u8, u8);

/// One to five edits, for `apply_edits`.
pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 1..6)
}

/// Applies `edits` to `data` in order: overwrite a byte, insert one, remove one, or truncate there;
/// stops once nothing is left.
pub(crate) fn apply_edits(data: &mut Vec<u8>, edits: Vec<Edit>) {
    for (index, byte, kind) in edits {
        if data.is_empty() {
            break;
        }
        let i = index.index(data.len());
        match kind {
            0 => data[i] = byte,
            1 => data.insert(i, byte),
            2 => {
                data.remove(i);
            }
            _ => data.truncate(i),
        }
    }
}

//! A bounded mutation fuzzer over the golden corpus: decode and reference scanning must never
//! panic, whatever bytes they get.
//!
//! Run longer with `ZEO_FUZZ_ITERS=5000000 cargo test -p zeo-proto --release fuzz -- --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::*;

/// Iterations when `ZEO_FUZZ_ITERS` is not set: a few seconds in a debug build.
const DEFAULT_ITERS: u64 = 30_000;

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Bytes that make mutations interesting: every opcode, and boundary values for lengths.
const INTERESTING: &[u8] = b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC\
    \x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\
    \x90\x91\x92\x93\x94\x95\x96\x97\x98\x00\x01\x7f\xff\n\\'\"";

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = data.len();
        let i = rng.below(len.max(1));
        match rng.below(9) {
            0 if len > 0 => data[i] ^= 1 << rng.below(8),
            1 if len > 0 => data[i] = rng.next() as u8,
            2 if len > 0 => data[i] = INTERESTING[rng.below(INTERESTING.len())],
            3 => data.insert(i.min(len), INTERESTING[rng.below(INTERESTING.len())]),
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
            _ if len >= 4 => {
                // Overwrite a 4-byte field with a boundary length.
                let n: u32 = [0, 1, 0xff, 0x100, 0x7fff_ffff, 0x8000_0000, u32::MAX][rng.below(7)];
                let at = rng.below(len - 3);
                data[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
}

/// Every entry point that takes untrusted bytes.
fn exercise(data: &[u8]) {
    let _ = decode(data, &DecodeOptions::wire());
    let records = DecodeOptions::records();
    let _ = decode(data, &records);
    let mut d = Decoder::new(data, &records);
    let _ = d.next_value().and_then(|_| d.next_value());
    let _ = crate::refs::references(data);
}

#[test]
fn fuzz_decoders_never_panic() {
    let iters: u64 = std::env::var("ZEO_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_ITERS);
    let mut corpus = corpus();
    corpus.extend(crate::refs::golden_data::RECORDS.iter().map(|(_, r, _)| h(r)));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = Instant::now();
    let mut executions = 0u64;
    for _ in 0..iters {
        let mut data = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut data, &corpus);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| exercise(&data))) {
            eprintln!("panic on input {}", to_hex(&data));
            resume_unwind(panic);
        }
        executions += 1;
    }
    eprintln!("fuzz: {executions} executions in {:.2?} ({} corpus entries)", start.elapsed(), corpus.len());
    assert!(executions > 0);
    assert_eq!(executions, iters);
}

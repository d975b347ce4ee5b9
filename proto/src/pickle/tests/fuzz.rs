//! A bounded mutation fuzzer over the golden corpus: decode and reference scanning must never
//! panic, whatever bytes they get.
//!
//! Run longer with `ZEO_FUZZ_ITERS=5000000 cargo test -p zeo-proto --release fuzz -- --nocapture`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::*;
use crate::fuzzing::{Profile, Rng, mutate};

/// Iterations when `ZEO_FUZZ_ITERS` is not set: a few seconds in a debug build.
const DEFAULT_ITERS: u64 = 30_000;

/// Bytes that make mutations interesting: every opcode, and boundary values for lengths.
const INTERESTING: &[u8] = b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC\
    \x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\
    \x90\x91\x92\x93\x94\x95\x96\x97\x98\x00\x01\x7f\xff\n\\'\"";

/// Pickle lengths are little-endian.
const PROFILE: Profile = Profile {
    interesting: INTERESTING,
    max_extra_rounds: 4,
    random_input_one_in: None,
    lengths: &[0, 1, 0xff, 0x100, 0x7fff_ffff, 0x8000_0000, u32::MAX],
    both_byte_orders: false,
};

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
        mutate(&mut rng, &mut data, &corpus, &PROFILE);
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

//! A bounded mutation fuzzer over framing and message decoding, both encodings: whatever the
//! bytes, nothing panics, and what decodes behaves.
//!
//! Run longer with
//! `ZEO_FUZZ_ITERS=5000000 cargo test -p zeo-proto --release wire_fuzz -- --nocapture`
//! (and `ZEO_FUZZ_SEED=<non-zero u64>` for another sequence of inputs).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

use super::golden_data::{ERROR_CASES, MESSAGE_CASES, MSGPACK_CASES, MSGPACK_DECODE_CASES, MSGPACK_REJECT_CASES};
use super::*;
use crate::frame::{FrameDecoder, encode_frame};
use crate::fuzzing::{Profile, Rng, mutate};
use crate::message::{self, Encoding, Message};
use crate::msgpack;
use crate::pickle::DecodeOptions;

/// Iterations when `ZEO_FUZZ_ITERS` is not set: a few seconds in a debug build.
const DEFAULT_ITERS: u64 = 30_000;

/// Bytes that make mutations interesting: msgpack type bytes, the pickle opcodes of messages,
/// and boundary values for lengths.
const INTERESTING: &[u8] = b"\x80\x03(tN\x88\x89KJM\x8a\x8b}]e)\x85\x86\x87XCBcR\x81b.\
    \x90\x91\x94\x9f\x80\x8f\xa0\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xcb\xcc\xcd\xce\xcf\
    \xd0\xd1\xd2\xd3\xd4\xd8\xd9\xda\xdb\xdc\xdd\xde\xdf\xe0\xff\x00\x01\x7f";

const PROFILE: Profile = Profile {
    interesting: INTERESTING,
    max_extra_rounds: 3,
    random_input_one_in: Some(16),
    lengths: &[0, 1, 0xff, 0x100, 0xffff, 0x1_0000, 0x7fff_ffff, 0x8000_0000, u32::MAX],
    both_byte_orders: true,
};

/// Decoding a message must never panic; one that decodes must re-encode without panicking,
/// and a msgpack one must re-encode successfully (everything msgpack decodes, it can carry).
/// Returns how many of the two decodings gave a message.
fn exercise_message(payload: &[u8]) -> u64 {
    let mut messages = 0;
    for enc in [Encoding::Pickle, Encoding::Msgpack] {
        if let Ok(msg) = message::decode(payload, enc) {
            messages += 1;
            let again = message::encode(&msg, enc);
            if enc == Encoding::Msgpack {
                assert!(again.is_ok(), "msgpack message does not re-encode: {msg:?}");
            }
            let _ = message::encode(&msg, Encoding::Msgpack);
        }
    }
    let _ = message::decode_with(payload, Encoding::Pickle, &DecodeOptions::records());
    if let Ok(v) = msgpack::decode(payload) {
        assert!(msgpack::encode(&v).is_ok(), "decoded msgpack does not re-encode");
        let _ = Message::from_value(v);
    }
    messages
}

/// The input as a message payload, and as a stream of frames (with a small and the default
/// limit), whose payloads are decoded as messages. Returns how many messages decoded.
fn exercise(data: &[u8]) -> u64 {
    let mut messages = exercise_message(data);
    for max in [1 << 10, crate::frame::DEFAULT_MAX_FRAME] {
        let mut dec = FrameDecoder::new(max);
        let mut buf = data.to_vec();
        let mut consumed = 0;
        while let Ok(Some(payload)) = dec.decode(&mut buf) {
            assert!(payload.len() <= max);
            consumed += 4 + payload.len();
            assert_eq!(buf.len(), data.len() - consumed);
            messages += exercise_message(&payload);
        }
    }
    messages
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (_, pickle_hex, _, msgpack_hex, _) in MESSAGE_CASES {
        out.push(h(pickle_hex));
        out.push(h(msgpack_hex));
    }
    for (_, _, pickle_hex, msgpack_hex) in ERROR_CASES {
        out.push(h(pickle_hex));
        out.push(h(msgpack_hex));
    }
    out.extend(MSGPACK_CASES.iter().filter_map(|(_, _, packed, _)| packed.bytes()));
    out.extend(MSGPACK_DECODE_CASES.iter().map(|(hex, _)| h(hex)));
    out.extend(MSGPACK_REJECT_CASES.iter().map(|(hex, _)| h(hex)).filter(|d| !d.is_empty()));
    // Framed streams of two or three messages.
    let messages = out.clone();
    for i in 0..messages.len() {
        let mut stream = Vec::new();
        for j in [i, (i * 7 + 3) % messages.len(), (i * 13 + 5) % messages.len()].into_iter().take(2 + i % 2) {
            encode_frame(&messages[j], &mut stream).expect("small");
        }
        out.push(stream);
    }
    out
}

#[test]
fn wire_fuzz_never_panics() {
    let iters: u64 = std::env::var("ZEO_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_ITERS);
    let corpus = corpus();
    // Any non-zero seed; ZEO_FUZZ_SEED explores other sequences.
    let seed = std::env::var("ZEO_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).filter(|&s| s != 0);
    let mut rng = Rng(seed.unwrap_or(0x2545_f491_4f6c_dd1d));
    let start = Instant::now();
    let mut executions = 0u64;
    let mut decoded = 0u64;
    for _ in 0..iters {
        let mut data = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &mut data, &corpus, &PROFILE);
        match catch_unwind(AssertUnwindSafe(|| exercise(&data))) {
            Ok(messages) => decoded += messages,
            Err(panic) => {
                eprintln!("panic on input {}", to_hex(&data));
                resume_unwind(panic);
            }
        }
        executions += 1;
    }
    eprintln!(
        "wire fuzz: {executions} executions in {:.2?} ({} corpus entries; {decoded} messages decoded from them)",
        start.elapsed(),
        corpus.len()
    );
    assert_eq!(executions, iters);
}

//! zeo-proto: the ZEO 5 wire codec, shared by the server and the Rust client.
//!
//! ZEO clients are unmodified Python processes, so everything here is defined by what the Python
//! side (zodbpickle, ZODB, persistent) produces and accepts, byte for byte. The crate does no I/O:
//! it turns bytes into values and back, and knows the few ZODB data formats that a storage server
//! has to look inside (persistent references for pack, transaction ids).
//!
//! # Layout
//!
//! - [`frame`]: the 4-byte big-endian length framing of the stream, with a size limit
//!   ([`frame::FrameDecoder`], [`frame::encode_frame`]).
//! - [`message`]: the ZEO 5 `(msgid, flag, name, args)` messages ([`message::Message`]) in
//!   both encodings ([`message::Encoding`]: `Z5` pickle, `M5` msgpack), and the hello frame.
//! - [`errors`]: the `(class_name, payload)` error replies for the exceptions clients rebuild
//!   (`ConflictError`, `POSKeyError`, `MultipleUndoErrors`, ...), shaped as ZEO's client expects.
//! - [`msgpack`]: msgpack over [`pickle::Value`], byte-identical to msgpack-python's
//!   `packb(use_bin_type=True)` / `unpackb(raw=False, use_list=False)`.
//! - [`pickle`]: the pickle codec. [`pickle::decode`] (and [`pickle::Decoder`] for the two
//!   pickles of a data record) reads protocols 0–5: untrusted input, resource limits, never
//!   panics. [`pickle::encode_wire`] writes exactly what ZEO's fast-mode protocol-3 pickler writes
//!   (the `Z5` message encoding); [`pickle::encode_memo`] writes what ZODB writes into `Data.fs`
//!   for the transaction extension (`pickle.dumps(x, 3)`).
//! - [`refs`]: [`refs::references`] lists the oids a ZODB data record points at, as ZODB's
//!   `referencesf` does; pack's garbage collection needs it. [`refs::references_best_effort`]
//!   also keeps what it found before a damaged spot.
//! - [`timestamp`]: [`timestamp::TimeStamp`], the 8-byte transaction id of `persistent`, including
//!   `laterThan`, which keeps tids strictly increasing.
//! - This file: the [`Oid`]/[`Tid`] aliases, [`Z64`], [`MAXTID`] and u64 conversions.
//!
//! Golden test vectors come from the real Python stack via `proto/testdata/gen_golden.py`
//! (pickle, refs, timestamp) and `proto/testdata/gen_wire_golden.py` (msgpack, messages, error
//! replies), which regenerate the `golden_data.rs` files.

pub mod errors;
pub mod frame;
pub mod message;
pub mod msgpack;
pub mod pickle;
pub mod refs;
pub mod timestamp;

#[cfg(test)]
mod fuzzing;
#[cfg(test)]
mod wire_tests;

/// An object id: 8 bytes, compared and allocated as a big-endian u64. [`Z64`] is the root object.
pub type Oid = [u8; 8];

/// A transaction id (serial): the raw bytes of a [`timestamp::TimeStamp`], ordered as big-endian
/// bytes. [`Z64`] means "none" (the serial of a new object, the last tid of an empty storage).
pub type Tid = [u8; 8];

/// Eight zero bytes: the root oid, and the "no tid" marker (ZODB's `z64`).
pub const Z64: [u8; 8] = [0; 8];

/// The largest tid (`7fff ffff ffff ffff`). Clients load the current revision as
/// `loadBefore(oid, MAXTID)`, so no real transaction may ever get this id.
pub const MAXTID: Tid = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Packs a u64 into 8 big-endian bytes (ZODB's `p64`); big-endian so that byte order and
/// numeric order agree, which is how oids and tids are compared everywhere.
pub const fn p64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads 8 big-endian bytes as a u64 (ZODB's `u64`).
pub const fn u64_of(id: [u8; 8]) -> u64 {
    u64::from_be_bytes(id)
}

/// Turns a slice into an oid/tid if it has exactly 8 bytes. Pickled ids arrive as byte strings
/// of any length; callers use this to reject the wrong ones without panicking.
pub fn id_from_slice(bytes: &[u8]) -> Option<[u8; 8]> {
    <[u8; 8]>::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_helpers_round_trip() {
        assert_eq!(p64(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(u64_of(MAXTID), i64::MAX as u64);
        assert_eq!(u64_of(p64(0x0102_0304_0506_0708)), 0x0102_0304_0506_0708);
        assert_eq!(id_from_slice(&[1; 8]), Some([1; 8]));
        assert_eq!(id_from_slice(&[1; 7]), None);
        assert_eq!(id_from_slice(&[1; 9]), None);
        assert_eq!(u64_of(Z64), 0);
    }
}

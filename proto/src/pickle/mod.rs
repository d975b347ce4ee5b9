//! The pickle codec: exactly the pickles ZEO and ZODB exchange, and safe on hostile input.
//!
//! - [`decode`] and [`Decoder`] read protocols 0–5 (all opcodes except protocol 5's out-of-band
//!   buffers) into a [`Value`]. Objects are never constructed: a class stays a
//!   [`Value::Global`] and a call stays a [`Value::Object`]. [`DecodeOptions`] picks the global
//!   allowlist of the reference ZEO server or none, and caps what a hostile pickle can make us
//!   allocate.
//! - [`encode_wire`] writes what ZEO's `Pickler(f, 3)` with `fast = 1` writes: the `Z5` message
//!   encoding. Clients decode it with zodbpickle, which refuses protocols above 3.
//! - [`encode_memo`] writes what `pickle.dumps(v, 3)` writes (memo opcodes included): the
//!   transaction extension in `Data.fs`.
//! - [`Graph`] holds decoded pickles as the objects Python's unpickler builds, identity
//!   included, and [`encode_graph`] writes such objects back as Python's pickler does (memo by
//!   identity): what rewriting a data record byte for byte needs (conflict resolution).
//!
//! Internally, decoding runs a stack machine (`machine.rs`, `ops.rs`) into an arena of nodes
//! (`arena.rs`), which is then turned into a tree (`convert.rs`); the reference scanner in
//! [`crate::refs`] works on the arena directly.

pub(crate) mod arena;
mod convert;
mod decode;
mod encode;
mod error;
mod graph;
mod graph_encode;
pub(crate) mod machine;
mod opcodes;
mod ops;
mod text;
mod value;

#[cfg(test)]
pub(crate) mod tests;

pub use decode::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, DEFAULT_MAX_MEMO, DecodeOptions, Decoder, GlobalPolicy,
    WIRE_SAFE_MODULES, decode,
};
pub use encode::{encode_memo, encode_wire};
pub use error::{Limit, PickleError};
pub use graph::{Graph, Obj, ObjId};
pub use graph_encode::encode_graph;
pub use value::Value;

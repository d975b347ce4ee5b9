//! The msgpack codec of the `M5` message encoding, over [`Value`].
//!
//! ZEO encodes messages with msgpack-python's `packb(msg, use_bin_type=True)` and decodes them
//! with `unpackb(data, raw=False, use_list=False)` (`ZEO/asyncio/marshal.py`). This module does
//! exactly the same, byte for byte:
//!
//! - [`encode`] picks the smallest encoding for each value as msgpack-python does: `bytes` become
//!   **bin**, `str` becomes **str** (with `str8` allowed, as `use_bin_type=True` implies),
//!   tuples and lists become arrays, dicts maps, and `None`, bools, ints up to `u64::MAX` and
//!   floats (always float64) their native types. Values with no msgpack form (sets, globals,
//!   objects, persistent ids, ints beyond 64 bits) are an error, as they are in Python.
//! - [`decode`] reads untrusted input: it never panics, checks every length against the input
//!   left before allocating, and caps nesting and the number of values. Arrays come back as
//!   [`Value::Tuple`] (`use_list=False`), so a `(oid, tid)` msgid stays a tuple and echoes back
//!   as one. Like Python with `strict_map_key=True` (the default of msgpack ≥ 1.0, which ZEO
//!   uses), map keys must be `str` or `bytes`; extension types, the reserved byte `0xc1` and
//!   trailing bytes are errors.

use crate::pickle::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITEMS, Value};

/// Nesting msgpack-python's packer and unpacker accept: 1,024 containers around a scalar. The
/// encoder stops there too, so anything we write a Python peer can read, and deep values fail
/// cleanly instead of overflowing the stack.
pub const ENCODE_MAX_DEPTH: usize = 1025;

/// At most this many elements are reserved up front for an array or map; larger ones grow as
/// their elements are actually read, so a lying header costs nothing.
const PREALLOC_LIMIT: usize = 1024;

/// Why a value could not be encoded or bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MsgpackError {
    /// The value has no msgpack form (Python: `TypeError: can not serialize ...`).
    #[error("a {type_name} value cannot be encoded as msgpack")]
    Unsupported {
        /// [`Value::type_name`] of the offending value.
        type_name: &'static str,
    },
    /// An int outside `i64::MIN..=u64::MAX` (Python: `OverflowError`).
    #[error("integer out of the msgpack range")]
    IntOutOfRange,
    /// A str, bytes, array or map with 2^32 or more elements or bytes.
    #[error("{what} of length {len} is too long for msgpack")]
    TooLong {
        /// `"str"`, `"bytes"`, `"array"` or `"map"`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The value nests deeper than [`ENCODE_MAX_DEPTH`].
    #[error("value nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// The input ended inside a value.
    #[error("msgpack truncated: value at offset {offset} needs more bytes")]
    Truncated {
        /// Offset of the type byte of the incomplete value.
        offset: usize,
    },
    /// The byte `0xc1`, which msgpack reserves and never uses.
    #[error("reserved msgpack byte 0xc1 at offset {offset}")]
    Reserved {
        /// Where it was found.
        offset: usize,
    },
    /// An extension type: ZEO never sends them, and nothing we could return would be useful.
    #[error("msgpack extension type {code} at offset {offset} is not supported")]
    Extension {
        /// The extension type code.
        code: i8,
        /// Offset of the type byte.
        offset: usize,
    },
    /// A str that is not UTF-8 (Python, with `raw=False`: `UnicodeDecodeError`).
    #[error("invalid UTF-8 in str at offset {offset}")]
    InvalidUtf8 {
        /// Offset of the str's type byte.
        offset: usize,
    },
    /// A map key other than str or bytes, which Python's `strict_map_key=True` refuses.
    #[error("{found} map key at offset {offset} (only str and bytes keys are allowed)")]
    BadMapKey {
        /// [`Value::type_name`] of the key.
        found: &'static str,
        /// Offset of the key.
        offset: usize,
    },
    /// Bytes after the first complete value (Python: `ExtraData`).
    #[error("extra bytes after the msgpack value, from offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
    },
    /// [`MsgpackOptions::max_depth`] or [`MsgpackOptions::max_items`] was exceeded.
    #[error("msgpack {limit} limit of {max} exceeded at offset {offset}")]
    LimitExceeded {
        /// `"nesting depth"` or `"item count"`.
        limit: &'static str,
        /// The configured limit.
        max: usize,
        /// Offset of the value that went over it.
        offset: usize,
    },
}

/// Limits and strictness for [`decode_with`].
///
/// Lengths need no limit of their own: each is checked against the input left (every element
/// takes at least one byte), so the input size bounds them. The limits bound what the caller
/// will later walk recursively, and the memory a flood of tiny values could take (a
/// [`Value`] is far bigger than the one byte that encodes `nil`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsgpackOptions {
    /// Maximum nesting (a scalar at the top is depth 1). Python allows 1,025; the default,
    /// [`DEFAULT_MAX_DEPTH`], is the pickle decoder's, far above anything ZEO sends. Decoding
    /// itself uses no stack per level, but dropping or walking a [`Value`] is recursive, so
    /// keep this moderate.
    pub max_depth: usize,
    /// Maximum number of values decoded, counting every scalar and container.
    pub max_items: usize,
    /// Refuse map keys other than str and bytes, as ZEO's `unpackb` does (its default
    /// `strict_map_key=True`). A server that accepted them would accept messages that the
    /// reference server refuses.
    pub strict_map_key: bool,
}

impl Default for MsgpackOptions {
    fn default() -> Self {
        MsgpackOptions { max_depth: DEFAULT_MAX_DEPTH, max_items: DEFAULT_MAX_ITEMS, strict_map_key: true }
    }
}

/// Encodes `value` as `msgpack.packb(value, use_bin_type=True)` does.
///
/// # Errors
///
/// [`MsgpackError::Unsupported`] for sets, globals, objects and persistent ids,
/// [`MsgpackError::IntOutOfRange`], [`MsgpackError::TooLong`], [`MsgpackError::TooDeep`].
pub fn encode(value: &Value) -> Result<Vec<u8>, MsgpackError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the encoding of `value` to `out`. On error, `out` may hold a partial encoding.
///
/// # Errors
///
/// As [`encode`].
pub fn encode_into(value: &Value, out: &mut Vec<u8>) -> Result<(), MsgpackError> {
    // Iterative, so that nesting up to the limit cannot overflow the stack: the values still
    // to write, last first, each with its depth (the top value is depth 1).
    let mut pending: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        if depth > ENCODE_MAX_DEPTH {
            return Err(MsgpackError::TooDeep { max: ENCODE_MAX_DEPTH });
        }
        match value {
            Value::Tuple(items) | Value::List(items) => {
                container_header(items.len(), [0x90, 0xdc, 0xdd], "array", out)?;
                pending.extend(items.iter().rev().map(|item| (item, depth + 1)));
            }
            Value::Dict(pairs) => {
                container_header(pairs.len(), [0x80, 0xde, 0xdf], "map", out)?;
                for (k, v) in pairs.iter().rev() {
                    pending.push((v, depth + 1));
                    pending.push((k, depth + 1));
                }
            }
            scalar => pack_scalar(scalar, out)?,
        }
    }
    Ok(())
}

/// Decodes one msgpack value that must fill `data` exactly, with [`MsgpackOptions::default`].
///
/// # Errors
///
/// Any decoding [`MsgpackError`]. Never panics, whatever the input.
pub fn decode(data: &[u8]) -> Result<Value, MsgpackError> {
    decode_with(data, &MsgpackOptions::default())
}

/// Decodes one msgpack value that must fill `data` exactly.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_with(data: &[u8], opts: &MsgpackOptions) -> Result<Value, MsgpackError> {
    let mut reader = Reader { data, pos: 0, items: 0, opts };
    let value = reader.value()?;
    if reader.pos < data.len() {
        return Err(MsgpackError::TrailingBytes { offset: reader.pos });
    }
    Ok(value)
}

// ----- encoding -----

/// Writes a value that is not a tuple, list or dict.
fn pack_scalar(value: &Value, out: &mut Vec<u8>) -> Result<(), MsgpackError> {
    match value {
        Value::None => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => pack_int(*i, out),
        Value::BigInt(_) => {
            // Canonical BigInts are outside the i64 range; only 2^63..2^64 fits (as uint64).
            if let Some(i) = value.as_int() {
                pack_int(i, out);
            } else {
                let n = value.as_u64().ok_or(MsgpackError::IntOutOfRange)?;
                out.push(0xcf);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            let len = b.len();
            if let Ok(n) = u8::try_from(len) {
                out.extend_from_slice(&[0xc4, n]);
            } else if let Ok(n) = u16::try_from(len) {
                out.push(0xc5);
                out.extend_from_slice(&n.to_be_bytes());
            } else {
                let n = u32::try_from(len).map_err(|_| MsgpackError::TooLong { what: "bytes", len })?;
                out.push(0xc6);
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.extend_from_slice(b);
        }
        Value::Str(s) => {
            let len = s.len();
            if len < 32 {
                out.push(0xa0 | len as u8);
            } else if let Ok(n) = u8::try_from(len) {
                out.extend_from_slice(&[0xd9, n]);
            } else if let Ok(n) = u16::try_from(len) {
                out.push(0xda);
                out.extend_from_slice(&n.to_be_bytes());
            } else {
                let n = u32::try_from(len).map_err(|_| MsgpackError::TooLong { what: "str", len })?;
                out.push(0xdb);
                out.extend_from_slice(&n.to_be_bytes());
            }
            out.extend_from_slice(s.as_bytes());
        }
        Value::Tuple(_)
        | Value::List(_)
        | Value::Dict(_)
        | Value::Set(_)
        | Value::FrozenSet(_)
        | Value::Global { .. }
        | Value::Object { .. }
        | Value::PersistentId(_) => {
            return Err(MsgpackError::Unsupported { type_name: value.type_name() });
        }
    }
    Ok(())
}

/// Writes an array or map header: `fix | len` below 16, then the 16- and 32-bit forms.
fn container_header(
    len: usize,
    [fix, b16, b32]: [u8; 3],
    what: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), MsgpackError> {
    if len < 16 {
        out.push(fix | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(b16);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        let n = u32::try_from(len).map_err(|_| MsgpackError::TooLong { what, len })?;
        out.push(b32);
        out.extend_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

/// msgpack-python's `msgpack_pack_long_long`: non-negative ints always use the unsigned
/// forms, negative ones the smallest signed form.
fn pack_int(i: i64, out: &mut Vec<u8>) {
    if i >= 0 {
        let n = i as u64;
        if n < 0x80 {
            out.push(n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            out.extend_from_slice(&[0xcc, n]);
        } else if let Ok(n) = u16::try_from(n) {
            out.push(0xcd);
            out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            out.push(0xce);
            out.extend_from_slice(&n.to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    } else if i >= -32 {
        out.push(i as u8); // negative fixint: the two's-complement byte, 0xe0..=0xff
    } else if let Ok(n) = i8::try_from(i) {
        out.push(0xd0);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i16::try_from(i) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(i) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

// ----- decoding -----

/// A container whose elements are still being read.
enum Open {
    Seq {
        items: Vec<Value>,
        left: usize,
        start: usize,
    },
    Map {
        pairs: Vec<(Value, Value)>,
        /// The key read, waiting for its value.
        key: Option<Value>,
        left: usize,
        start: usize,
    },
}

/// What the next type byte starts.
enum Item {
    Done(Value),
    Open(Open),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Values decoded so far, against [`MsgpackOptions::max_items`].
    items: usize,
    opts: &'a MsgpackOptions,
}

impl<'a> Reader<'a> {
    /// Reads one value. Iterative, with the open containers on the heap, so hostile nesting
    /// can only hit the depth limit, never the stack.
    fn value(&mut self) -> Result<Value, MsgpackError> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            let start = self.pos;
            let (mut value, mut value_start) = match self.item(open.len() + 1)? {
                Item::Done(v) => (v, start),
                Item::Open(container) => {
                    open.push(container);
                    continue;
                }
            };
            // Hand the value to its container; a container that is now full becomes the value
            // handed to the one around it.
            loop {
                match open.last_mut() {
                    None => return Ok(value),
                    Some(Open::Seq { items, left, .. }) => {
                        items.push(value);
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                    }
                    Some(Open::Map { pairs, key, left, .. }) => match key.take() {
                        None => {
                            if self.opts.strict_map_key && !matches!(value, Value::Str(_) | Value::Bytes(_)) {
                                return Err(MsgpackError::BadMapKey { found: value.type_name(), offset: value_start });
                            }
                            *key = Some(value);
                            break;
                        }
                        Some(k) => {
                            pairs.push((k, value));
                            *left -= 1;
                            if *left > 0 {
                                break;
                            }
                        }
                    },
                }
                (value, value_start) = match open.pop() {
                    Some(Open::Seq { items, start, .. }) => (Value::Tuple(items), start),
                    Some(Open::Map { pairs, start, .. }) => (Value::Dict(pairs), start),
                    // Cannot happen (last_mut() just found a container); an error, not a panic.
                    None => return Err(MsgpackError::Truncated { offset: start }),
                };
            }
        }
    }

    /// Takes `n` bytes, or reports the value starting at `start` as truncated.
    fn take(&mut self, n: usize, start: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self.pos.checked_add(n).ok_or(MsgpackError::Truncated { offset: start })?;
        let bytes = self.data.get(self.pos..end).ok_or(MsgpackError::Truncated { offset: start })?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, start: usize) -> Result<[u8; N], MsgpackError> {
        let bytes = self.take(N, start)?;
        <[u8; N]>::try_from(bytes).map_err(|_| MsgpackError::Truncated { offset: start })
    }

    /// Reads a big-endian length of `width` bytes (1, 2 or 4).
    fn len(&mut self, width: usize, start: usize) -> Result<usize, MsgpackError> {
        let n = match width {
            1 => u32::from(u8::from_be_bytes(self.array(start)?)),
            2 => u32::from(u16::from_be_bytes(self.array(start)?)),
            _ => u32::from_be_bytes(self.array(start)?),
        };
        // u32 fits usize on every target we build for; saturating keeps it a length error.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// Reads the type byte (and for scalars, the whole value) of an item at `depth`.
    fn item(&mut self, depth: usize) -> Result<Item, MsgpackError> {
        let start = self.pos;
        if depth > self.opts.max_depth {
            return Err(MsgpackError::LimitExceeded {
                limit: "nesting depth",
                max: self.opts.max_depth,
                offset: start,
            });
        }
        self.items += 1;
        if self.items > self.opts.max_items {
            return Err(MsgpackError::LimitExceeded { limit: "item count", max: self.opts.max_items, offset: start });
        }
        let [tag] = self.array::<1>(start)?;
        Ok(Item::Done(match tag {
            0x00..=0x7f => Value::Int(i64::from(tag)),
            0x80..=0x8f => return self.map(usize::from(tag & 0x0f), start),
            0x90..=0x9f => return self.seq(usize::from(tag & 0x0f), start),
            0xa0..=0xbf => self.str(usize::from(tag & 0x1f), start)?,
            0xc0 => Value::None,
            0xc1 => return Err(MsgpackError::Reserved { offset: start }),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let len = self.len(1 << (tag - 0xc4), start)?;
                Value::Bytes(self.take(len, start)?.to_vec())
            }
            0xc7..=0xc9 => {
                let len = self.len(1 << (tag - 0xc7), start)?;
                let [code] = self.array::<1>(start)?;
                self.take(len, start)?;
                return Err(MsgpackError::Extension { code: code as i8, offset: start });
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.array(start)?))),
            0xcb => Value::Float(f64::from_be_bytes(self.array(start)?)),
            0xcc => Value::Int(i64::from(u8::from_be_bytes(self.array(start)?))),
            0xcd => Value::Int(i64::from(u16::from_be_bytes(self.array(start)?))),
            0xce => Value::Int(i64::from(u32::from_be_bytes(self.array(start)?))),
            0xcf => Value::from(u64::from_be_bytes(self.array(start)?)),
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.array(start)?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.array(start)?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.array(start)?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.array(start)?)),
            0xd4..=0xd8 => {
                let [code] = self.array::<1>(start)?;
                self.take(1 << (tag - 0xd4), start)?;
                return Err(MsgpackError::Extension { code: code as i8, offset: start });
            }
            0xd9..=0xdb => {
                let len = self.len(1 << (tag - 0xd9), start)?;
                self.str(len, start)?
            }
            0xdc | 0xdd => {
                let len = self.len(if tag == 0xdc { 2 } else { 4 }, start)?;
                return self.seq(len, start);
            }
            0xde | 0xdf => {
                let len = self.len(if tag == 0xde { 2 } else { 4 }, start)?;
                return self.map(len, start);
            }
            0xe0..=0xff => Value::Int(i64::from(tag as i8)),
        }))
    }

    fn str(&mut self, len: usize, start: usize) -> Result<Value, MsgpackError> {
        let bytes = self.take(len, start)?;
        let text = std::str::from_utf8(bytes).map_err(|_| MsgpackError::InvalidUtf8 { offset: start })?;
        Ok(Value::Str(text.to_owned()))
    }

    fn seq(&mut self, len: usize, start: usize) -> Result<Item, MsgpackError> {
        // Every element takes at least one byte: a longer header is a truncated input.
        if len > self.remaining() {
            return Err(MsgpackError::Truncated { offset: start });
        }
        if len == 0 {
            return Ok(Item::Done(Value::Tuple(Vec::new())));
        }
        Ok(Item::Open(Open::Seq { items: Vec::with_capacity(len.min(PREALLOC_LIMIT)), left: len, start }))
    }

    fn map(&mut self, len: usize, start: usize) -> Result<Item, MsgpackError> {
        if len > self.remaining() / 2 {
            return Err(MsgpackError::Truncated { offset: start });
        }
        if len == 0 {
            return Ok(Item::Done(Value::Dict(Vec::new())));
        }
        let pairs = Vec::with_capacity(len.min(PREALLOC_LIMIT));
        Ok(Item::Open(Open::Map { pairs, key: None, left: len, start }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzzing::{apply_edits, edits};
    use crate::wire_tests::{h, same, to_hex};

    fn enc(v: &Value) -> String {
        to_hex(&encode(v).expect("encodable"))
    }

    #[test]
    fn spec_vectors() {
        // Section 2.3: the register call, and 2.5: the msgpack heartbeat.
        let register = Value::Tuple(vec![
            Value::Int(1),
            Value::Bool(false),
            "register".into(),
            Value::Tuple(vec!["1".into(), Value::Bool(false)]),
        ]);
        let hex = format!("9401c2a8{}92a131c2", to_hex(b"register"));
        assert_eq!(enc(&register), hex);
        assert_eq!(decode(&h(&hex)), Ok(register));
        let heartbeat = Value::Tuple(vec![Value::Int(-1), Value::Int(0), ".reply".into(), Value::None]);
        assert_eq!(enc(&heartbeat), "94ff00a62e7265706c79c0");
        assert_eq!(decode(&h("94ff00a62e7265706c79c0")), Ok(heartbeat));
    }

    #[test]
    fn int_boundaries() {
        let cases: &[(i64, &str)] = &[
            (0, "00"),
            (127, "7f"),
            (128, "cc80"),
            (255, "ccff"),
            (256, "cd0100"),
            (65535, "cdffff"),
            (65536, "ce00010000"),
            (u32::MAX as i64, "ceffffffff"),
            (1 << 32, "cf0000000100000000"),
            (i64::MAX, "cf7fffffffffffffff"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-128, "d080"),
            (-129, "d1ff7f"),
            (-32768, "d18000"),
            (-32769, "d2ffff7fff"),
            (i32::MIN as i64, "d280000000"),
            (i32::MIN as i64 - 1, "d3ffffffff7fffffff"),
            (i64::MIN, "d38000000000000000"),
        ];
        for &(i, hex) in cases {
            assert_eq!(enc(&Value::Int(i)), hex, "{i}");
            assert_eq!(decode(&h(hex)), Ok(Value::Int(i)), "{i}");
        }
        assert_eq!(enc(&Value::from(u64::MAX)), "cfffffffffffffffff");
        assert_eq!(decode(&h("cfffffffffffffffff")), Ok(Value::from(u64::MAX)));
        assert_eq!(enc(&Value::from(1u64 << 63)), "cf8000000000000000");
        // Non-canonical BigInts that fit are still written in the smallest form.
        assert_eq!(enc(&Value::BigInt(vec![5, 0, 0])), "05");
        assert_eq!(encode(&Value::int_from_le_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 1])), Err(MsgpackError::IntOutOfRange));
        let below_min = Value::int_from_le_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]);
        assert_eq!(encode(&below_min), Err(MsgpackError::IntOutOfRange));
    }

    #[test]
    fn lengths_pick_the_smallest_form() {
        assert_eq!(&enc(&Value::Str("a".repeat(31)))[..2], "bf");
        assert_eq!(&enc(&Value::Str("a".repeat(32)))[..4], "d920");
        assert_eq!(&enc(&Value::Str("a".repeat(255)))[..4], "d9ff");
        assert_eq!(&enc(&Value::Str("a".repeat(256)))[..6], "da0100");
        assert_eq!(&enc(&Value::Str("a".repeat(65536)))[..10], "db00010000");
        assert_eq!(&enc(&Value::Bytes(vec![]))[..], "c400");
        assert_eq!(&enc(&Value::Bytes(vec![1; 256]))[..6], "c50100");
        assert_eq!(&enc(&Value::Bytes(vec![1; 65536]))[..10], "c600010000");
        assert_eq!(&enc(&Value::List(vec![Value::None; 15]))[..2], "9f");
        assert_eq!(&enc(&Value::List(vec![Value::None; 16]))[..6], "dc0010");
        assert_eq!(&enc(&Value::Tuple(vec![Value::None; 65536]))[..10], "dd00010000");
        let dict = |n: usize| Value::Dict((0..n).map(|i| (Value::Str(i.to_string()), Value::None)).collect());
        assert_eq!(&enc(&dict(15))[..2], "8f");
        assert_eq!(&enc(&dict(16))[..6], "de0010");
        assert_eq!(&enc(&dict(65536))[..10], "df00010000");
    }

    #[test]
    fn unsupported_values_are_errors() {
        for v in [
            Value::Set(vec![]),
            Value::FrozenSet(vec![]),
            Value::global("builtins", "set"),
            Value::object(Value::global("a", "b"), Value::Tuple(vec![]), None),
            Value::PersistentId(Box::new(Value::None)),
        ] {
            let nested = Value::Tuple(vec![Value::Int(1), Value::Dict(vec![("k".into(), v.clone())])]);
            assert_eq!(encode(&nested), Err(MsgpackError::Unsupported { type_name: v.type_name() }));
        }
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(Value::None, |v, _| Value::List(vec![v]))
    }

    #[test]
    fn encode_depth_matches_python() {
        // msgpack-python packs 1,024 nested lists around None, and refuses 1,025.
        assert!(encode(&nested(ENCODE_MAX_DEPTH - 1)).is_ok());
        assert_eq!(encode(&nested(ENCODE_MAX_DEPTH)), Err(MsgpackError::TooDeep { max: ENCODE_MAX_DEPTH }));
    }

    #[test]
    fn decode_limits() {
        let deep = |n: usize| [vec![0x91; n], vec![0xc0]].concat();
        assert!(decode(&deep(DEFAULT_MAX_DEPTH - 1)).is_ok());
        assert!(matches!(
            decode(&deep(DEFAULT_MAX_DEPTH)),
            Err(MsgpackError::LimitExceeded { limit: "nesting depth", .. })
        ));
        let python_depth = MsgpackOptions { max_depth: ENCODE_MAX_DEPTH, ..MsgpackOptions::default() };
        assert!(decode_with(&deep(1024), &python_depth).is_ok());
        assert!(decode_with(&deep(1025), &python_depth).is_err());
        let few = MsgpackOptions { max_items: 3, ..MsgpackOptions::default() };
        assert!(decode_with(&h("92c0c0"), &few).is_ok());
        assert_eq!(
            decode_with(&h("93c0c0c0"), &few),
            Err(MsgpackError::LimitExceeded { limit: "item count", max: 3, offset: 3 })
        );
    }

    #[test]
    fn hostile_headers_fail_before_allocating() {
        // Claims of 4 G elements or bytes with a handful of bytes behind them.
        for hex in ["ddffffffff", "dfffffffff", "dbffffffff61", "c6ffffffff", "c9ffffffff01", "dc0002c0"] {
            assert!(matches!(decode(&h(hex)), Err(MsgpackError::Truncated { offset: 0 })), "{hex}");
        }
        // A map of 2 pairs needs at least 4 more bytes; with enough, the missing value is
        // reported where it should start.
        assert_eq!(decode(&h("82a161c0")), Err(MsgpackError::Truncated { offset: 0 }));
        assert_eq!(decode(&h("82a161c0a162")), Err(MsgpackError::Truncated { offset: 6 }));
    }

    #[test]
    fn decode_errors() {
        assert_eq!(decode(&[]), Err(MsgpackError::Truncated { offset: 0 }));
        assert_eq!(decode(&h("c1")), Err(MsgpackError::Reserved { offset: 0 }));
        assert_eq!(decode(&h("91c1")), Err(MsgpackError::Reserved { offset: 1 }));
        assert_eq!(decode(&h("d40100")), Err(MsgpackError::Extension { code: 1, offset: 0 }));
        assert_eq!(decode(&h("d6ff00000000")), Err(MsgpackError::Extension { code: -1, offset: 0 }));
        assert_eq!(decode(&h("c70205aabb")), Err(MsgpackError::Extension { code: 5, offset: 0 }));
        assert_eq!(decode(&h("c0c0")), Err(MsgpackError::TrailingBytes { offset: 1 }));
        assert_eq!(decode(&h("a1ff")), Err(MsgpackError::InvalidUtf8 { offset: 0 }));
        assert_eq!(decode(&h("cd01")), Err(MsgpackError::Truncated { offset: 0 }));
        assert_eq!(decode(&h("8101c0")), Err(MsgpackError::BadMapKey { found: "int", offset: 1 }));
        assert_eq!(decode(&h("81c3c0")), Err(MsgpackError::BadMapKey { found: "bool", offset: 1 }));
        assert_eq!(decode(&h("81920102c0")), Err(MsgpackError::BadMapKey { found: "tuple", offset: 1 }));
        let lax = MsgpackOptions { strict_map_key: false, ..MsgpackOptions::default() };
        assert_eq!(decode_with(&h("8101c0"), &lax), Ok(Value::Dict(vec![(Value::Int(1), Value::None)])));
    }

    #[test]
    fn non_canonical_input_decodes() {
        // Python accepts wider forms than it writes, and float32.
        assert_eq!(decode(&h("cc05")), Ok(Value::Int(5)));
        assert_eq!(decode(&h("d3ffffffffffffffff")), Ok(Value::Int(-1)));
        assert_eq!(decode(&h("d90161")), Ok(Value::Str("a".into())));
        assert_eq!(decode(&h("ca3fc00000")), Ok(Value::Float(1.5)));
        assert_eq!(decode(&h("dc0000")), Ok(Value::Tuple(vec![])));
        assert_eq!(decode(&h("de0001c40161c0")), Ok(Value::Dict(vec![(Value::Bytes(b"a".to_vec()), Value::None)])));
    }

    #[test]
    fn lists_decode_as_tuples_and_floats_keep_their_bits() {
        let v = Value::List(vec![Value::Float(f64::from_bits(0x7ff8_0000_0000_0001)), Value::Float(-0.0)]);
        let data = encode(&v).expect("encodable");
        assert_eq!(to_hex(&data), "92cb7ff8000000000001cb8000000000000000");
        let Ok(Value::Tuple(items)) = decode(&data) else { panic!("not a tuple") };
        assert!(same(&Value::List(items), &v));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::None),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-300i64..300).prop_map(Value::Int),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::Float),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
            ".{0,40}".prop_map(Value::Str),
        ];
        scalar.prop_recursive(5, 96, 20, |inner| {
            let key = prop_oneof![
                ".{0,8}".prop_map(Value::Str),
                prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes)
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..20).prop_map(Value::Tuple),
                prop::collection::vec((key, inner), 0..18).prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(value in arb_value()) {
            let data = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decoded = decode(&data).map_err(|e| TestCaseError::fail(format!("{e}: {}", to_hex(&data))))?;
            prop_assert!(same(&decoded, &value), "{decoded:?}");
            // And the decoded value encodes to the same bytes.
            prop_assert_eq!(encode(&decoded).ok(), Some(data));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = decode(&data) {
                // Whatever decodes also encodes (possibly in a shorter form).
                prop_assert!(encode(&v).is_ok());
            }
        }

        #[test]
        fn mutated_encodings_never_panic(
            value in arb_value(),
            edits in edits(),
        ) {
            let mut data = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            apply_edits(&mut data, edits);
            let _ = decode(&data);
        }
    }
}

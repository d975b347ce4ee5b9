//! The encoders: protocol 3, byte-identical to CPython's C pickler (and zodbpickle's, which
//! writes the same bytes at protocol 3).
//!
//! Both encoders share one writer; they differ only in the memo. Byte identity matters: golden
//! tests compare against Python, ZEO clients only accept protocol ≤ 3, and a `Data.fs` written
//! by us should be indistinguishable from one written by ZODB.

use std::collections::HashMap;

use super::opcodes::*;
use super::value::{Value, minimal_le_len};

/// CPython's `BATCHSIZE`: `APPENDS`/`SETITEMS` groups hold at most this many items.
const BATCH_SIZE: usize = 1000;

/// Encodes as ZEO's message encoder does: zodbpickle `Pickler(f, 3)` with `fast = 1`, so no
/// memo opcodes (and no sharing) at all.
///
/// [`Value::Object`] is written as `REDUCE` (plus `APPENDS`/`SETITEMS`/`BUILD`), [`Value::Set`]
/// and [`Value::FrozenSet`] as `builtins.set([...])` / `builtins.frozenset([...])`, as protocol 3
/// has no set opcodes.
///
/// # Panics
///
/// Only by stack overflow, for values nested far deeper than [`super::DEFAULT_MAX_DEPTH`].
pub fn encode_wire(value: &Value) -> Vec<u8> {
    Encoder::new(None).finish(value)
}

/// Encodes as `pickle.dumps(value, protocol=3)` does, memo opcodes included. ZODB writes the
/// transaction extension dict into `Data.fs` this way (`ZODB._compat.dumps(ext, 3)`, which is
/// zodbpickle's pickler; its protocol-3 output is the same as CPython's).
///
/// Python memoizes by object identity, and a [`Value`] has none, so this writes what Python
/// writes for an object graph without sharing, except for the objects CPython always shares: a
/// str that is empty or a single character below U+0100, a bytes of length 0 or 1, and a global
/// (one class object per name). Their repeats become `BINGET`. That is exactly the graph Python
/// has after unpickling a fast-mode message, which is where a ZEO server's extension dicts come
/// from.
///
/// # Panics
///
/// As [`encode_wire`].
pub fn encode_memo(value: &Value) -> Vec<u8> {
    Encoder::new(Some(Memo::default())).finish(value)
}

/// Objects that are one Python object per value, so Python's identity memo shares them.
#[derive(PartialEq, Eq, Hash)]
enum SharedKey<'v> {
    Str(&'v str),
    Bytes(&'v [u8]),
    Global(&'v str, &'v str),
}

#[derive(Default)]
struct Memo<'v> {
    /// Number of memoized objects so far; the next `PUT` index.
    next: u32,
    shared: HashMap<SharedKey<'v>, u32>,
}

struct Encoder<'v> {
    out: Vec<u8>,
    memo: Option<Memo<'v>>,
}

impl<'v> Encoder<'v> {
    fn new(memo: Option<Memo<'v>>) -> Self {
        Encoder { out: vec![PROTO, 3], memo }
    }

    fn finish(mut self, value: &'v Value) -> Vec<u8> {
        self.save(value);
        self.out.push(STOP);
        self.out
    }

    fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    /// Records the object just written in the memo (`BINPUT`/`LONG_BINPUT`), as CPython's
    /// `memoize`. A no-op in fast mode.
    fn memoize(&mut self, key: Option<SharedKey<'v>>) {
        let Some(memo) = self.memo.as_mut() else {
            return;
        };
        let index = memo.next;
        memo.next = memo.next.wrapping_add(1);
        if let Some(key) = key {
            memo.shared.insert(key, index);
        }
        match u8::try_from(index) {
            Ok(i) => self.out.extend([BINPUT, i]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend(index.to_le_bytes());
            }
        }
    }

    /// Writes a `BINGET` if `key` was memoized already.
    fn memo_get(&mut self, key: &SharedKey<'v>) -> bool {
        let Some(index) = self.memo.as_ref().and_then(|m| m.shared.get(key).copied()) else {
            return false;
        };
        match u8::try_from(index) {
            Ok(i) => self.out.extend([BINGET, i]),
            Err(_) => {
                self.out.push(LONG_BINGET);
                self.out.extend(index.to_le_bytes());
            }
        }
        true
    }

    fn save(&mut self, value: &'v Value) {
        match value {
            Value::None => self.op(NONE),
            Value::Bool(b) => self.op(if *b { NEWTRUE } else { NEWFALSE }),
            Value::Int(i) => self.save_int(*i),
            Value::BigInt(bytes) => self.save_big_int(bytes),
            Value::Float(f) => {
                self.op(BINFLOAT);
                self.out.extend(f.to_be_bytes());
            }
            Value::Bytes(b) => self.save_bytes(b),
            Value::Str(s) => self.save_str(s),
            Value::Tuple(items) => self.save_tuple(items),
            Value::List(items) => {
                self.op(EMPTY_LIST);
                self.memoize(None);
                self.batch_list_exact(items);
            }
            Value::Dict(pairs) => {
                self.op(EMPTY_DICT);
                self.memoize(None);
                self.batch_dict_exact(pairs);
            }
            Value::Set(items) => self.save_set("set", items),
            Value::FrozenSet(items) => self.save_set("frozenset", items),
            Value::Global { module, name } => self.save_global(module, name),
            Value::Object { class, args, state, list_items, dict_items } => {
                self.save(class);
                self.save(args);
                self.op(REDUCE);
                self.memoize(None);
                self.batch_list_generic(list_items);
                self.batch_dict_generic(dict_items);
                if let Some(state) = state {
                    self.save(state);
                    self.op(BUILD);
                }
            }
            Value::PersistentId(pid) => {
                self.save(pid);
                self.op(BINPERSID);
            }
        }
    }

    /// The smallest of `BININT1`/`BININT2`/`BININT`, else `LONG1`.
    fn save_int(&mut self, i: i64) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend([BININT1, b]);
        } else if let Ok(h) = u16::try_from(i) {
            self.op(BININT2);
            self.out.extend(h.to_le_bytes());
        } else if let Ok(w) = i32::try_from(i) {
            self.op(BININT);
            self.out.extend(w.to_le_bytes());
        } else {
            let bytes = i.to_le_bytes();
            self.save_long(bytes.get(..minimal_le_len(&bytes)).unwrap_or(&bytes));
        }
    }

    fn save_big_int(&mut self, bytes: &[u8]) {
        let minimal = bytes.get(..minimal_le_len(bytes)).unwrap_or(bytes);
        match Value::int_from_le_bytes(minimal) {
            Value::Int(i) => self.save_int(i),
            _ => self.save_long(minimal),
        }
    }

    /// `LONG1`/`LONG4` with minimal two's-complement bytes (CPython's `encode_long`).
    fn save_long(&mut self, minimal: &[u8]) {
        if let Ok(n) = u8::try_from(minimal.len()) {
            self.out.extend([LONG1, n]);
        } else {
            // Python cannot write ints of 2^31 bytes either; saturate rather than panic.
            let n = i32::try_from(minimal.len()).unwrap_or(i32::MAX);
            self.op(LONG4);
            self.out.extend(n.to_le_bytes());
        }
        self.out.extend_from_slice(minimal);
    }

    fn save_bytes(&mut self, b: &'v [u8]) {
        let key = (b.len() <= 1).then_some(SharedKey::Bytes(b));
        if key.as_ref().is_some_and(|k| self.memo_get(k)) {
            return;
        }
        if let Ok(n) = u8::try_from(b.len()) {
            self.out.extend([SHORT_BINBYTES, n]);
        } else if let Ok(n) = u32::try_from(b.len()) {
            self.op(BINBYTES);
            self.out.extend(n.to_le_bytes());
        } else {
            self.op(BINBYTES8);
            self.out.extend((b.len() as u64).to_le_bytes()); // usize is at most 64 bits.
        }
        self.out.extend_from_slice(b);
        self.memoize(key);
    }

    fn save_str(&mut self, s: &'v str) {
        let mut chars = s.chars();
        let singleton = match (chars.next(), chars.next()) {
            (None, _) => true,
            (Some(c), None) => u32::from(c) < 0x100,
            _ => false,
        };
        let key = singleton.then_some(SharedKey::Str(s));
        if key.as_ref().is_some_and(|k| self.memo_get(k)) {
            return;
        }
        if let Ok(n) = u32::try_from(s.len()) {
            self.op(BINUNICODE);
            self.out.extend(n.to_le_bytes());
        } else {
            self.op(BINUNICODE8);
            self.out.extend((s.len() as u64).to_le_bytes()); // usize is at most 64 bits.
        }
        self.out.extend_from_slice(s.as_bytes());
        self.memoize(key);
    }

    fn save_tuple(&mut self, items: &'v [Value]) {
        match items.len() {
            // The empty tuple is a singleton that Python never memoizes.
            0 => self.op(EMPTY_TUPLE),
            n @ 1..=3 => {
                items.iter().for_each(|v| self.save(v));
                self.op(match n {
                    1 => TUPLE1,
                    2 => TUPLE2,
                    _ => TUPLE3,
                });
                self.memoize(None);
            }
            _ => {
                self.op(MARK);
                items.iter().for_each(|v| self.save(v));
                self.op(TUPLE);
                self.memoize(None);
            }
        }
    }

    fn save_global(&mut self, module: &'v str, name: &'v str) {
        let key = SharedKey::Global(module, name);
        if self.memo_get(&key) {
            return;
        }
        self.op(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        self.memoize(Some(key));
    }

    /// Protocol 3 pickles a set via `set.__reduce__`: `builtins.set(list(items))`.
    fn save_set(&mut self, class: &'static str, items: &'v [Value]) {
        self.save_global("builtins", class);
        self.op(EMPTY_LIST);
        self.memoize(None);
        self.batch_list_exact(items);
        self.op(TUPLE1);
        self.memoize(None);
        self.op(REDUCE);
        self.memoize(None);
    }

    /// CPython's `batch_list_exact`: a one-item list uses `APPEND`; otherwise every batch,
    /// even a final single item, is `MARK … APPENDS`.
    fn batch_list_exact(&mut self, items: &'v [Value]) {
        if let [only] = items {
            self.save(only);
            self.op(APPEND);
            return;
        }
        for chunk in items.chunks(BATCH_SIZE) {
            self.op(MARK);
            chunk.iter().for_each(|v| self.save(v));
            self.op(APPENDS);
        }
    }

    /// CPython's `batch_dict_exact`: a one-item dict uses `SETITEM`; otherwise batches of
    /// `MARK … SETITEMS`, and, because its loop re-runs after every full batch, a dict whose
    /// size is a multiple of 1000 ends with an empty `MARK SETITEMS`.
    fn batch_dict_exact(&mut self, pairs: &'v [(Value, Value)]) {
        if let [(k, v)] = pairs {
            self.save(k);
            self.save(v);
            self.op(SETITEM);
            return;
        }
        if pairs.is_empty() {
            return;
        }
        for chunk in pairs.chunks(BATCH_SIZE) {
            self.op(MARK);
            chunk.iter().for_each(|(k, v)| {
                self.save(k);
                self.save(v);
            });
            self.op(SETITEMS);
        }
        if pairs.len().is_multiple_of(BATCH_SIZE) {
            self.out.extend([MARK, SETITEMS]);
        }
    }

    /// CPython's generic `batch_list` (for `__reduce__` list items): any batch of exactly one
    /// item, including the last, uses `APPEND`.
    fn batch_list_generic(&mut self, items: &'v [Value]) {
        for chunk in items.chunks(BATCH_SIZE) {
            if let [only] = chunk {
                self.save(only);
                self.op(APPEND);
            } else {
                self.op(MARK);
                chunk.iter().for_each(|v| self.save(v));
                self.op(APPENDS);
            }
        }
    }

    /// CPython's generic `batch_dict`, the dict counterpart of [`Self::batch_list_generic`].
    fn batch_dict_generic(&mut self, pairs: &'v [(Value, Value)]) {
        for chunk in pairs.chunks(BATCH_SIZE) {
            if let [(k, v)] = chunk {
                self.save(k);
                self.save(v);
                self.op(SETITEM);
            } else {
                self.op(MARK);
                chunk.iter().for_each(|(k, v)| {
                    self.save(k);
                    self.save(v);
                });
                self.op(SETITEMS);
            }
        }
    }
}

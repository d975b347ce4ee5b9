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

/// What the memo is keyed by: objects that are one Python object per value (so Python's
/// identity memo shares them), and objects of a [`super::Graph`] by their identity.
#[derive(PartialEq, Eq, Hash)]
pub(super) enum SharedKey<'v> {
    Str(&'v str),
    Bytes(&'v [u8]),
    Global(&'v str, &'v str),
    Obj(usize),
}

#[derive(Default)]
pub(super) struct Memo<'v> {
    /// Number of memoized objects so far; the next `PUT` index.
    next: u32,
    shared: HashMap<SharedKey<'v>, u32>,
}

pub(super) struct Encoder<'v> {
    pub(super) out: Vec<u8>,
    memo: Option<Memo<'v>>,
}

impl<'v> Encoder<'v> {
    pub(super) fn new(memo: Option<Memo<'v>>) -> Self {
        Encoder { out: vec![PROTO, 3], memo }
    }

    fn finish(mut self, value: &'v Value) -> Vec<u8> {
        self.save(value);
        self.out.push(STOP);
        self.out
    }

    pub(super) fn op(&mut self, op: u8) {
        self.out.push(op);
    }

    /// Records the object just written in the memo (`BINPUT`/`LONG_BINPUT`), as CPython's
    /// `memoize`. A no-op in fast mode.
    pub(super) fn memoize(&mut self, key: Option<SharedKey<'v>>) {
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
    pub(super) fn memo_get(&mut self, key: &SharedKey<'v>) -> bool {
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
            Value::Bytes(b) => self.save_bytes(b, None),
            Value::Str(s) => self.save_str(s, None),
            Value::Tuple(items) => self.save_tuple(items, None, Self::save),
            Value::List(items) => {
                self.op(EMPTY_LIST);
                self.memoize(None);
                self.batch_list_exact(items, Self::save);
            }
            Value::Dict(pairs) => {
                self.op(EMPTY_DICT);
                self.memoize(None);
                self.batch_dict_exact(pairs, |e, (k, v)| {
                    e.save(k);
                    e.save(v);
                });
            }
            Value::Set(items) => self.save_set("set", items, None, Self::save),
            Value::FrozenSet(items) => self.save_set("frozenset", items, None, Self::save),
            Value::Global { module, name } => self.save_global(module, name),
            Value::Object { class, args, state, list_items, dict_items } => {
                self.save(class);
                self.save(args);
                self.op(REDUCE);
                self.memoize(None);
                self.batch_list_generic(list_items, Self::save);
                self.batch_dict_generic(dict_items, |e, (k, v)| {
                    e.save(k);
                    e.save(v);
                });
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
    pub(super) fn save_int(&mut self, i: i64) {
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

    pub(super) fn save_big_int(&mut self, bytes: &[u8]) {
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

    /// `identity` is the memo key of a bytes object that is not one of CPython's shared ones
    /// (`None`: never shared).
    pub(super) fn save_bytes(&mut self, b: &'v [u8], identity: Option<SharedKey<'v>>) {
        let key = if b.len() <= 1 { Some(SharedKey::Bytes(b)) } else { identity };
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

    /// `identity` as for [`Self::save_bytes`].
    pub(super) fn save_str(&mut self, s: &'v str, identity: Option<SharedKey<'v>>) {
        let mut chars = s.chars();
        let singleton = match (chars.next(), chars.next()) {
            (None, _) => true,
            (Some(c), None) => u32::from(c) < 0x100,
            _ => false,
        };
        let key = if singleton { Some(SharedKey::Str(s)) } else { identity };
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

    /// A tuple whose items `save` writes; `identity` is its memo key.
    pub(super) fn save_tuple<T>(
        &mut self,
        items: &'v [T],
        identity: Option<SharedKey<'v>>,
        mut save: impl FnMut(&mut Self, &'v T),
    ) {
        match items.len() {
            // The empty tuple is a singleton that Python never memoizes.
            0 => self.op(EMPTY_TUPLE),
            n @ 1..=3 => {
                items.iter().for_each(|v| save(self, v));
                self.op(match n {
                    1 => TUPLE1,
                    2 => TUPLE2,
                    _ => TUPLE3,
                });
                self.memoize(identity);
            }
            _ => {
                self.op(MARK);
                items.iter().for_each(|v| save(self, v));
                self.op(TUPLE);
                self.memoize(identity);
            }
        }
    }

    pub(super) fn save_global(&mut self, module: &'v str, name: &'v str) {
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

    /// Protocol 3 pickles a set via `set.__reduce__`: `builtins.set(list(items))`. The list
    /// and the argument tuple are new objects, never shared; `identity` is the set's memo key.
    pub(super) fn save_set<T>(
        &mut self,
        class: &'static str,
        items: &'v [T],
        identity: Option<SharedKey<'v>>,
        save: impl FnMut(&mut Self, &'v T),
    ) {
        self.save_global("builtins", class);
        self.op(EMPTY_LIST);
        self.memoize(None);
        self.batch_list_exact(items, save);
        self.op(TUPLE1);
        self.memoize(None);
        self.op(REDUCE);
        self.memoize(identity);
    }

    /// CPython's `batch_list_exact`: a one-item list uses `APPEND`; otherwise every batch,
    /// even a final single item, is `MARK … APPENDS`.
    pub(super) fn batch_list_exact<T>(&mut self, items: &'v [T], mut save: impl FnMut(&mut Self, &'v T)) {
        if let [only] = items {
            save(self, only);
            self.op(APPEND);
            return;
        }
        for chunk in items.chunks(BATCH_SIZE) {
            self.op(MARK);
            chunk.iter().for_each(|v| save(self, v));
            self.op(APPENDS);
        }
    }

    /// CPython's `batch_dict_exact`: a one-item dict uses `SETITEM`; otherwise batches of
    /// `MARK … SETITEMS`, and, because its loop re-runs after every full batch, a dict whose
    /// size is a multiple of 1000 ends with an empty `MARK SETITEMS`.
    /// `save` writes one key and its value.
    pub(super) fn batch_dict_exact<T>(&mut self, pairs: &'v [T], mut save: impl FnMut(&mut Self, &'v T)) {
        if let [pair] = pairs {
            save(self, pair);
            self.op(SETITEM);
            return;
        }
        if pairs.is_empty() {
            return;
        }
        for chunk in pairs.chunks(BATCH_SIZE) {
            self.op(MARK);
            chunk.iter().for_each(|pair| save(self, pair));
            self.op(SETITEMS);
        }
        if pairs.len().is_multiple_of(BATCH_SIZE) {
            self.out.extend([MARK, SETITEMS]);
        }
    }

    /// CPython's generic `batch_list` (for `__reduce__` list items): any batch of exactly one
    /// item, including the last, uses `APPEND`.
    pub(super) fn batch_list_generic<T>(&mut self, items: &'v [T], mut save: impl FnMut(&mut Self, &'v T)) {
        for chunk in items.chunks(BATCH_SIZE) {
            if let [only] = chunk {
                save(self, only);
                self.op(APPEND);
            } else {
                self.op(MARK);
                chunk.iter().for_each(|v| save(self, v));
                self.op(APPENDS);
            }
        }
    }

    /// CPython's generic `batch_dict`, the dict counterpart of [`Self::batch_list_generic`].
    /// `save` as for [`Self::batch_dict_exact`].
    pub(super) fn batch_dict_generic<T>(&mut self, pairs: &'v [T], mut save: impl FnMut(&mut Self, &'v T)) {
        for chunk in pairs.chunks(BATCH_SIZE) {
            if let [pair] = chunk {
                save(self, pair);
                self.op(SETITEM);
            } else {
                self.op(MARK);
                chunk.iter().for_each(|pair| save(self, pair));
                self.op(SETITEMS);
            }
        }
    }
}

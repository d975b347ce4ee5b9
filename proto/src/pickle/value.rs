//! [`Value`]: the decoded form of a pickle, and what the encoders take.

/// A pickled Python value.
///
/// It is a plain tree: Python can share one object between several places (through the memo) or
/// even build cycles; the decoder copies shared objects and rejects cycles. Objects of arbitrary
/// classes are never constructed: they stay as [`Value::Object`] (the call that would build them)
/// and [`Value::Global`] (the class or function named).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An int that fits in an i64 (the decoder always uses this form when it can).
    Int(i64),
    /// An int outside the i64 range: minimal two's-complement little-endian bytes, exactly the
    /// `LONG1` payload. Construct it with [`Value::int_from_le_bytes`] to get the canonical form.
    BigInt(Vec<u8>),
    /// A Python float.
    Float(f64),
    /// `bytes`. Python 2 byte strings (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) and protocol-5
    /// `bytearray`s decode to this too.
    Bytes(Vec<u8>),
    /// `str`.
    Str(String),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict as its items in insertion order. Duplicate keys are kept as they were pickled
    /// (Python would keep the last value); comparing keys needs Python semantics we don't have.
    Dict(Vec<(Value, Value)>),
    /// A set (protocol 4's `EMPTY_SET`/`ADDITEMS`). Protocol 3 writes sets as
    /// `builtins.set([...])`, which decodes to an [`Value::Object`].
    Set(Vec<Value>),
    /// A frozenset (protocol 4's `FROZENSET`).
    FrozenSet(Vec<Value>),
    /// A module attribute named by `GLOBAL`/`STACK_GLOBAL`, usually a class or function.
    Global {
        /// The module, as written in the pickle (no Python 2→3 renaming).
        module: String,
        /// The attribute name (may be dotted).
        name: String,
    },
    /// An object that Python would build by a call: `REDUCE` (`class(*args)`), `NEWOBJ`
    /// (`class.__new__(class, *args)`), `INST`/`OBJ`, then optionally filled by `APPEND(S)`,
    /// `SETITEM(S)` and `BUILD`. The encoders write it back as `REDUCE`. `NEWOBJ_EX` decodes as
    /// `class = copyreg.__newobj_ex__`, `args = (cls, args, kwargs)`, which is how protocols
    /// below 4 spell the same call.
    Object {
        /// The callable (normally a [`Value::Global`]).
        class: Box<Value>,
        /// Its argument tuple.
        args: Box<Value>,
        /// The `BUILD` state (`__setstate__` argument), if any.
        state: Option<Box<Value>>,
        /// Items added by `APPEND`/`APPENDS` (list subclasses, `__reduce__` list items).
        list_items: Vec<Value>,
        /// Items added by `SETITEM`/`SETITEMS` (e.g. `OrderedDict`, `defaultdict`).
        dict_items: Vec<(Value, Value)>,
    },
    /// A persistent reference (`PERSID`/`BINPERSID`): the pickled persistent id itself. In ZODB
    /// records this is an oid, `(oid, class)`, or a list form (weak or cross-database).
    PersistentId(Box<Value>),
}

impl Value {
    /// An [`Value::Object`] with no list or dict items, the common `REDUCE`/`BUILD` shape.
    pub fn object(class: Value, args: Value, state: Option<Value>) -> Value {
        Value::Object {
            class: Box::new(class),
            args: Box::new(args),
            state: state.map(Box::new),
            list_items: Vec::new(),
            dict_items: Vec::new(),
        }
    }

    /// A [`Value::Global`].
    pub fn global(module: &str, name: &str) -> Value {
        Value::Global { module: module.to_owned(), name: name.to_owned() }
    }

    /// The int whose two's-complement little-endian bytes are `bytes` (the `LONG1`/`LONG4`
    /// payload; empty means 0), in canonical form: [`Value::Int`] when it fits in an i64,
    /// otherwise [`Value::BigInt`] with redundant sign bytes removed. Canonical form is what
    /// makes decoded values compare equal however the int was written.
    pub fn int_from_le_bytes(bytes: &[u8]) -> Value {
        let minimal = minimal_le_len(bytes);
        let bytes = bytes.get(..minimal).unwrap_or(bytes);
        if bytes.len() <= 8 {
            let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
            let mut full = if negative { [0xff; 8] } else { [0; 8] };
            if let Some(dst) = full.get_mut(..bytes.len()) {
                dst.copy_from_slice(bytes);
            }
            Value::Int(i64::from_le_bytes(full))
        } else {
            Value::BigInt(bytes.to_vec())
        }
    }

    /// The value's Python type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global { .. } => "global",
            Value::Object { .. } => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }

    /// The bytes of a [`Value::Bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// An 8-byte [`Value::Bytes`] as an oid or tid.
    pub fn as_id(&self) -> Option<[u8; 8]> {
        self.as_bytes().and_then(crate::id_from_slice)
    }

    /// The text of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An int that fits in an i64. Bools count as ints, as in Python: ZEO clients send flags
    /// as either `0`/`1` or `False`/`True`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::BigInt(b) => match Value::int_from_le_bytes(b) {
                Value::Int(i) => Some(i),
                _ => None,
            },
            _ => None,
        }
    }

    /// A non-negative int below 2^64, which may arrive as a `LONG1` (ZEO transaction ids are
    /// Python `id()` values, i.e. addresses).
    pub fn as_u64(&self) -> Option<u64> {
        if let Some(i) = self.as_int() {
            return u64::try_from(i).ok();
        }
        match self {
            Value::BigInt(b) => {
                let minimal = b.get(..minimal_le_len(b))?;
                // 2^63..2^64 needs 9 bytes, the last being the 0 sign byte.
                let (&sign, low) = minimal.split_last()?;
                if sign != 0 || low.len() != 8 {
                    return None;
                }
                Some(u64::from_le_bytes(low.try_into().ok()?))
            }
            _ => None,
        }
    }

    /// A float, or an int converted to one (Python code often passes ints where floats are
    /// expected, e.g. times).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The items of a [`Value::Tuple`].
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a [`Value::List`].
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a tuple or a list: msgpack-decoded and pickle-decoded messages disagree on
    /// which of the two a sequence is, so most readers accept both.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a [`Value::Dict`].
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            _ => None,
        }
    }

    /// Looks up a str key in a [`Value::Dict`]; the last matching item wins, as it would in
    /// the Python dict the pickle describes.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?.iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// Python truthiness. Objects and globals are always true: we cannot call `__bool__`.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::BigInt(b) => b.iter().any(|&x| x != 0),
            Value::Float(f) => *f != 0.0,
            Value::Bytes(b) => !b.is_empty(),
            Value::Str(s) => !s.is_empty(),
            Value::Tuple(v) | Value::List(v) | Value::Set(v) | Value::FrozenSet(v) => !v.is_empty(),
            Value::Dict(v) => !v.is_empty(),
            Value::Global { .. } | Value::Object { .. } | Value::PersistentId(_) => true,
        }
    }

    /// True for `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }
}

/// Length of the shortest prefix of a two's-complement little-endian number with the same
/// value: drop top bytes that only repeat the sign of the byte below them.
pub(crate) fn minimal_le_len(bytes: &[u8]) -> usize {
    let mut len = bytes.len();
    while len > 1 {
        let (Some(&top), Some(&below)) = (bytes.get(len - 1), bytes.get(len - 2)) else {
            break;
        };
        let redundant = (top == 0 && below & 0x80 == 0) || (top == 0xff && below & 0x80 != 0);
        if !redundant {
            break;
        }
        len -= 1;
    }
    len
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Int(i64::from(i))
    }
}

/// A u64 above `i64::MAX` becomes a [`Value::BigInt`], as Python would pickle it (`LONG1`).
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.push(0);
        Value::int_from_le_bytes(&bytes)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

/// Oids and tids are pickled as 8-byte `bytes`.
impl From<[u8; 8]> for Value {
    fn from(b: [u8; 8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_from_le_bytes_is_canonical() {
        assert_eq!(Value::int_from_le_bytes(&[]), Value::Int(0));
        assert_eq!(Value::int_from_le_bytes(&[0xff]), Value::Int(-1));
        assert_eq!(Value::int_from_le_bytes(&[0xff, 0xff, 0xff]), Value::Int(-1));
        assert_eq!(Value::int_from_le_bytes(&[0x80, 0x00]), Value::Int(128));
        assert_eq!(Value::int_from_le_bytes(&[0x80]), Value::Int(-128));
        let max = i64::MAX.to_le_bytes();
        assert_eq!(Value::int_from_le_bytes(&max), Value::Int(i64::MAX));
        let big = [0, 0, 0, 0, 0, 0, 0, 0x80, 0];
        assert_eq!(Value::int_from_le_bytes(&big), Value::BigInt(big.to_vec()));
        let padded = [0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0];
        assert_eq!(Value::int_from_le_bytes(&padded), Value::BigInt(big.to_vec()));
        let min = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0xff];
        assert_eq!(Value::int_from_le_bytes(&min), Value::Int(i64::MIN));
    }

    #[test]
    fn u64_conversions() {
        assert_eq!(Value::from(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::from(1u64 << 63).as_u64(), Some(1 << 63));
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(Value::Int(-1).as_u64(), None);
        assert_eq!(Value::int_from_le_bytes(&[0; 10]).as_u64(), Some(0));
        let too_big = Value::int_from_le_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(too_big.as_u64(), None);
        assert_eq!(Value::Bool(true).as_int(), Some(1));
    }

    #[test]
    fn accessors_and_truthiness() {
        let d =
            Value::Dict(vec![("a".into(), Value::Int(1)), ("a".into(), Value::Int(2)), (Value::Int(3), Value::None)]);
        assert_eq!(d.dict_get("a"), Some(&Value::Int(2)));
        assert_eq!(d.dict_get("b"), None);
        assert!(d.is_truthy());
        assert!(!Value::Dict(vec![]).is_truthy());
        assert!(!Value::Float(0.0).is_truthy());
        assert!(Value::Float(f64::NAN).is_truthy());
        assert!(!Value::BigInt(vec![0, 0]).is_truthy());
        assert_eq!(Value::from([7u8; 8]).as_id(), Some([7; 8]));
        assert_eq!(Value::Bytes(vec![7; 3]).as_id(), None);
        assert_eq!(Value::List(vec![Value::None]).as_seq().map(<[_]>::len), Some(1));
        assert_eq!(Value::Tuple(vec![]).as_list(), None);
        assert_eq!(Value::Int(2).as_f64(), Some(2.0));
        assert_eq!(Value::global("m", "n").type_name(), "global");
    }
}

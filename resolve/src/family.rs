//! Keys and values of the BTrees families: what `__setstate__` accepts (`COPY_KEY_FROM_ARG`,
//! `COPY_VALUE_FROM_ARG` in `intkeymacros.h`, `intvaluemacros.h`, `floatvaluemacros.h`,
//! `_fsBTree.c`), how the merge compares them (`TEST_KEY_SET_OR`, `TEST_VALUE`), and the
//! objects `__getstate__` makes of them again.
//!
//! Object keys and values stay the objects they were unpickled as (so the pickler shares
//! what it shared); C-typed ones are converted in and made anew on the way out, as the C code
//! does: an `IIBucket` key `True` comes back as the int `1`, an `IFBucket` value `0.1` as
//! `0.10000000149011612` (single precision).

use num_bigint::BigInt;
use zeo_proto::pickle::{Graph, Obj, ObjId};

use crate::classes::{KeyType, ValueType};
use crate::pyobj::{Py, Raise};

/// A key as the bucket holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Key {
    Object(ObjId),
    Signed(i64),
    Unsigned(u64),
    Fs([u8; 2]),
}

/// A value as the bucket holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Object(ObjId),
    Signed(i64),
    Unsigned(u64),
    Float(f32),
    Fs([u8; 6]),
}

/// The int a Python int (or bool) holds, if it fits in an i128.
fn int_of(obj: &Obj) -> Option<Result<i128, ()>> {
    match obj {
        Obj::Bool(b) => Some(Ok(i128::from(*b))),
        Obj::Int(i) => Some(Ok(i128::from(*i))),
        Obj::BigInt(b) => {
            let big = BigInt::from_signed_bytes_le(b);
            Some(i128::try_from(big).map_err(|_| ()))
        }
        _ => None,
    }
}

/// An int key or value of C type `T` (whose range is `lo..=hi`).
fn c_int(obj: &Obj, lo: i128, hi: i128, what: &str) -> Result<i128, String> {
    match int_of(obj) {
        Some(Ok(i)) if (lo..=hi).contains(&i) => Ok(i),
        Some(_) => Err(format!("{what} out of range")),
        None => Err(format!("expected an integer {what}, found {}", type_name(obj))),
    }
}

fn fixed_bytes<const N: usize>(obj: &Obj, what: &str) -> Result<[u8; N], String> {
    match obj {
        Obj::Bytes(b) => <[u8; N]>::try_from(b.as_slice()).map_err(|_| format!("expected a {N}-byte {what}")),
        _ => Err(format!("expected a {N}-byte {what}, found {}", type_name(obj))),
    }
}

/// What `__setstate__` stores for `id` as a key, or why it raises.
pub(crate) fn key_from(graph: &Graph, id: ObjId, key_type: KeyType) -> Result<Key, String> {
    let obj = graph.get(id).unwrap_or(&Obj::None);
    let narrow = |i: i128| i64::try_from(i).map_err(|_| "key out of range".to_owned());
    Ok(match key_type {
        KeyType::Object => Key::Object(id),
        KeyType::I32 => Key::Signed(narrow(c_int(obj, i32::MIN.into(), i32::MAX.into(), "key")?)?),
        KeyType::I64 => Key::Signed(narrow(c_int(obj, i64::MIN.into(), i64::MAX.into(), "key")?)?),
        KeyType::U32 => Key::Unsigned(c_int(obj, 0, u32::MAX.into(), "key")? as u64),
        KeyType::U64 => Key::Unsigned(c_int(obj, 0, u64::MAX.into(), "key")? as u64),
        KeyType::Fs2 => Key::Fs(fixed_bytes(obj, "key")?),
    })
}

/// What `__setstate__` stores for `id` as a value, or why it raises.
pub(crate) fn value_from(graph: &Graph, id: ObjId, value_type: ValueType) -> Result<Value, String> {
    let obj = graph.get(id).unwrap_or(&Obj::None);
    let narrow = |i: i128| i64::try_from(i).map_err(|_| "value out of range".to_owned());
    Ok(match value_type {
        ValueType::Object => Value::Object(id),
        ValueType::I32 => Value::Signed(narrow(c_int(obj, i32::MIN.into(), i32::MAX.into(), "value")?)?),
        ValueType::I64 => Value::Signed(narrow(c_int(obj, i64::MIN.into(), i64::MAX.into(), "value")?)?),
        ValueType::U32 => Value::Unsigned(c_int(obj, 0, u32::MAX.into(), "value")? as u64),
        ValueType::U64 => Value::Unsigned(c_int(obj, 0, u64::MAX.into(), "value")? as u64),
        // `(float)PyFloat_AsDouble(v)` or `(float)PyLong_AsLong(v)`: rounded to single precision.
        ValueType::F32 => match obj {
            Obj::Float(f) => Value::Float(*f as f32),
            _ => Value::Float(narrow(c_int(obj, i64::MIN.into(), i64::MAX.into(), "value")?)? as f32),
        },
        ValueType::Fs6 => Value::Fs(fixed_bytes(obj, "value")?),
    })
}

/// `TEST_KEY_SET_OR`: -1, 0 or 1.
pub(crate) fn compare_keys(py: &Py<'_>, a: &Key, b: &Key) -> Result<i8, Raise> {
    let order = |o: std::cmp::Ordering| o as i8;
    match (a, b) {
        (Key::Object(x), Key::Object(y)) => py.compare(*x, *y),
        (Key::Signed(x), Key::Signed(y)) => Ok(order(x.cmp(y))),
        (Key::Unsigned(x), Key::Unsigned(y)) => Ok(order(x.cmp(y))),
        (Key::Fs(x), Key::Fs(y)) => Ok(order(x.cmp(y))),
        _ => Err(Raise("keys of different families")),
    }
}

/// `TEST_VALUE(a, b) == 0`. Single-precision floats compare as C does: a NaN is neither less
/// nor greater than anything, so it "equals" everything.
pub(crate) fn values_equal(py: &Py<'_>, a: &Value, b: &Value) -> Result<bool, Raise> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => Ok(py.compare(*x, *y)? == 0),
        (Value::Signed(x), Value::Signed(y)) => Ok(x == y),
        (Value::Unsigned(x), Value::Unsigned(y)) => Ok(x == y),
        (Value::Float(x), Value::Float(y)) => {
            Ok(!matches!(x.partial_cmp(y), Some(std::cmp::Ordering::Less | std::cmp::Ordering::Greater)))
        }
        (Value::Fs(x), Value::Fs(y)) => Ok(x == y),
        _ => Err(Raise("values of different families")),
    }
}

/// The object `__getstate__` returns for a key.
pub(crate) fn key_object(graph: &mut Graph, key: &Key) -> ObjId {
    match key {
        Key::Object(id) => *id,
        Key::Signed(i) => graph.add(Obj::Int(*i)),
        Key::Unsigned(u) => graph.add(unsigned(*u)),
        Key::Fs(b) => graph.add(Obj::Bytes(b.to_vec())),
    }
}

/// The object `__getstate__` returns for a value.
pub(crate) fn value_object(graph: &mut Graph, value: &Value) -> ObjId {
    match value {
        Value::Object(id) => *id,
        Value::Signed(i) => graph.add(Obj::Int(*i)),
        Value::Unsigned(u) => graph.add(unsigned(*u)),
        Value::Float(f) => graph.add(Obj::Float(f64::from(*f))),
        Value::Fs(b) => graph.add(Obj::Bytes(b.to_vec())),
    }
}

fn unsigned(u: u64) -> Obj {
    match i64::try_from(u) {
        Ok(i) => Obj::Int(i),
        Err(_) => {
            let mut bytes = u.to_le_bytes().to_vec();
            bytes.push(0);
            Obj::BigInt(bytes)
        }
    }
}

/// A Python type name for messages.
pub(crate) fn type_name(obj: &Obj) -> &'static str {
    match obj {
        Obj::None => "None",
        Obj::Bool(_) => "bool",
        Obj::Int(_) | Obj::BigInt(_) => "int",
        Obj::Float(_) => "float",
        Obj::Bytes(_) => "bytes",
        Obj::Py2Str(_) => "Python 2 str",
        Obj::Str(_) => "str",
        Obj::Tuple(_) => "tuple",
        Obj::List(_) => "list",
        Obj::Dict(_) => "dict",
        Obj::Set(_) => "set",
        Obj::FrozenSet(_) => "frozenset",
        Obj::Global { .. } => "class",
        Obj::Object { .. } => "instance",
        Obj::PersistentId(_) => "persistent reference",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_ref::PrTable;

    fn graph_of(objs: &[Obj]) -> (Graph, Vec<ObjId>) {
        let mut g = Graph::new();
        let ids = objs.iter().map(|o| g.add(o.clone())).collect();
        (g, ids)
    }

    #[test]
    fn c_keys_take_ints_in_range_only() {
        let (g, ids) = graph_of(&[
            Obj::Int(5),
            Obj::Bool(true),
            Obj::Int(1 << 40),
            Obj::Int(-1),
            Obj::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            Obj::Float(1.0),
            Obj::Str("1".into()),
        ]);
        assert_eq!(key_from(&g, ids[0], KeyType::I32), Ok(Key::Signed(5)));
        assert_eq!(key_from(&g, ids[1], KeyType::I32), Ok(Key::Signed(1)));
        assert!(key_from(&g, ids[2], KeyType::I32).is_err());
        assert_eq!(key_from(&g, ids[2], KeyType::I64), Ok(Key::Signed(1 << 40)));
        assert!(key_from(&g, ids[3], KeyType::U32).is_err());
        assert!(key_from(&g, ids[3], KeyType::U64).is_err());
        assert!(key_from(&g, ids[4], KeyType::I64).is_err());
        assert_eq!(key_from(&g, ids[4], KeyType::U64), Ok(Key::Unsigned(1 << 63)));
        assert!(key_from(&g, ids[5], KeyType::I64).is_err());
        assert!(key_from(&g, ids[6], KeyType::I32).is_err());
        assert_eq!(key_from(&g, ids[6], KeyType::Object), Ok(Key::Object(ids[6])));
    }

    #[test]
    fn float_values_are_single_precision_and_nan_equals_all() {
        let (g, ids) = graph_of(&[Obj::Float(0.1), Obj::Int(3), Obj::Float(f64::NAN), Obj::Str("x".into())]);
        let Ok(Value::Float(f)) = value_from(&g, ids[0], ValueType::F32) else { panic!("a float") };
        assert_eq!(f64::from(f), 0.100_000_001_490_116_12);
        assert_eq!(value_from(&g, ids[1], ValueType::F32), Ok(Value::Float(3.0)));
        assert!(value_from(&g, ids[3], ValueType::F32).is_err());
        let prs = PrTable::default();
        let py = Py::new(&g, &prs);
        let nan = value_from(&g, ids[2], ValueType::F32).expect("a float");
        assert_eq!(values_equal(&py, &nan, &Value::Float(3.0)), Ok(true));
        assert_eq!(values_equal(&py, &Value::Float(2.0), &Value::Float(3.0)), Ok(false));
    }

    #[test]
    fn fs_items_are_fixed_size_bytes() {
        let (g, ids) = graph_of(&[Obj::Bytes(vec![1, 2]), Obj::Bytes(vec![1, 2, 3]), Obj::Bytes(vec![9; 6])]);
        assert_eq!(key_from(&g, ids[0], KeyType::Fs2), Ok(Key::Fs([1, 2])));
        assert!(key_from(&g, ids[1], KeyType::Fs2).is_err());
        assert_eq!(value_from(&g, ids[2], ValueType::Fs6), Ok(Value::Fs([9; 6])));
        let prs = PrTable::default();
        let py = Py::new(&g, &prs);
        assert_eq!(compare_keys(&py, &Key::Fs([0, 0xff]), &Key::Fs([1, 0])), Ok(-1));
    }

    #[test]
    fn outputs_are_new_objects_for_c_types() {
        let mut g = Graph::new();
        let big = value_object(&mut g, &Value::Unsigned(u64::MAX));
        assert_eq!(g.get(big), Some(&Obj::BigInt(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0])));
        let one = key_object(&mut g, &Key::Signed(1));
        let one_again = key_object(&mut g, &Key::Signed(1));
        assert_ne!(one, one_again);
        let obj = g.add(Obj::Str("k".into()));
        assert_eq!(key_object(&mut g, &Key::Object(obj)), obj);
    }
}

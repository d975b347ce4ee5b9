//! [`encode_record`] and [`decode_record`]: between an [`Object`] and ZODB's record bytes.
//!
//! A record is two pickles written one after the other by one pickler (ZODB
//! `serialize.ObjectWriter._dump`), so the second may refer back to memo entries of the first:
//!
//! 1. the class metadata. ZODB writes the class as a global for ordinary classes
//!    (`PersistentMapping` and `PersistentList` included), and reads three more forms: `(class,
//!    args)`, `((module, name), None)` and `((module, name), args)`;
//! 2. the state, `__getstate__()`: `{'data': {...}}` for `PersistentMapping`, `{'data': [...]}`
//!    for `PersistentList`. References to other persistent objects are persistent ids
//!    (`BINPERSID`) of `(oid, class)` or a bare `oid`.
//!
//! We write each pickle without memo opcodes (protocol 3, like ZODB); Python's unpickler reads
//! that the same as ZODB's own output.

use std::collections::BTreeMap;

use zeo_proto::pickle::{DecodeOptions, Decoder, PickleError, Value, encode_wire};

use super::value::{ClassName, ObjRef, ObjValue, Object};

/// Why a record could not be decoded as an [`Object`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// One of the two pickles is malformed or missing.
    #[error("undecodable pickle: {0}")]
    Pickle(#[from] PickleError),
    /// The pickles decode, but not to a class and a state as ZODB writes them.
    #[error("not a ZODB object record: {0}")]
    Format(String),
    /// The state holds a value the object layer does not map (see [`ObjValue`]).
    #[error("unsupported value in the state: {0}")]
    Unsupported(String),
}

/// The record bytes of `obj`, as ZODB's `ObjectWriter` writes them (see the module docs).
///
/// # Panics
///
/// Only by stack overflow, for values nested thousands of levels deep (the decoder refuses
/// more than [`zeo_proto::pickle::DEFAULT_MAX_DEPTH`] levels anyway).
pub fn encode_record(obj: &Object) -> Vec<u8> {
    let class = obj.class();
    let state = match obj {
        Object::Mapping(entries) => data_state(Value::Dict(entries.iter().map(dict_item).collect())),
        Object::List(items) => data_state(Value::List(items.iter().map(to_pickle).collect())),
        Object::Other { state, .. } => to_pickle(state),
    };
    let mut out = encode_wire(&Value::global(&class.module, &class.name));
    out.extend(encode_wire(&state));
    out
}

/// The [`Object`] a ZODB record holds.
///
/// `PersistentMapping` and `PersistentList` records become [`Object::Mapping`] and
/// [`Object::List`] when their state is exactly `{'data': ...}` of the right type; any other
/// class (or an unusual state) becomes [`Object::Other`].
///
/// # Errors
///
/// [`ObjectError::Pickle`] for bad pickles, [`ObjectError::Format`] for a record of another
/// shape, [`ObjectError::Unsupported`] for values [`ObjValue`] cannot hold.
pub fn decode_record(data: &[u8]) -> Result<Object, ObjectError> {
    let opts = DecodeOptions::records();
    let mut decoder = Decoder::new(data, &opts);
    let class = class_of(&decoder.next_value()?)?;
    let state = from_pickle(&decoder.next_value()?)?;
    Ok(match state {
        ObjValue::Dict(mut d) if d.len() == 1 && (class.is_mapping() || class.is_list()) => {
            match (d.remove("data"), class.is_mapping()) {
                (Some(ObjValue::Dict(entries)), true) => Object::Mapping(entries),
                (Some(ObjValue::List(items)), false) => Object::List(items),
                (data, _) => {
                    d.extend(data.map(|v| ("data".to_owned(), v)));
                    Object::Other { class, state: ObjValue::Dict(d) }
                }
            }
        }
        state => Object::Other { class, state },
    })
}

/// `{'data': data}`.
fn data_state(data: Value) -> Value {
    Value::Dict(vec![(Value::Str("data".into()), data)])
}

fn dict_item((k, v): (&String, &ObjValue)) -> (Value, Value) {
    (Value::Str(k.clone()), to_pickle(v))
}

fn to_pickle(v: &ObjValue) -> Value {
    match v {
        ObjValue::None => Value::None,
        ObjValue::Bool(b) => Value::Bool(*b),
        ObjValue::Int(i) => Value::Int(*i),
        ObjValue::Float(f) => Value::Float(*f),
        ObjValue::Str(s) => Value::Str(s.clone()),
        ObjValue::Bytes(b) => Value::Bytes(b.clone()),
        ObjValue::List(items) => Value::List(items.iter().map(to_pickle).collect()),
        ObjValue::Tuple(items) => Value::Tuple(items.iter().map(to_pickle).collect()),
        ObjValue::Dict(d) => Value::Dict(d.iter().map(dict_item).collect()),
        ObjValue::Ref(r) => {
            let oid = Value::Bytes(r.oid.to_vec());
            Value::PersistentId(Box::new(match &r.class {
                Some(c) => Value::Tuple(vec![oid, Value::global(&c.module, &c.name)]),
                None => oid,
            }))
        }
    }
}

/// The class named by the first pickle, in the four forms ZODB reads (`ObjectReader._get_class`).
/// Constructor arguments are only accepted when empty: [`Object`] cannot carry them.
fn class_of(meta: &Value) -> Result<ClassName, ObjectError> {
    let bad = || ObjectError::Format(format!("class metadata is a {}", meta.type_name()));
    let (class, args) = match meta {
        Value::Tuple(items) => match items.as_slice() {
            [class, args] => (class, Some(args)),
            _ => return Err(bad()),
        },
        class => (class, None),
    };
    if let Some(args) = args
        && !(args.is_none() || args.as_tuple().is_some_and(<[Value]>::is_empty))
    {
        return Err(ObjectError::Unsupported("classes with constructor arguments (__getnewargs__)".into()));
    }
    match class {
        Value::Global { module, name } => Ok(ClassName::new(module, name)),
        Value::Tuple(parts) => match parts.as_slice() {
            [Value::Str(module), Value::Str(name)] => Ok(ClassName::new(module, name)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn from_pickle(v: &Value) -> Result<ObjValue, ObjectError> {
    let unsupported = |what: &str| Err(ObjectError::Unsupported(what.to_owned()));
    Ok(match v {
        Value::None => ObjValue::None,
        Value::Bool(b) => ObjValue::Bool(*b),
        Value::Int(i) => ObjValue::Int(*i),
        Value::BigInt(_) => return unsupported("an int outside the 64-bit range"),
        Value::Float(f) => ObjValue::Float(*f),
        Value::Str(s) => ObjValue::Str(s.clone()),
        Value::Bytes(b) => ObjValue::Bytes(b.clone()),
        Value::List(items) => ObjValue::List(items.iter().map(from_pickle).collect::<Result<_, _>>()?),
        Value::Tuple(items) => ObjValue::Tuple(items.iter().map(from_pickle).collect::<Result<_, _>>()?),
        Value::Dict(pairs) => {
            let mut d = BTreeMap::new();
            for (k, v) in pairs {
                let Value::Str(k) = k else {
                    return Err(ObjectError::Unsupported(format!("a dict key of type {}", k.type_name())));
                };
                d.insert(k.clone(), from_pickle(v)?);
            }
            ObjValue::Dict(d)
        }
        Value::PersistentId(pid) => ObjValue::Ref(reference(pid)?),
        other => return Err(ObjectError::Unsupported(format!("a value of type {}", other.type_name()))),
    })
}

/// A persistent id as ZODB's `ObjectReader` reads it: `(oid, class)` or a bare `oid`. The
/// list forms (weak and cross-database references) are not mapped.
fn reference(pid: &Value) -> Result<ObjRef, ObjectError> {
    let oid_of = |v: &Value| {
        v.as_id().ok_or_else(|| ObjectError::Format(format!("persistent id holds a {} as oid", v.type_name())))
    };
    match pid {
        Value::Bytes(_) => Ok(ObjRef { oid: oid_of(pid)?, class: None }),
        Value::Tuple(items) => match items.as_slice() {
            [oid, Value::Global { module, name }] => {
                Ok(ObjRef { oid: oid_of(oid)?, class: Some(ClassName::new(module, name)) })
            }
            [oid, Value::None] => Ok(ObjRef { oid: oid_of(oid)?, class: None }),
            _ => Err(ObjectError::Format("persistent id tuple is not (oid, class)".into())),
        },
        Value::List(_) => Err(ObjectError::Unsupported("weak or cross-database references".into())),
        other => Err(ObjectError::Format(format!("persistent id is a {}", other.type_name()))),
    }
}

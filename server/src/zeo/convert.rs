//! Conversions between wire values and storage types, and the mapping of storage errors onto the
//! exact ZODB exception classes and payloads ZEO clients decode (protocol spec section 2.4).

use zeo_proto::errors;
use zeo_proto::pickle::{self, Value};

use crate::storage::{HistoryEntry, StorageError, UndoEntry};

/// An error reply: dotted class name and payload (as `zeo_proto::errors` builds them, byte for
/// byte what the reference server sends).
pub type WireError = errors::ErrorReply;

/// An exception whose payload is its args tuple.
pub fn exception(class: &str, args: Vec<Value>) -> WireError {
    errors::other(class, args)
}

/// The wire form of a storage error.
pub fn storage_error(e: &StorageError) -> WireError {
    match e {
        StorageError::PosKey { oid } => errors::pos_key(*oid),
        StorageError::Conflict { oid, committed, expected } => errors::conflict(*oid, *committed, *expected, None),
        StorageError::ReadConflict { oid, committed, expected } => {
            errors::read_conflict(*oid, *committed, *expected, None)
        }
        StorageError::ReadOnly => errors::read_only(),
        StorageError::Transaction(msg) => errors::storage_transaction(msg),
        StorageError::MultipleUndo(errs) => {
            let errs: Vec<([u8; 8], &str)> = errs.iter().map(|(o, r)| (*o, r.as_str())).collect();
            errors::multiple_undo(&errs)
        }
        StorageError::Undo(msg) => errors::undo_error(msg, None),
        StorageError::PackMissingObject { oid } => errors::key_error(Value::Bytes(oid.to_vec())),
        other => errors::other(other.zodb_name(), vec![Value::Str(other.to_string())]),
    }
}

pub fn read_only() -> WireError {
    errors::read_only()
}

pub fn transaction_error(msg: &str) -> WireError {
    errors::storage_transaction(msg)
}

pub fn value_error(msg: &str) -> WireError {
    errors::value_error(msg)
}

pub fn key_error(key: Value) -> WireError {
    errors::key_error(key)
}

pub fn type_error(msg: &str) -> WireError {
    errors::type_error(msg)
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn b(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
}

/// An argument that must be 8 bytes (oid or tid). An 8-character str (Python 2 style, and some ZODB
/// tests) is taken as its latin-1 bytes, as Python's server would compare it.
pub fn id_arg(v: Option<&Value>, what: &str) -> Result<[u8; 8], WireError> {
    let err = || type_error(&format!("{what} must be 8 bytes"));
    match v {
        Some(Value::Str(s)) => {
            let bytes: Vec<u8> =
                s.chars().map(|c| u8::try_from(u32::from(c))).collect::<Result<_, _>>().map_err(|_| err())?;
            bytes.try_into().map_err(|_| err())
        }
        other => other.and_then(Value::as_id).ok_or_else(err),
    }
}

/// Bytes or str (ZEO 5.0 clients sent str for user/description) as bytes.
pub fn bytes_arg(v: Option<&Value>) -> Vec<u8> {
    match v {
        Some(Value::Bytes(b)) => b.clone(),
        Some(Value::Str(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// A dict as Python's server would rebuild it from the wire: a plain dict, or a dict subclass
/// pickled as `builtins.dict` + REDUCE with its items (ZODB stores `dumps(loads(x))`).
pub fn as_plain_dict(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(items) => Some(items.clone()),
        Value::Object { class, args, dict_items, .. } => {
            let is_dict = matches!(&**class, Value::Global { module, name }
                if (module == "builtins" || module == "__builtin__") && name == "dict");
            if !is_dict {
                return None;
            }
            let mut items: Vec<(Value, Value)> = match args.as_seq().and_then(|a| a.first()) {
                Some(Value::Dict(d)) => d.clone(),
                Some(seq) => seq
                    .as_seq()?
                    .iter()
                    .map(|pair| match pair.as_seq() {
                        Some([k, v]) => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
                None => Vec::new(),
            };
            items.extend(dict_items.iter().cloned());
            Some(items)
        }
        _ => None,
    }
}

/// The decoded extension dict of a transaction (empty dict when none or undecodable).
pub fn extension_dict(ext: &[u8]) -> Vec<(Value, Value)> {
    if ext.is_empty() {
        return Vec::new();
    }
    match pickle::decode(ext, &pickle::DecodeOptions::records()) {
        Ok((Value::Dict(items), _)) => items,
        _ => Vec::new(),
    }
}

fn set_key(d: &mut Vec<(Value, Value)>, key: &str, value: Value) {
    match d.iter_mut().find(|(k, _)| k.as_str() == Some(key)) {
        Some(slot) => slot.1 = value,
        None => d.push((s(key), value)),
    }
}

/// A `history` entry: the extension keys, then the standard keys (which win), as FileStorage builds it.
pub fn history_dict(h: &HistoryEntry) -> Value {
    let mut d = extension_dict(&h.extension);
    set_key(&mut d, "time", Value::Float(h.time));
    set_key(&mut d, "user_name", b(&h.user));
    set_key(&mut d, "description", b(&h.description));
    set_key(&mut d, "tid", b(&h.tid));
    set_key(&mut d, "size", Value::Int(i64::try_from(h.size).unwrap_or(i64::MAX)));
    Value::Dict(d)
}

/// An `undoLog` entry: the standard keys, then the extension keys (which win here).
pub fn undo_dict(u: &UndoEntry) -> Value {
    let mut d = vec![
        (s("id"), b(u.id.as_bytes())),
        (s("time"), Value::Float(u.time)),
        (s("user_name"), b(&u.user)),
        (s("size"), Value::Int(i64::try_from(u.size).unwrap_or(i64::MAX))),
        (s("description"), b(&u.description)),
    ];
    for (k, v) in extension_dict(&u.extension) {
        match k.as_str() {
            Some(key) => set_key(&mut d, key, v),
            None => d.push((k, v)),
        }
    }
    Value::Dict(d)
}

/// `undoInfo`'s specification: every key must equal the entry's value. A `ZopeUndo.Prefix` value
/// matches a user name whose '/'-separated path starts with the prefix's path.
pub fn matches_spec(entry: &Value, spec: &[(Value, Value)]) -> bool {
    let Value::Dict(items) = entry else { return false };
    spec.iter().all(|(k, want)| {
        let got = items.iter().find(|(ek, _)| ek == k).map(|(_, v)| v);
        match (got, want) {
            (Some(got), Value::Object { class, state, .. }) if is_prefix_class(class) => {
                let prefix = prefix_value(state.as_deref());
                let have = match got {
                    Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::Str(s) => s.clone(),
                    _ => return false,
                };
                match prefix {
                    Some(want) => {
                        // ZopeUndo compares paths, ignoring the logged user name after the last space.
                        let mut have: Vec<String> = have.split('/').map(str::to_string).collect();
                        if let Some(last) = have.last_mut()
                            && let Some(pos) = last.rfind(' ')
                        {
                            last.truncate(pos);
                        }
                        have.len() >= want.len() && have[..want.len()] == want[..]
                    }
                    None => false,
                }
            }
            (Some(got), want) => got == want || bytes_eq_str(got, want),
            (None, _) => false,
        }
    })
}

fn is_prefix_class(class: &Value) -> bool {
    matches!(class, Value::Global { module, name } if module == "ZopeUndo.Prefix" && name == "Prefix")
}

/// The path elements a `Prefix` was built with (its state is `{'length': n, 'path': [...]}`).
fn prefix_value(state: Option<&Value>) -> Option<Vec<String>> {
    let Value::Dict(items) = state? else { return None };
    items.iter().find_map(|(k, v)| match (k.as_str(), v) {
        (Some("path"), Value::List(parts)) => parts.iter().map(|p| p.as_str().map(str::to_string)).collect(),
        _ => None,
    })
}

fn bytes_eq_str(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bytes(x), Value::Str(y)) | (Value::Str(y), Value::Bytes(x)) => x == y.as_bytes(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_merges_extension_with_standard_keys_winning() {
        let ext = pickle::encode_memo(&Value::Dict(vec![(s("size"), s("ext")), (s("note"), s("n"))]));
        let h = HistoryEntry {
            tid: [1; 8],
            time: 1.5,
            user: b"u".to_vec(),
            description: b"d".to_vec(),
            extension: ext,
            size: 3,
        };
        let Value::Dict(d) = history_dict(&h) else { panic!() };
        assert_eq!(d[0], (s("size"), Value::Int(3)));
        assert_eq!(d[1], (s("note"), s("n")));
        assert_eq!(d.len(), 6);
    }

    #[test]
    fn undo_spec_matching() {
        let entry = Value::Dict(vec![(s("user_name"), b(b"/a/b alice")), (s("description"), b(b"x"))]);
        assert!(matches_spec(&entry, &[(s("description"), s("x"))]));
        assert!(!matches_spec(&entry, &[(s("description"), s("y"))]));
        let prefix = Value::object(
            Value::global("ZopeUndo.Prefix", "Prefix"),
            Value::Tuple(vec![]),
            Some(Value::Dict(vec![(s("length"), Value::Int(2)), (s("path"), Value::List(vec![s(""), s("a")]))])),
        );
        assert!(matches_spec(&entry, &[(s("user_name"), prefix)]));
    }
}

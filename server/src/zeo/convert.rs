//! The wire forms of storage records: the dicts `history`, `undoLog`/`undoInfo` and the iterators
//! answer with (extension keys merged as FileStorage merges them), and `undoInfo`'s specification
//! matching.

use zeo_proto::pickle::{self, Value};

use crate::storage::{HistoryEntry, UndoEntry};

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn b(v: &[u8]) -> Value {
    Value::Bytes(v.to_vec())
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

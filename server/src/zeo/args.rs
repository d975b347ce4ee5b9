//! Reading a method's arguments off the wire, the way Python's server would see them: positional
//! values that may be missing or None, ids that may come as bytes or latin-1 str, dicts that may be
//! dict subclasses. Every handler in `methods/` and `blobs` goes through these.

use zeo_proto::pickle::Value;

use super::errors::{ErrorReply, type_error};

/// Argument `i`, with None treated as missing (ZODB passes None for "use the default").
pub fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i).filter(|v| !v.is_none())
}

/// Argument `i` as an int, or `default` when it is missing, None or not an int.
pub fn int_arg(args: &[Value], i: usize, default: i64) -> i64 {
    arg(args, i).and_then(Value::as_int).unwrap_or(default)
}

/// An argument that must be 8 bytes (oid or tid). An 8-character str (Python 2 style, and some ZODB
/// tests) is taken as its latin-1 bytes, as Python's server would compare it.
pub fn id_arg(v: Option<&Value>, what: &str) -> Result<[u8; 8], ErrorReply> {
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

/// A serial: 8 bytes, or None for "a new object" (ZODB passes None), which is z64.
pub fn serial_arg(v: Option<&Value>) -> Result<[u8; 8], ErrorReply> {
    match v {
        None | Some(Value::None) => Ok([0; 8]),
        Some(v) => id_arg(Some(v), "serial"),
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

/// Oids as the list of byte strings ZEO sends them in (`new_oids`, `getInvalidations`, `vote`'s
/// undone oids, `invalidateTransaction`).
pub fn bytes_list(oids: impl IntoIterator<Item = [u8; 8]>) -> Value {
    Value::List(oids.into_iter().map(|o| Value::Bytes(o.to_vec())).collect())
}

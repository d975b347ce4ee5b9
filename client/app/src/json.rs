//! JSON <-> [`ObjValue`], for the key-value API.
//!
//! JSON maps onto the object layer directly (objects become `str`-keyed dicts, integers that
//! fit in i64 stay ints, other numbers become floats). Values written by Python may hold more
//! than JSON has; they are shown as `{"$bytes": base64}` (bytes), arrays (tuples) and
//! `{"$ref": "0x…"}` (persistent references). Non-finite floats become `null`.

use base64::Engine as _;
use serde_json::{Map, Number, Value as Json};
use zeo_client::objects::ObjValue;

/// The stored form of a JSON document.
pub fn to_obj(v: &Json) -> ObjValue {
    match v {
        Json::Null => ObjValue::None,
        Json::Bool(b) => ObjValue::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => ObjValue::Int(i),
            // u64 above i64::MAX or a fraction: serde_json always has an f64 for it.
            None => ObjValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => ObjValue::Str(s.clone()),
        Json::Array(items) => ObjValue::List(items.iter().map(to_obj).collect()),
        Json::Object(m) => ObjValue::Dict(m.iter().map(|(k, v)| (k.clone(), to_obj(v))).collect()),
    }
}

/// The JSON shown for a stored value (see the module docs for what JSON lacks).
pub fn to_json(v: &ObjValue) -> Json {
    match v {
        ObjValue::None => Json::Null,
        ObjValue::Bool(b) => Json::Bool(*b),
        ObjValue::Int(i) => Json::from(*i),
        ObjValue::Float(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        ObjValue::Str(s) => Json::String(s.clone()),
        ObjValue::Bytes(b) => tagged("$bytes", base64::engine::general_purpose::STANDARD.encode(b)),
        ObjValue::List(items) | ObjValue::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        ObjValue::Dict(d) => Json::Object(d.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        ObjValue::Ref(r) => tagged("$ref", format!("{:#018x}", u64::from_be_bytes(r.oid))),
    }
}

fn tagged(tag: &str, value: String) -> Json {
    let mut m = Map::new();
    m.insert(tag.to_owned(), Json::String(value));
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zeo_client::objects::ObjRef;

    #[test]
    fn json_round_trips() {
        let doc = json!({"a": [1, -2, 2.5, "x", null, true], "b": {"c": u64::MAX}, "big": 9_007_199_254_740_993_i64});
        let back = to_json(&to_obj(&doc));
        assert_eq!(back["a"], doc["a"]);
        assert_eq!(back["big"], doc["big"]);
        assert_eq!(back["b"]["c"].as_f64(), Some(u64::MAX as f64));
    }

    #[test]
    fn python_only_values_are_tagged() {
        assert_eq!(to_json(&ObjValue::Bytes(vec![0, 255])), json!({"$bytes": "AP8="}));
        assert_eq!(to_json(&ObjValue::Ref(ObjRef::list(zeo_client::p64(10)))), json!({"$ref": "0x000000000000000a"}));
        assert_eq!(to_json(&ObjValue::Float(f64::NAN)), Json::Null);
    }
}

//! Codec tests against records written by Python's ZODB 6.4 (`ObjectWriter`, memo included).

use std::collections::BTreeMap;

use zeo_proto::pickle::{DecodeOptions, Value, decode, encode_wire};
use zeo_proto::{p64, refs};

use super::*;

/// The root written by ZODB for `root['l'] = PersistentList(...); root['m'] = PersistentMapping(...)`:
/// the state's reference to `m` reuses the class memoized by the class pickle (`BINGET 0`).
const PY_ROOT: &[u8] = b"\x80\x03cpersistent.mapping\nPersistentMapping\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02}q\x03(X\x01\x00\x00\x00lq\x04C\x08\x00\x00\x00\x00\x00\x00\x00\x01q\x05cpersistent.list\nPersistentList\nq\x06\x86q\x07QX\x01\x00\x00\x00mq\x08C\x08\x00\x00\x00\x00\x00\x00\x00\x02q\th\x00\x86q\nQus.";

/// `PersistentList([1, 'a', b'b', 2.5, None, True, [1, 2], {'k': 'v'}])` written by ZODB.
const PY_LIST: &[u8] = b"\x80\x03cpersistent.list\nPersistentList\nq\x00.\x80\x03}q\x01X\x04\x00\x00\x00dataq\x02]q\x03(K\x01X\x01\x00\x00\x00aq\x04C\x01bq\x05G@\x04\x00\x00\x00\x00\x00\x00N\x88]q\x06(K\x01K\x02e}q\x07X\x01\x00\x00\x00kq\x08X\x01\x00\x00\x00vq\tses.";

fn py_list_items() -> Vec<ObjValue> {
    vec![
        ObjValue::Int(1),
        "a".into(),
        ObjValue::Bytes(b"b".to_vec()),
        ObjValue::Float(2.5),
        ObjValue::None,
        ObjValue::Bool(true),
        ObjValue::List(vec![ObjValue::Int(1), ObjValue::Int(2)]),
        ObjValue::Dict(BTreeMap::from([("k".to_owned(), "v".into())])),
    ]
}

#[test]
fn reads_records_written_by_zodb() {
    let root = decode_record(PY_ROOT).expect("root");
    let expected = BTreeMap::from([
        ("l".to_owned(), ObjRef::list(p64(1)).into()),
        ("m".to_owned(), ObjRef::mapping(p64(2)).into()),
    ]);
    assert_eq!(root, Object::Mapping(expected));
    assert_eq!(decode_record(PY_LIST).expect("list"), Object::List(py_list_items()));
}

#[test]
fn round_trips_and_keeps_references_visible_to_pack() {
    let mut entries = BTreeMap::new();
    entries.insert("list".to_owned(), ObjRef::list(p64(1)).into());
    entries.insert("bare".to_owned(), ObjValue::Ref(ObjRef { oid: p64(7), class: None }));
    entries.insert("nested".to_owned(), ObjValue::Tuple(vec![ObjValue::Int(-5), ObjValue::Int(i64::MAX)]));
    entries.insert("text".to_owned(), "héllo".into());
    for obj in [
        Object::Mapping(entries),
        Object::List(py_list_items()),
        Object::Mapping(BTreeMap::new()),
        Object::Other { class: ClassName::new("app.models", "Page"), state: ObjValue::Dict(BTreeMap::new()) },
    ] {
        let record = encode_record(&obj);
        assert_eq!(decode_record(&record).expect("decode"), obj);
        // Two protocol-3 pickles, back to back.
        let (_, used) = decode(&record, &DecodeOptions::records()).expect("first pickle");
        assert_eq!(&record[..2], b"\x80\x03");
        assert_eq!(&record[used..used + 2], b"\x80\x03");
    }
    let list = Object::List(vec![ObjRef::mapping(p64(3)).into(), ObjValue::List(vec![ObjRef::list(p64(4)).into()])]);
    assert_eq!(refs::references(&encode_record(&list)).expect("refs"), vec![p64(3), p64(4)]);
}

#[test]
fn writes_the_class_as_zodb_does() {
    let record = encode_record(&Object::Mapping(BTreeMap::new()));
    assert!(record.starts_with(b"\x80\x03cpersistent.mapping\nPersistentMapping\n."));
}

#[test]
fn other_class_forms_and_unusual_states() {
    let state = encode_wire(&Value::Dict(vec![(Value::Str("title".into()), Value::Str("x".into()))]));
    let class_forms = [
        Value::Tuple(vec![Value::global("app", "Page"), Value::None]),
        Value::Tuple(vec![Value::Tuple(vec![Value::Str("app".into()), Value::Str("Page".into())]), Value::None]),
        Value::Tuple(vec![Value::global("app", "Page"), Value::Tuple(vec![])]),
    ];
    for meta in class_forms {
        let record = [encode_wire(&meta), state.clone()].concat();
        let Object::Other { class, state } = decode_record(&record).expect("decode") else { panic!("not Other") };
        assert_eq!(class, ClassName::new("app", "Page"));
        assert_eq!(state.as_dict().and_then(|d| d["title"].as_str()), Some("x"));
    }
    // A PersistentMapping whose state has an extra attribute is not a plain Mapping.
    let meta = encode_wire(&Value::global("persistent.mapping", "PersistentMapping"));
    let odd = encode_wire(&Value::Dict(vec![(Value::Str("data".into()), Value::List(vec![]))]));
    assert!(matches!(decode_record(&[meta.clone(), odd].concat()), Ok(Object::Other { .. })));
}

#[test]
fn refuses_what_it_cannot_represent() {
    let meta = encode_wire(&Value::global("persistent.mapping", "PersistentMapping"));
    let with =
        |data: Value| [meta.clone(), encode_wire(&Value::Dict(vec![(Value::Str("data".into()), data)]))].concat();
    let int_key = with(Value::Dict(vec![(Value::Int(1), Value::None)]));
    assert!(matches!(decode_record(&int_key), Err(ObjectError::Unsupported(_))));
    let weak = with(Value::PersistentId(Box::new(Value::List(vec![Value::Str("w".into())]))));
    assert!(matches!(decode_record(&weak), Err(ObjectError::Unsupported(_))));
    let set = with(Value::Set(vec![]));
    assert!(matches!(decode_record(&set), Err(ObjectError::Unsupported(_))));
    let args =
        [encode_wire(&Value::Tuple(vec![Value::global("a", "B"), Value::Tuple(vec![Value::Int(1)])])), meta].concat();
    assert!(matches!(decode_record(&args), Err(ObjectError::Unsupported(_))));
    assert!(matches!(decode_record(b""), Err(ObjectError::Pickle(_))));
    assert!(matches!(decode_record(&encode_wire(&Value::Int(1))), Err(ObjectError::Format(_))));
}

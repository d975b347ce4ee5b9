//! Byte-exact comparisons with what msgpack-python and ZEO's own encoders write and read.

use super::golden_data::{ERROR_CASES, MESSAGE_CASES, MSGPACK_CASES, MSGPACK_DECODE_CASES, MSGPACK_REJECT_CASES};
use super::*;
use crate::errors::{self, ErrorReply};
use crate::message::{self, Encoding, Message};
use crate::{msgpack, p64};

/// The error reply our constructors build for each case of `gen_wire_golden.py`'s
/// `error_cases()`, with the same arguments as the Python exception there.
pub(super) fn error_reply(name: &str) -> ErrorReply {
    const TXN_ID: i64 = 140_567_705_425_168;
    match name {
        "conflict" => errors::conflict(p64(1), p64(3), p64(2), Some("persistent.mapping.PersistentMapping")),
        "conflict no class" => errors::conflict(p64(1), p64(3), p64(2), None),
        "read_conflict" => errors::read_conflict(p64(1), p64(3), p64(2), None),
        "pos_key" => errors::pos_key(crate::Z64),
        "read_only" => errors::read_only(),
        "storage_transaction" => {
            errors::storage_transaction("Multiple simultaneous tpc_begin requests from the same client.")
        }
        "storage_transaction_args" => errors::storage_transaction_args(vec![Value::None, Value::Int(TXN_ID)]),
        "multiple_undo" => errors::multiple_undo(&[(p64(1), "no"), (p64(2), "nope")]),
        "undo_error" => errors::undo_error("Some data were modified by a later transaction", Some(p64(1))),
        "undo_error no oid" => errors::undo_error("non-undoable transaction", None),
        "key_error" => errors::key_error(Value::Int(3)),
        "value_error" => errors::value_error("unknown storage: 2"),
        "type_error" => errors::type_error("bad"),
        "storage_error" => errors::storage_error("s"),
        "storage_system_error" => errors::storage_system_error("Couldn't save truncated data"),
        "storage_server_error" => errors::storage_server_error("Versions aren't supported."),
        "client_disconnected" => errors::client_disconnected("closed"),
        "not_implemented" => errors::not_implemented(),
        "exception" => errors::exception("Out-of-order request"),
        other => panic!("no constructor for error case {other}"),
    }
}

#[test]
fn msgpack_encoder_matches_python() {
    for (name, value, packed, decoded) in MSGPACK_CASES {
        let data = msgpack::encode(&value()).unwrap_or_else(|e| panic!("{name}: {e}"));
        packed.check(&data, name);
        let back = msgpack::decode(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same(&back, &decoded()), "{name}: {back:?}");
        if let Some(python) = packed.bytes() {
            assert_eq!(python, data, "{name}");
        }
    }
}

#[test]
fn msgpack_decoder_reads_what_python_reads() {
    for (hex, expected) in MSGPACK_DECODE_CASES {
        let value = msgpack::decode(&h(hex)).unwrap_or_else(|e| panic!("{hex}: {e}"));
        assert!(same(&value, &expected()), "{hex}: {value:?}");
    }
}

#[test]
fn msgpack_decoder_rejects_what_python_rejects() {
    for (hex, python_error) in MSGPACK_REJECT_CASES {
        let result = msgpack::decode(&h(hex));
        assert!(result.is_err(), "{hex} (Python: {python_error}) decoded to {result:?}");
    }
}

/// ZEO's encoders' messages decode to what ZEO's decoders see, and encode back to the same
/// bytes, in both encodings.
#[test]
fn messages_match_zeo() {
    for (name, pickle_hex, pickle_value, msgpack_hex, msgpack_value) in MESSAGE_CASES {
        for (enc, hex, value) in
            [(Encoding::Pickle, pickle_hex, pickle_value), (Encoding::Msgpack, msgpack_hex, msgpack_value)]
        {
            let msg = message::decode(&h(hex), enc).unwrap_or_else(|e| panic!("{name} {enc:?}: {e}"));
            assert!(same(&msg.clone().into_value(), &value()), "{name} {enc:?}: {msg:?}");
            assert_eq!(Message::from_value(value()).as_ref(), Ok(&msg), "{name} {enc:?}");
            let data = message::encode(&msg, enc).unwrap_or_else(|e| panic!("{name} {enc:?}: {e}"));
            assert_eq!(to_hex(&data), *hex, "{name} {enc:?}");
        }
    }
}

/// Our error replies are byte for byte what the reference server sends for the same
/// exception (for `multiple_undo`, what ZEO's encoders write for our payload).
#[test]
fn error_replies_match_the_reference_server() {
    assert_eq!(ERROR_CASES.len(), 19);
    for (name, msgid, pickle_hex, msgpack_hex) in ERROR_CASES {
        let msg = Message::error(msgid(), error_reply(name));
        for (enc, hex) in [(Encoding::Pickle, pickle_hex), (Encoding::Msgpack, msgpack_hex)] {
            let data = message::encode(&msg, enc).unwrap_or_else(|e| panic!("{name} {enc:?}: {e}"));
            assert_eq!(to_hex(&data), *hex, "{name} {enc:?}");
            let back = message::decode(&data, enc).unwrap_or_else(|e| panic!("{name} {enc:?}: {e}"));
            let expected = if enc == Encoding::Msgpack { tuples(msg.to_value()) } else { msg.to_value() };
            assert!(same(&back.into_value(), &expected), "{name} {enc:?}");
        }
    }
}

/// The value as msgpack decodes it (`use_list=False`): every list a tuple.
fn tuples(v: Value) -> Value {
    match v {
        Value::List(items) | Value::Tuple(items) => Value::Tuple(items.into_iter().map(tuples).collect()),
        Value::Dict(pairs) => Value::Dict(pairs.into_iter().map(|(k, v)| (tuples(k), tuples(v))).collect()),
        other => other,
    }
}

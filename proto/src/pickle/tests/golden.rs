//! Byte-exact comparisons with what Python writes and reads.

use super::golden_data::{DECODE_CASES, ENCODE_CASES};
use super::*;

/// Both encoders reproduce Python byte for byte, and both encodings decode back to the value.
#[test]
fn encoders_match_python() {
    for (name, value, wire, memo) in ENCODE_CASES {
        let value = value();
        assert_eq!(to_hex(&encode_wire(&value)), *wire, "encode_wire: {name}");
        assert_eq!(to_hex(&encode_memo(&value)), *memo, "encode_memo: {name}");
        for hex in [wire, memo] {
            let data = h(hex);
            let (decoded, used) = decode(&data, &DecodeOptions::records()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(same(&decoded, &value), "decode {name}: {decoded:?}");
            assert_eq!(used, data.len(), "{name}");
        }
    }
}

/// Pickles of protocols 0–5, Python 2 string opcodes, NEWOBJ and set opcodes decode to the
/// value Python sees.
#[test]
fn decoder_reads_python_pickles() {
    for (name, hex, expected) in DECODE_CASES {
        let data = h(hex);
        let (decoded, used) = decode(&data, &DecodeOptions::records()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same(&decoded, &expected()), "{name}: {decoded:?}");
        assert_eq!(used, data.len(), "{name}");
    }
}

fn msg(msgid: Value, flag: Value, name: &str, args: Value) -> Value {
    Value::Tuple(vec![msgid, flag, name.into(), args])
}

/// The test vectors of the protocol spec, section 2.5 (captured from the real encoder).
#[test]
fn spec_section_2_5_vectors() {
    let z64 = Value::from(crate::Z64);
    let tid = Value::Bytes(h("040d2a9043ad2911"));
    let cases = [
        (
            msg(
                Value::Int(1),
                Value::Bool(false),
                "register",
                Value::Tuple(vec!["1".into(), Value::Bool(false)]),
            ),
            "8003284b0189580800000072656769737465725801000000318986742e".to_owned(),
        ),
        (
            msg(Value::Int(1), Value::Int(0), ".reply", z64.clone()),
            "8003284b014b0058060000002e7265706c7943080000000000000000742e".to_owned(),
        ),
        (
            msg(
                Value::Int(0),
                Value::Bool(true),
                "invalidateTransaction",
                Value::Tuple(vec![tid.clone(), Value::List(vec![z64.clone()])]),
            ),
            "8003284b00885815000000696e76616c69646174655472616e73616374696f6e4308040d2a9043ad29115d430800000000000000006186742e".to_owned(),
        ),
        (
            msg(
                Value::Tuple(vec![z64.clone(), tid.clone()]),
                Value::Int(2),
                ".reply",
                Value::Tuple(vec![
                    "ZODB.POSException.POSKeyError".into(),
                    Value::Tuple(vec![z64.clone()]),
                ]),
            ),
            [
                "800328",
                "4308",
                "0000000000000000",
                "4308",
                "040d2a9043ad2911",
                "86",
                "4b02",
                "5806000000",
                &to_hex(b".reply"),
                "581d000000",
                &to_hex(b"ZODB.POSException.POSKeyError"),
                "4308",
                "0000000000000000",
                "85",
                "86",
                "74",
                "2e",
            ]
            .concat(),
        ),
        (
            msg(Value::Int(-1), Value::Int(0), ".reply", Value::None),
            "8003284affffffff4b0058060000002e7265706c794e742e".to_owned(),
        ),
    ];
    for (value, hex) in cases {
        assert_eq!(to_hex(&encode_wire(&value)), hex);
        let (decoded, _) = decode(&h(&hex), &DecodeOptions::wire()).expect("decodes");
        assert_eq!(decoded, value);
    }
}

/// NaN has no golden vector (it never equals itself in Python either); its bits survive.
#[test]
fn nan_bits_round_trip() {
    let nan = Value::Float(f64::from_bits(0x7ff8_0000_0000_0001));
    let data = encode_wire(&nan);
    assert_eq!(to_hex(&data), "800347 7ff8000000000001 2e".replace(' ', ""));
    let (decoded, _) = decode(&data, &DecodeOptions::wire()).expect("decodes");
    assert!(same(&decoded, &nan));
}

/// Sets have no protocol-3 opcode: they are written as `builtins.set([...])`, which decodes
/// as the object form, like Python's own protocol-3 pickles of sets.
#[test]
fn sets_encode_as_builtins_calls() {
    let set = Value::Set(vec![Value::Int(1), Value::Int(2)]);
    let expected = Value::object(
        Value::global("builtins", "set"),
        Value::Tuple(vec![Value::List(vec![Value::Int(1), Value::Int(2)])]),
        None,
    );
    assert_eq!(encode_wire(&set), encode_wire(&expected));
    assert_eq!(encode_memo(&set), encode_memo(&expected));
    let frozen = Value::FrozenSet(vec![]);
    let (decoded, _) = decode(&encode_wire(&frozen), &DecodeOptions::wire()).expect("decodes");
    assert_eq!(
        decoded,
        Value::object(Value::global("builtins", "frozenset"), Value::Tuple(vec![Value::List(vec![])]), None)
    );
}

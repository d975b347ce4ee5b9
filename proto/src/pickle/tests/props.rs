//! Property tests: round trips through both encoders, and no panics on arbitrary input.

use proptest::prelude::*;

use super::*;
use crate::fuzzing::{apply_edits, edits};

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-70_000i64..70_000).prop_map(Value::Int),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::int_from_le_bytes(&b)),
        any::<f64>().prop_map(Value::Float),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bytes),
        ".{0,20}".prop_map(Value::Str),
        prop::sample::select(vec!["", "a", "\u{e9}", "\u{20ac}", "x"]).prop_map(Value::from),
        prop::sample::select(vec![vec![], vec![0u8], vec![0xffu8]]).prop_map(Value::Bytes),
        (prop::sample::select(vec!["builtins", "m.sub", "copy_reg"]), prop::sample::select(vec!["C", "f", "set"]))
            .prop_map(|(m, n)| Value::global(m, n)),
    ]
}

/// Values of every kind the encoders can round-trip. Sets are left out: protocol 3 writes them
/// as `builtins.set(...)` calls (see `sets_encode_as_builtins_calls`).
pub(super) fn arb_value() -> impl Strategy<Value = Value> {
    arb_scalar().prop_recursive(5, 96, 12, |inner| {
        let items = prop::collection::vec(inner.clone(), 0..12);
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..6);
        prop_oneof![
            items.clone().prop_map(Value::Tuple),
            items.clone().prop_map(Value::List),
            pairs.clone().prop_map(Value::Dict),
            inner.clone().prop_map(|v| Value::PersistentId(Box::new(v))),
            (inner.clone(), items.clone(), prop::option::of(inner.clone()), items, pairs).prop_map(
                |(class, args, state, list_items, dict_items)| {
                    Value::Object {
                        class: Box::new(class),
                        args: Box::new(Value::Tuple(args)),
                        state: state.map(Box::new),
                        list_items,
                        dict_items,
                    }
                }
            ),
        ]
    })
}

fn round_trips(value: &Value, data: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, used) =
        decode(data, &DecodeOptions::records()).map_err(|e| TestCaseError::fail(format!("{e}: {}", to_hex(data))))?;
    prop_assert!(same(&decoded, value), "{decoded:?}");
    prop_assert_eq!(used, data.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wire_encoding_round_trips(value in arb_value()) {
        round_trips(&value, &encode_wire(&value))?;
    }

    #[test]
    fn memo_encoding_round_trips(value in arb_value()) {
        round_trips(&value, &encode_memo(&value))?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&data, &DecodeOptions::wire());
        let _ = decode(&data, &DecodeOptions::records());
        let _ = crate::refs::references(&data);
    }

    #[test]
    fn mutated_pickles_never_panic(
        value in arb_value(),
        memo in any::<bool>(),
        edits in edits(),
    ) {
        let mut data = if memo { encode_memo(&value) } else { encode_wire(&value) };
        apply_edits(&mut data, edits);
        let _ = decode(&data, &DecodeOptions::wire());
        let _ = decode(&data, &DecodeOptions::records());
        let _ = crate::refs::references(&data);
    }
}

//! Tests of the pickle codec: golden vectors from Python, hand-made hostile pickles, property
//! tests and a bounded mutation fuzzer.

use super::*;

mod decoding;
mod fuzz;
mod golden;
mod golden_data;
mod props;

/// Hex to bytes; test data only, so panicking on bad hex is fine.
pub(crate) fn h(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn range_items(n: i64) -> Vec<Value> {
    (0..n).map(Value::Int).collect()
}

fn range_list(n: i64) -> Value {
    Value::List(range_items(n))
}

fn range_dict(n: i64) -> Value {
    Value::Dict((0..n).map(|i| (Value::Int(i), Value::Int(i))).collect())
}

fn str_dict(n: i64) -> Value {
    Value::Dict(
        (0..n)
            .map(|i| (Value::Str(format!("k{i}")), Value::Str(format!("v{i}"))))
            .collect(),
    )
}

/// Every pickle in the golden data: a seed corpus for the fuzzers.
pub(crate) fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (_, _, wire, memo) in golden_data::ENCODE_CASES {
        out.push(h(wire));
        out.push(h(memo));
    }
    for (_, data, _) in golden_data::DECODE_CASES {
        out.push(h(data));
    }
    out
}

/// Structural equality with floats compared by bits, so NaN equals itself.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    fn all(a: &[Value], b: &[Value]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
    }
    fn pairs(a: &[(Value, Value)], b: &[(Value, Value)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
    }
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Tuple(x), Value::Tuple(y))
        | (Value::List(x), Value::List(y))
        | (Value::Set(x), Value::Set(y))
        | (Value::FrozenSet(x), Value::FrozenSet(y)) => all(x, y),
        (Value::Dict(x), Value::Dict(y)) => pairs(x, y),
        (Value::PersistentId(x), Value::PersistentId(y)) => same(x, y),
        (
            Value::Object {
                class: c1,
                args: a1,
                state: s1,
                list_items: l1,
                dict_items: d1,
            },
            Value::Object {
                class: c2,
                args: a2,
                state: s2,
                list_items: l2,
                dict_items: d2,
            },
        ) => {
            same(c1, c2)
                && same(a1, a2)
                && match (s1, s2) {
                    (Some(x), Some(y)) => same(x, y),
                    (None, None) => true,
                    _ => false,
                }
                && all(l1, l2)
                && pairs(d1, d2)
        }
        _ => a == b,
    }
}

//! `BTrees.Length.Length`: its state is its value, and `_p_resolveConflict(old, s1, s2)` is
//! `s1 + s2 - old` (committed plus new minus old). So concurrent `change(delta)` calls always
//! merge.
//!
//! Python evaluates that with its own arithmetic, and so do we: ints of any size exactly,
//! floats in double precision, an int meeting a float converted to the nearest float first
//! (ties to even; too large is an `OverflowError`).

use num_bigint::BigInt;
use zeo_proto::pickle::{Graph, Obj, ObjId};

/// Why a Length did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LengthFailure {
    /// A state that is not a number: Python's `+` raises `TypeError`.
    NotANumber(&'static str),
    /// An int too large for a float, added to a float: Python raises `OverflowError`.
    TooLarge,
}

enum Number {
    Int(BigInt),
    Float(f64),
}

fn number(obj: &Obj) -> Result<Number, LengthFailure> {
    match obj {
        Obj::Bool(b) => Ok(Number::Int(BigInt::from(u8::from(*b)))),
        Obj::Int(i) => Ok(Number::Int(BigInt::from(*i))),
        Obj::BigInt(b) => Ok(Number::Int(BigInt::from_signed_bytes_le(b))),
        Obj::Float(f) => Ok(Number::Float(*f)),
        other => Err(LengthFailure::NotANumber(crate::family::type_name(other))),
    }
}

/// Python's `float(i)`: the nearest double, ties to even; `None` past the largest double
/// (Python raises `OverflowError`).
fn to_float(i: &BigInt) -> Option<f64> {
    let magnitude = i.magnitude();
    let bits = magnitude.bits();
    let value = if bits <= 53 {
        u64::try_from(magnitude).ok()? as f64
    } else {
        // Keep 54 bits (53 and a rounding bit) and whether anything below them is set.
        let shift = bits - 54;
        let top = u64::try_from(magnitude >> shift).ok()?;
        let sticky = magnitude.trailing_zeros().is_some_and(|z| z < shift);
        let mut mantissa = top >> 1;
        if top & 1 == 1 && (sticky || mantissa & 1 == 1) {
            mantissa += 1;
        }
        let exponent = i32::try_from(shift + 1).ok()?;
        mantissa as f64 * 2f64.powi(exponent)
    };
    if value.is_infinite() {
        return None;
    }
    Some(if i.sign() == num_bigint::Sign::Minus { -value } else { value })
}

fn add(a: Number, b: Number, negate_b: bool) -> Result<Number, LengthFailure> {
    Ok(match (a, b) {
        (Number::Int(x), Number::Int(y)) => Number::Int(if negate_b { x - y } else { x + y }),
        (x, y) => {
            let as_float = |n: Number| match n {
                Number::Int(i) => to_float(&i).ok_or(LengthFailure::TooLarge),
                Number::Float(f) => Ok(f),
            };
            let (x, y) = (as_float(x)?, as_float(y)?);
            Number::Float(if negate_b { x - y } else { x + y })
        }
    })
}

/// `committed + new - old`, added to the graph.
pub(crate) fn resolve(graph: &mut Graph, [old, committed, new]: [ObjId; 3]) -> Result<ObjId, LengthFailure> {
    let get = |id: ObjId| graph.get(id).unwrap_or(&Obj::None);
    let (old, committed, new) = (number(get(old))?, number(get(committed))?, number(get(new))?);
    let result = add(add(committed, new, false)?, old, true)?;
    let obj = match result {
        Number::Float(f) => Obj::Float(f),
        Number::Int(i) => match i64::try_from(&i) {
            Ok(small) => Obj::Int(small),
            Err(_) => Obj::BigInt(i.to_signed_bytes_le()),
        },
    };
    Ok(graph.add(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(old: Obj, committed: Obj, new: Obj) -> Result<Obj, LengthFailure> {
        let mut g = Graph::new();
        let ids = [old, committed, new].map(|o| g.add(o));
        let out = resolve(&mut g, ids)?;
        Ok(g.get(out).cloned().unwrap_or(Obj::None))
    }

    #[test]
    fn increments_add_up() {
        assert_eq!(run(Obj::Int(10), Obj::Int(12), Obj::Int(9)), Ok(Obj::Int(11)));
        assert_eq!(run(Obj::Bool(true), Obj::Int(1), Obj::Bool(true)), Ok(Obj::Int(1)));
        let max = Obj::Int(i64::MAX);
        assert_eq!(
            run(Obj::Int(0), max.clone(), max),
            Ok(Obj::BigInt(vec![0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]))
        );
        let big = Obj::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(run(big.clone(), big.clone(), Obj::Int(5)), Ok(big.clone()).map(|_| Obj::Int(5)));
    }

    #[test]
    fn floats_follow_python_arithmetic() {
        assert_eq!(run(Obj::Float(0.1), Obj::Float(0.2), Obj::Float(0.3)), Ok(Obj::Float((0.2 + 0.3) - 0.1)));
        assert_eq!(run(Obj::Int(1), Obj::Float(0.5), Obj::Int(2)), Ok(Obj::Float(1.5)));
        // 2^60 + 1 is not a double: it rounds to 2^60 before the float arithmetic.
        assert_eq!(
            run(Obj::Int(1), Obj::Float(0.5), Obj::Int((1 << 60) + 1)),
            Ok(Obj::Float(1_152_921_504_606_846_976.0))
        );
        // Ties go to the even mantissa: 2^53 + 1 rounds down, 2^53 + 3 up.
        assert_eq!(run(Obj::Int(0), Obj::Float(0.0), Obj::Int((1 << 53) + 1)), Ok(Obj::Float(9_007_199_254_740_992.0)));
        assert_eq!(run(Obj::Int(0), Obj::Float(0.0), Obj::Int((1 << 53) + 3)), Ok(Obj::Float(9_007_199_254_740_996.0)));
        let huge = Obj::BigInt([vec![0; 130], vec![1]].concat());
        assert_eq!(run(Obj::Int(0), Obj::Float(0.0), huge), Err(LengthFailure::TooLarge));
    }

    #[test]
    fn other_states_are_not_numbers() {
        assert_eq!(run(Obj::None, Obj::Int(1), Obj::Int(1)), Err(LengthFailure::NotANumber("None")));
        assert_eq!(run(Obj::Int(1), Obj::Str("1".into()), Obj::Int(1)), Err(LengthFailure::NotANumber("str")));
    }
}

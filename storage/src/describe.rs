//! Renderings of stored data for tools and tests: the class name of a ZODB record, a transaction as
//! JSON, and the canonical "everything a client can observe" document that the interop tests compare
//! with the same document produced by Python's FileStorage (`tests/python/describe.py`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};
use zeo_proto::pickle::{self, Value};

use crate::{FileStorage, MAXTID, StorageError, TransactionRecord, Z64};

/// `module.name` of a ZODB record's class, from its first pickle (`GLOBAL` or `(GLOBAL, args)`).
pub fn class_name(record: &[u8]) -> Option<String> {
    let (v, _) = pickle::decode(record, &pickle::DecodeOptions::records()).ok()?;
    let g = match &v {
        Value::Tuple(items) => items.first()?,
        other => other,
    };
    match g {
        Value::Global { module, name } => Some(format!("{module}.{name}")),
        _ => None,
    }
}

/// A transaction with its records, as one JSON object (for `zeoctl dump --json`).
pub fn transaction_json(t: &TransactionRecord) -> Json {
    json!({
        "tid": hex::encode(t.tid),
        "status": (t.status as char).to_string(),
        "user": String::from_utf8_lossy(&t.user),
        "description": String::from_utf8_lossy(&t.description),
        "extension": extension_canon(&t.extension),
        "offset": t.pos,
        "records": t.records.iter().map(|r| json!({
            "oid": hex::encode(r.oid),
            "tid": hex::encode(r.tid),
            "size": r.data.as_ref().map(|d| d.len()),
            "class": r.data.as_deref().and_then(class_name),
            "data_txn": r.data_txn.map(hex::encode),
        })).collect::<Vec<_>>(),
    })
}

/// The decoded extension dict in the canonical tagged form (`{"dict": []}` when empty).
pub fn extension_canon(ext: &[u8]) -> Json {
    if ext.is_empty() {
        return json!({"dict": []});
    }
    match pickle::decode(ext, &pickle::DecodeOptions::records()) {
        Ok((v, _)) => canon(&v),
        Err(e) => json!({"other": format!("undecodable extension: {e}")}),
    }
}

fn canon(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!({"bool": b}),
        Value::Int(i) => json!({"int": i.to_string()}),
        Value::BigInt(le) => json!({"int": bigint_decimal(le)}),
        Value::Float(f) => json!({"float": python_float_repr(*f)}),
        Value::Str(s) => json!({"str": s}),
        Value::Bytes(b) => json!({"bytes": hex::encode(b)}),
        Value::List(items) => json!({"list": items.iter().map(canon).collect::<Vec<_>>()}),
        Value::Tuple(items) => json!({"tuple": items.iter().map(canon).collect::<Vec<_>>()}),
        Value::Dict(items) => {
            json!({"dict": items.iter().map(|(k, v)| json!([canon(k), canon(v)])).collect::<Vec<_>>()})
        }
        other => json!({"other": format!("{other:?}")}),
    }
}

/// Decimal digits of a little-endian two's-complement integer (pickle LONG1/LONG4).
pub fn bigint_decimal(le: &[u8]) -> String {
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    // Magnitude, big-endian.
    let mut mag: Vec<u8> = le.iter().rev().copied().collect();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (n, carry) = b.overflowing_add(1);
            *b = n;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = u8::try_from(cur / 10).expect("cur < 2560, so cur / 10 < 256");
            rem = cur % 10;
        }
        digits.push(char::from(b'0' + u8::try_from(rem).expect("a remainder of 10 is a digit")));
    }
    if digits.is_empty() {
        digits.push('0');
    }
    if negative {
        digits.push('-');
    }
    digits.iter().rev().collect()
}

/// `repr(float)` as Python 3 writes it (shortest round-trip digits; exponent form outside 1e-4..1e16).
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let sci = format!("{:e}", f); // e.g. "-1.2345e-5", shortest round-trip digits
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let s = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(usize::try_from(-point).unwrap_or(0)))
        } else {
            let p = usize::try_from(point).unwrap_or(0);
            if digits.len() <= p {
                format!("{digits}{}.0", "0".repeat(p - digits.len()))
            } else {
                format!("{}.{}", &digits[..p], &digits[p..])
            }
        };
        format!("{sign}{s}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

fn hx(b: &[u8]) -> Json {
    Json::String(hex::encode(b))
}

fn add(tid: &[u8; 8], n: i64) -> [u8; 8] {
    let v = i128::from(u64::from_be_bytes(*tid)) + i128::from(n);
    u64::try_from(v.clamp(0, i128::from(u64::MAX))).expect("clamped to the u64 range").to_be_bytes()
}

fn err_name(e: &StorageError) -> Json {
    match e {
        StorageError::PosKey { .. } => json!("POSKeyError"),
        other => json!(format!("error: {other}")),
    }
}

/// Everything a client can observe, in the format of `tests/python/describe.py` (see its README).
pub fn describe(st: &FileStorage) -> crate::Result<Json> {
    let mut txns = Vec::new();
    let mut tids = Vec::new();
    let mut records_of: BTreeMap<[u8; 8], Vec<[u8; 8]>> = BTreeMap::new();
    for t in st.iterator(None, None)? {
        let t = t?;
        let recs: Vec<Json> = t
            .records
            .iter()
            .map(|r| {
                records_of.entry(r.oid).or_default().push(r.tid);
                json!({"oid": hx(&r.oid), "tid": hx(&r.tid), "data": r.data.as_deref().map(hx), "data_txn": r.data_txn.as_ref().map(|t| hx(t))})
            })
            .collect();
        tids.push(t.tid);
        txns.push(json!({
            "tid": hx(&t.tid), "status": (t.status as char).to_string(), "user": hx(&t.user),
            "description": hx(&t.description), "extension": extension_canon(&t.extension), "records": recs,
        }));
    }
    let n = tids.len();
    type Bounds = (Option<[u8; 8]>, Option<[u8; 8]>);
    let mut ranges: Vec<Bounds> = vec![(None, None)];
    if n > 7 {
        let (t3, t5, t7) = (tids[3], tids[5], tids[7]);
        ranges.extend([
            (Some(t3), Some(t7)),
            (Some(add(&t3, 1)), Some(add(&t7, -1))),
            (Some(t5), Some(t5)),
            (Some(t7), Some(t3)),
        ]);
    }
    if n > 0 {
        ranges.extend([(Some(tids[n - 1]), None), (None, Some(tids[0])), (Some(add(&tids[n - 1], 1)), None)]);
    }
    ranges.push((None, Some(MAXTID)));
    let mut iter_ranges = Vec::new();
    for (a, b) in ranges {
        let got: Vec<Json> =
            st.iterator(a.as_ref(), b.as_ref())?.map(|t| t.map(|t| hx(&t.tid))).collect::<Result<_, _>>()?;
        iter_ranges.push(json!({"start": a.map(|t| hx(&t)), "stop": b.map(|t| hx(&t)), "tids": got}));
    }

    let never_stored: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
    let mut oids: BTreeSet<[u8; 8]> = records_of.keys().copied().collect();
    oids.insert(Z64);
    oids.insert(never_stored);
    let mut common: BTreeSet<[u8; 8]> = BTreeSet::new();
    if n > 0 {
        let mut every10: Vec<[u8; 8]> = tids.iter().step_by(10).copied().collect();
        every10.push(tids[n - 1]);
        for t in every10 {
            common.insert(t);
            common.insert(add(&t, 1));
        }
    }
    common.extend([Z64, 1u64.to_be_bytes(), MAXTID]);
    let mut objects = serde_json::Map::new();
    for oid in &oids {
        let own = records_of.get(oid).cloned().unwrap_or_default();
        let mut probes = common.clone();
        for t in &own {
            probes.insert(*t);
            probes.insert(add(t, 1));
        }
        let history = match st.history(oid, 1_000_000) {
            Ok(h) => Json::Array(
                h.iter()
                    .map(|e| json!({"tid": hx(&e.tid), "size": e.size, "user_name": hx(&e.user), "description": hx(&e.description)}))
                    .collect(),
            ),
            Err(e) => err_name(&e),
        };
        let load_before: Vec<Json> = probes
            .iter()
            .map(|p| {
                let r = match st.load_before(oid, p) {
                    Ok(Some(lb)) => {
                        json!({"data": hx(&lb.data), "start": hx(&lb.start), "end": lb.end.map(|t| hx(&t))})
                    }
                    Ok(None) => json!("none"),
                    Err(e) => err_name(&e),
                };
                json!([hx(p), r])
            })
            .collect();
        let load_serial: Vec<Json> = own
            .iter()
            .map(|t| {
                let r = match st.load_serial(oid, t) {
                    Ok(d) => hx(&d),
                    Err(e) => err_name(&e),
                };
                json!([hx(t), r])
            })
            .collect();
        objects.insert(
            hex::encode(oid),
            json!({"history": history, "load_before": load_before, "load_serial": load_serial}),
        );
    }

    let mut iternext = Vec::new();
    let mut next: Option<[u8; 8]> = None;
    loop {
        match st.record_iternext(next.as_ref()) {
            Ok(None) => break,
            Ok(Some(step)) => {
                iternext.push(json!({"oid": hx(&step.oid), "tid": hx(&step.tid), "data": hx(&step.data)}));
                match step.next {
                    Some(n) => next = Some(n),
                    None => break,
                }
            }
            Err(StorageError::PosKey { oid }) => {
                iternext.push(json!({"oid": hx(&oid), "error": "POSKeyError"}));
                match u64::from_be_bytes(oid).checked_add(1) {
                    Some(n) => next = Some(n.to_be_bytes()),
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    let undo_log: Vec<Json> = st
        .undo_log(0, 1_000_000, None)?
        .iter()
        .map(|e| json!({"id": e.id, "user_name": hx(&e.user), "description": hx(&e.description), "size": e.size}))
        .collect();
    Ok(json!({
        "last_tid": hx(&st.last_transaction()),
        "length": st.len(),
        "transactions": txns,
        "iter_ranges": iter_ranges,
        "objects": objects,
        "record_iternext": iternext,
        "undo_log": undo_log,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python_repr() {
        for (f, s) in [
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (1.5e-5, "1.5e-05"),
            (123.0, "123.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (1.2345678901234567, "1.2345678901234567"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn big_integers_in_decimal() {
        assert_eq!(bigint_decimal(&[]), "0");
        assert_eq!(bigint_decimal(&[0xff]), "-1");
        // 2**64 = 00..00 01 00 little-endian with a sign byte.
        assert_eq!(bigint_decimal(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), "18446744073709551616");
        assert_eq!(bigint_decimal(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]), "-18446744073709551616");
    }
}

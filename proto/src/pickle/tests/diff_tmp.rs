//! TEMPORARY differential harness (to be deleted).
use super::*;
use std::io::Write;

fn canon(v: &Value) -> String {
    match v {
        Value::None => "N".into(),
        Value::Bool(b) => format!("b{}", u8::from(*b)),
        Value::Int(i) => format!("i{i}"),
        Value::BigInt(b) => format!("I{}", to_hex(b)),
        Value::Float(f) => format!("f{:016x}", f.to_bits()),
        Value::Bytes(b) => format!("y{}", to_hex(b)),
        Value::Str(s) => format!("s{}", to_hex(s.as_bytes())),
        Value::Tuple(v) => format!("t({})", v.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::List(v) => format!("l({})", v.iter().map(canon).collect::<Vec<_>>().join(",")),
        Value::Dict(v) => {
            format!("d({})", v.iter().map(|(k, x)| format!("{}:{}", canon(k), canon(x))).collect::<Vec<_>>().join(","))
        }
        Value::Set(_) | Value::FrozenSet(_) => "set".into(),
        _ => "obj".into(),
    }
}

#[test]
#[ignore]
fn diff_dump() {
    let n: usize = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(20000);
    let mut corpus = corpus();
    corpus.extend(crate::refs::golden_data::RECORDS.iter().map(|(_, r, _)| h(r)));
    let mut rng = super::fuzz::Rng(12345);
    let mut f = std::fs::File::create("/tmp/diff_in.txt").unwrap();
    for i in 0..n {
        let mut data = corpus[i % corpus.len()].clone();
        if i >= corpus.len() {
            super::fuzz::mutate(&mut rng, &mut data, &corpus);
        }
        let d = match decode(&data, &DecodeOptions::records()) {
            Ok((v, used)) => format!("{}@{used}", canon(&v)),
            Err(e) => format!("ERR:{}", format!("{e:?}").split([' ', '{']).next().unwrap()),
        };
        let r = match crate::refs::references(&data) {
            Ok(o) => o.iter().map(|x| to_hex(x)).collect::<Vec<_>>().join(","),
            Err(e) => format!("ERR:{}", format!("{e:?}").split([' ', '{']).next().unwrap()),
        };
        writeln!(f, "{} {} {}", to_hex(&data), d, r).unwrap();
    }
}

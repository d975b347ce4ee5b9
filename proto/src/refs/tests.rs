use super::golden_data::{PY2_RECORD, RECORDS};
use super::*;
use crate::pickle::tests::{h, to_hex};

fn hexes(oids: &[Oid]) -> Vec<String> {
    oids.iter().map(|o| to_hex(o)).collect()
}

/// Every record of a FileStorage written by ZODB (plain and `(oid, class)` references, an
/// OOBTree, a weak reference, a cross-database reference, references inside non-persistent
/// objects, 300 references with LONG_BINPUT memo slots): same oids, same order, same repeats
/// as `ZODB.serialize.referencesf`.
#[test]
fn matches_referencesf_on_zodb_records() {
    let mut total = 0;
    for (oid, record, expected) in RECORDS {
        let found = references(&h(record)).unwrap_or_else(|e| panic!("record {oid}: {e}"));
        assert_eq!(hexes(&found), *expected, "record {oid}");
        total += found.len();
    }
    assert!(total > 300, "the golden records should hold many references");
}

/// Python 2 records: `str` oids (SHORT_BINSTRING), `(oid, None)`-style tuples whose class comes
/// from the first pickle's memo, and a weak reference that must not be followed.
#[test]
fn matches_referencesf_on_python2_record() {
    let (record, expected) = PY2_RECORD;
    let found = references(&h(record)).expect("decodes");
    assert_eq!(hexes(&found), expected);
    assert_eq!(found.len(), 2);
}

const OID1: &[u8] = b"\x00\x00\x00\x00\x00\x00\x00\x01";

/// Builds `<class pickle><state pickle>` around a state body (the part between PROTO and
/// STOP).
fn record(state: &[u8]) -> Vec<u8> {
    let mut r = b"\x80\x03cm\nC\nq\x00.\x80\x03".to_vec();
    r.extend_from_slice(state);
    r.push(b'.');
    r
}

fn short_bytes(b: &[u8]) -> Vec<u8> {
    let mut v = vec![b'C', b.len() as u8];
    v.extend_from_slice(b);
    v
}

#[test]
fn reference_forms() {
    let oid = short_bytes(OID1);
    let cases: Vec<(Vec<u8>, usize)> = vec![
        // oid
        ([&oid[..], b"Q"].concat(), 1),
        // (oid, class) with the class from the first pickle's memo
        ([&oid[..], b"h\x00\x86Q"].concat(), 1),
        // (oid,)
        ([&oid[..], b"\x85Q"].concat(), 1),
        // ['w', (oid,)]: weak
        ([b"](X\x01\x00\x00\x00w", &oid[..], b"\x85eQ"].concat(), 0),
        // ['n', (db, oid)]: cross-database
        ([b"](X\x01\x00\x00\x00nX\x01\x00\x00\x00d", &oid[..], b"\x86eQ"].concat(), 0),
        // ['m', (db, oid, class)]: cross-database with class
        ([b"](X\x01\x00\x00\x00mX\x01\x00\x00\x00d", &oid[..], b"h\x00\x87eQ"].concat(), 0),
        // [oid]: old weak reference
        ([b"]", &oid[..], b"aQ"].concat(), 0),
        // not 8 bytes, an empty tuple, a non-oid first item: skipped
        ([&short_bytes(b"abc")[..], b"Q"].concat(), 0),
        (b")Q".to_vec(), 0),
        (b"K\x01\x85Q".to_vec(), 0),
        // an ASCII str oid (Python 2 pickles read as text)
        (b"X\x08\x00\x00\x00abcdefghQ".to_vec(), 1),
        // the text PERSID form
        (b"Pabcdefgh\n".to_vec(), 1),
    ];
    for (state, n) in cases {
        let rec = record(&state);
        let found = references(&rec).unwrap_or_else(|e| panic!("{}: {e}", to_hex(&rec)));
        assert_eq!(found.len(), n, "{}", to_hex(&rec));
    }
}

/// Records that no `Value` can represent still give their references: nothing is built.
#[test]
fn unrepresentable_records_still_scan() {
    let oid = short_bytes(OID1);
    let states: [Vec<u8>; 4] = [
        // a list that contains itself
        [b"]q\x01h\x01a", &oid[..], b"Qa"].concat(),
        // an extension code
        [b"(\x82\x01", &oid[..], b"Qt"].concat(),
        // text with a lone surrogate
        [b"(X\x03\x00\x00\x00\xed\xa0\x80", &oid[..], b"Qt"].concat(),
        // 10^20 items if expanded through the memo
        [&oid[..], b"Q", &b"q\x01(h\x01h\x01h\x01h\x01h\x01h\x01h\x01h\x01h\x01h\x01l".repeat(20)].concat(),
    ];
    for state in states {
        let rec = record(&state);
        assert_eq!(references(&rec), Ok(vec![[0, 0, 0, 0, 0, 0, 0, 1]]), "{}", to_hex(&rec));
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for data in [&b""[..], b"x", b"\x80", b"\x80\x03N.", b"\x80\x03N.\x80\x03"] {
        assert!(references(data).is_err(), "{data:?}");
    }
}

/// A damaged second pickle is an error for `references`, but `references_best_effort` keeps
/// what came before the damage, which is what a garbage collector should keep alive.
#[test]
fn best_effort_keeps_references_before_the_damage() {
    let (_, record, expected) = RECORDS.iter().max_by_key(|(_, _, refs)| refs.len()).expect("records");
    let data = h(record);
    let cut = &data[..data.len() / 2];
    assert!(references(cut).is_err());
    let scan = references_best_effort(cut);
    assert!(scan.error.is_some());
    assert!(!scan.oids.is_empty());
    assert_eq!(hexes(&scan.oids), expected[..scan.oids.len()]);
    let full = references_best_effort(&data);
    assert_eq!(full.error, None);
    assert_eq!(hexes(&full.oids), *expected);
}

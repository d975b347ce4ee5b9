//! The property test: random three-way histories built and resolved by the real Python stack
//! (`tests/python/histories.py`: BTrees objects, ZODB's record writer, ZODB's
//! `tryToResolveConflict`), resolved again by us; the records must be equal byte for byte, or
//! both sides must refuse, BTrees conflicts with the same reason and positions.
//!
//! Python is `$ZEORS_PYTHON` (set by `scripts/test`), else `.venv/bin/python` at the repository
//! root. `ZEORS_RESOLVE_CASES` sets the number of histories (default 2000, a few seconds),
//! `ZEORS_RESOLVE_SEED` the seed (default: a fixed one, so a failure reproduces).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use zeo_resolve::{AppClasses, Refusal, Resolver};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let p = std::env::var_os("ZEORS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv/bin/python"));
    assert!(p.exists(), "no Python at {} (run scripts/setup-venv or set ZEORS_PYTHON)", p.display());
    p
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// Runs the helper and returns its JSON lines.
fn histories(args: &[&str]) -> Vec<serde_json::Value> {
    let script = repo().join("resolve/tests/python/histories.py");
    let out = Command::new(python()).arg(&script).args(args).output().expect("the Python helper runs");
    assert!(out.status.success(), "histories.py failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn hex(s: &serde_json::Value) -> Vec<u8> {
    let s = s.as_str().expect("a hex string");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What happened, as one comparable word: "ok", "conflict N", or "refused".
fn outcome_name(python: &serde_json::Value) -> String {
    if python.get("ok").is_some() {
        "ok".into()
    } else if let Some(c) = python.get("conflict") {
        format!("conflict {}", c[3])
    } else {
        "refused".into()
    }
}

/// Compares one case; `Err` describes a mismatch.
fn check(case: &serde_json::Value, resolver: Resolver) -> Result<(), String> {
    let (old, committed, new) = (hex(&case["old"]), hex(&case["committed"]), hex(&case["new"]));
    let ours = resolver.resolve(&old, &committed, &new);
    let python = &case["python"];
    let same = match (&ours, python.get("ok"), python.get("conflict")) {
        (Ok(record), Some(expected), _) => *record == hex(expected),
        (Err(Refusal::Conflict { reason_code, positions, .. }), _, Some(c)) => {
            let expected: Vec<i64> =
                c.as_array().expect("a list").iter().map(|v| v.as_i64().expect("an int")).collect();
            expected
                == [i64::from(positions[0]), i64::from(positions[1]), i64::from(positions[2]), i64::from(*reason_code)]
        }
        // Python failed some other way (a comparison raised, a state was rejected): we must
        // refuse too, and not as a BTrees conflict.
        (Err(Refusal::NotResolvable { .. } | Refusal::Malformed { .. }), None, None) => true,
        _ => false,
    };
    if same {
        return Ok(());
    }
    let ours = match ours {
        Ok(record) => format!("resolved to {}", to_hex(&record)),
        Err(refusal) => format!("{refusal:?}"),
    };
    Err(format!(
        "case {} ({}): python {python}, ours {ours}\n  old {}\n  committed {}\n  new {}",
        case["case"],
        case["shape"],
        case["old"].as_str().unwrap_or_default(),
        case["committed"].as_str().unwrap_or_default(),
        case["new"].as_str().unwrap_or_default()
    ))
}

fn run(args: &[&str], resolver: Resolver) -> BTreeMap<String, usize> {
    let cases = histories(args);
    let mut outcomes = BTreeMap::new();
    let mut mismatches = Vec::new();
    for case in &cases {
        *outcomes.entry(outcome_name(&case["python"])).or_insert(0) += 1;
        if let Err(m) = check(case, resolver) {
            mismatches.push(m);
        }
    }
    eprintln!("{} histories ({}): {outcomes:?}", cases.len(), args.join(" "));
    assert!(
        mismatches.is_empty(),
        "{} of {} histories differ from Python; the first ones:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    outcomes
}

#[test]
fn random_histories_resolve_as_python_resolves_them() {
    let cases = env_number("ZEORS_RESOLVE_CASES", 2000).to_string();
    let seed = env_number("ZEORS_RESOLVE_SEED", 20_261_201).to_string();
    let outcomes = run(&["--cases", &cases, "--seed", &seed], Resolver::default());
    // The histories must exercise both sides of the table, or the test proves little.
    let count = |k: &str| outcomes.get(k).copied().unwrap_or(0);
    let total: usize = outcomes.values().sum();
    assert!(count("ok") * 4 >= total, "too few resolved histories: {outcomes:?}");
    if total >= 1000 {
        for reason in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13] {
            assert!(count(&format!("conflict {reason}")) > 0, "no history hit reason {reason}: {outcomes:?}");
        }
        assert!(count("refused") > 0, "no history made Python fail otherwise: {outcomes:?}");
    }
}

#[test]
fn with_the_application_importable_references_stay_as_written() {
    let cases = (env_number("ZEORS_RESOLVE_CASES", 2000) / 4).max(1).to_string();
    run(&["--cases", &cases, "--seed", "5", "--app-importable"], Resolver::new(AppClasses::Importable));
}

#[test]
fn the_table_covers_exactly_what_btrees_defines() {
    let script = repo().join("resolve/tests/python/histories.py");
    let out = Command::new(python()).arg(&script).arg("--list-classes").output().expect("the Python helper runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut python: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(m, n)| (m.to_owned(), n.to_owned())))
        .collect();
    let mut ours = zeo_resolve::classes::covered();
    python.sort();
    ours.sort();
    assert_eq!(ours, python);
}

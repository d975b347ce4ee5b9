//! Our error replies and replies, as decoded by the real ZEO client code.
//!
//! Ignored by default because it needs a Python with ZEO installed (the repository's `.venv`,
//! or `ZEO_PYTHON`); run it with
//! `cargo test -p zeo-proto python_client -- --ignored --nocapture`.

use std::io::Write;
use std::process::{Command, Stdio};

use super::golden::error_reply;
use super::golden_data::ERROR_CASES;
use super::*;
use crate::message::{self, Encoding, Message};
use crate::{Z64, p64};

/// `name encoding hex` lines for every error case and a few replies, in both encodings.
fn lines() -> String {
    let tid = Value::Bytes(h("040d2a9043ad2911"));
    let mut msgs: Vec<(String, Message)> = ERROR_CASES
        .iter()
        .map(|(name, msgid, _, _)| ((*name).to_owned(), Message::error(msgid(), error_reply(name))))
        .collect();
    msgs.push(("reply z64".into(), Message::reply(Value::Int(1), Z64.into())));
    msgs.push((
        "reply loadBefore".into(),
        Message::reply(
            Value::Tuple(vec![Z64.into(), tid.clone()]),
            Value::Tuple(vec![Value::Bytes(b"data".to_vec()), tid.clone(), Value::None]),
        ),
    ));
    msgs.push((
        "reply vote".into(),
        Message::reply(Value::Int(4), Value::List(vec![Value::Tuple(vec![p64(1).into(), tid])])),
    ));
    let mut out = String::new();
    for (name, msg) in &msgs {
        for (enc, letter) in [(Encoding::Pickle, "Z"), (Encoding::Msgpack, "M")] {
            let data = message::encode(msg, enc).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push_str(&format!("{name} {letter} {}\n", to_hex(&data)));
        }
    }
    out
}

#[test]
#[ignore = "needs a Python with ZEO (the repository's .venv or ZEO_PYTHON)"]
fn python_client_decodes_our_replies() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = std::env::var("ZEO_PYTHON").unwrap_or_else(|_| format!("{root}/.venv/bin/python"));
    let script = format!("{root}/proto/testdata/check_client_decode.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let input = lines();
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to python");
    let output = child.wait_with_output().expect("python runs");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(output.status.success(), "the ZEO client disagreed:\n{report}");
    assert_eq!(report.lines().filter(|l| l.starts_with("ok ")).count(), input.lines().count());
}

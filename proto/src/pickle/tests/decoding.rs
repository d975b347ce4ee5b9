//! Decoder semantics and error paths, on hand-made pickles.

use super::*;

fn wire(data: &[u8]) -> Result<Value, PickleError> {
    decode(data, &DecodeOptions::wire()).map(|(v, _)| v)
}

fn any(data: &[u8]) -> Result<Value, PickleError> {
    decode(data, &DecodeOptions::records()).map(|(v, _)| v)
}

fn list(items: Vec<Value>) -> Value {
    Value::List(items)
}

#[test]
fn wire_policy_allows_only_the_reference_servers_modules() {
    assert_eq!(
        wire(b"cos\nsystem\n."),
        Err(PickleError::ForbiddenGlobal { module: "os".into(), name: "system".into(), offset: 0 })
    );
    assert!(matches!(wire(b"\x80\x03c__main__\nFoo\n)\x81."), Err(PickleError::ForbiddenGlobal { offset: 2, .. })));
    for module in WIRE_SAFE_MODULES {
        let data = format!("c{module}\nX\n.");
        assert_eq!(wire(data.as_bytes()), Ok(Value::global(module, "X")));
    }
    // Module names are compared exactly, not as prefixes.
    assert!(wire(b"cbuiltins.evil\nX\n.").is_err());
    assert!(wire(b"cZopeUndo\nX\n.").is_err());
    // STACK_GLOBAL and INST are checked too.
    assert!(wire(b"\x80\x04\x8c\x02os\x8c\x06system\x93.").is_err());
    assert!(wire(b"(ios\nsystem\n.").is_err());
    assert_eq!(any(b"\x80\x04\x8c\x02os\x8c\x06system\x93."), Ok(Value::global("os", "system")));
}

#[test]
fn truncation_is_an_error_at_every_length() {
    let full = encode_memo(&Value::Tuple(vec![
        Value::Int(1 << 40),
        "text".into(),
        Value::Bytes(vec![1; 300]),
        Value::Dict(vec![(Value::Float(1.5), Value::List(vec![Value::None]))]),
    ]));
    for n in 0..full.len() {
        let err = any(&full[..n]).expect_err("a strict prefix is never a pickle");
        assert!(matches!(err, PickleError::Truncated { .. }), "prefix {n}: {err}");
    }
    assert!(any(&full).is_ok());
}

#[test]
fn lengths_are_checked_before_allocating() {
    let cases: [&[u8]; 7] = [
        b"B\xff\xff\xff\xffab",
        b"X\xff\xff\xff\xffab",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x96\x00\x00\x00\x00\x01\x00\x00\x00",
        b"\x8b\xff\xff\xff\x7f",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xffN.",
    ];
    for data in cases {
        assert!(matches!(any(data), Err(PickleError::Truncated { offset: 0 })), "{data:?}");
    }
    assert!(matches!(any(b"\x8b\xff\xff\xff\xff"), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"T\xff\xff\xff\xff"), Err(PickleError::BadArgument { .. })));
}

#[test]
fn opcode_errors() {
    assert_eq!(any(b"\x80\x06N."), Err(PickleError::UnsupportedProtocol { protocol: 6, offset: 0 }));
    assert_eq!(any(b"N\xff."), Err(PickleError::UnknownOpcode { opcode: 0xff, offset: 1 }));
    assert_eq!(any(b"\x97."), Err(PickleError::OutOfBandBuffer { opcode: 0x97, offset: 0 }));
    assert!(matches!(any(b"."), Err(PickleError::StackUnderflow { .. })));
    assert!(matches!(any(b"Na."), Err(PickleError::StackUnderflow { .. })));
    assert!(matches!(any(b"t."), Err(PickleError::MarkNotFound { .. })));
    assert!(matches!(any(b"h\x05."), Err(PickleError::MemoNotFound { index: 5, .. })));
    assert!(matches!(any(b"K\x01K\x02a."), Err(PickleError::WrongType { .. })));
    assert!(matches!(any(b"}(K\x01d."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"}(K\x01u."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"]K\x01\x90."), Err(PickleError::MarkNotFound { .. })));
    assert!(matches!(any(b"K\x01K\x02\x93."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"p-1\n."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"Fx\n."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"Sabc\n."), Err(PickleError::BadArgument { .. })));
    assert!(matches!(any(b"cmod\xff\nX\n."), Err(PickleError::InvalidText { .. })));
    assert!(matches!(
        any(format!("L{}\n.", "1".repeat(5000)).as_bytes()),
        Err(PickleError::LimitExceeded { limit: Limit::Digits, .. })
    ));
}

/// As in zodbpickle (and unlike CPython 3.11), `MARK` does not fence the stack: opcodes may
/// reach the items below it, and `STOP` takes the top whatever marks are left.
#[test]
fn mark_does_not_fence_the_stack() {
    assert_eq!(any(b"](K\x01a."), Ok(list(vec![1.into()])));
    assert_eq!(any(b"](."), Ok(list(vec![])));
    assert_eq!(any(b"K\x01(K\x02\x86."), Ok(Value::Tuple(vec![1.into(), 2.into()])));
    // POP right after MARK removes the mark itself, not the item below.
    assert_eq!(any(b"N(0."), Ok(Value::None));
    assert_eq!(any(b"K\x01(0t."), Err(PickleError::MarkNotFound { opcode: b't', offset: 4 }));
    assert_eq!(any(b"(N1K\x01."), Ok(Value::Int(1)));
    // STOP ignores what is left below the top, as Python does.
    assert_eq!(any(b"K\x01(K\x02."), Ok(Value::Int(2)));
    // A mark above the stack (items popped from under it) is an underflow, not a panic.
    assert!(matches!(any(b"]K\x01(a\x85t."), Err(PickleError::StackUnderflow { .. })));
}

/// The memo holds references, not copies: filling a list after `PUT` shows in every `GET`.
#[test]
fn memo_aliases_mutable_objects() {
    let v = any(b"\x80\x02(]q\x00h\x00K\x01at.").expect("decodes");
    let one = list(vec![Value::Int(1)]);
    assert_eq!(v, Value::Tuple(vec![one.clone(), one]));
    // DUP aliases too.
    let v = any(b"]2K\x07a\x86.").expect("decodes");
    let seven = list(vec![Value::Int(7)]);
    assert_eq!(v, Value::Tuple(vec![seven.clone(), seven]));
    // MEMOIZE numbers slots by memo size; text PUT/GET work.
    assert_eq!(any(b"K\x05\x94h\x00\x86."), Ok(Value::Tuple(vec![5.into(), 5.into()])));
    assert_eq!(any(b"K\x05p7\ng7\n\x86."), Ok(Value::Tuple(vec![5.into(), 5.into()])));
}

#[test]
fn self_reference_is_an_error_not_a_hang() {
    assert_eq!(any(b"]q\x00h\x00a."), Err(PickleError::Recursive { offset: 0 }));
    assert!(matches!(any(b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."), Err(PickleError::Recursive { .. })));
}

/// Lists that contain ten copies of the previous list, thirty levels deep: 10^30 items if
/// expanded. The item budget stops it.
#[test]
fn memo_amplification_is_bounded() {
    let mut data = b"]q\x00K\x01a".to_vec();
    for level in 1..30u8 {
        data.extend(b"(");
        for _ in 0..10 {
            data.extend([b'h', level - 1]);
        }
        data.extend([b'l', b'q', level]);
    }
    data.push(b'.');
    assert!(matches!(any(&data), Err(PickleError::LimitExceeded { limit: Limit::Items, .. })));
}

#[test]
fn shared_bytes_are_bounded() {
    let mut data = b"B\x00\x00\x10\x00".to_vec(); // 1 MiB
    data.extend(vec![b'x'; 1 << 20]);
    data.extend(b"q\x00(");
    for _ in 0..40 {
        data.extend(b"h\x00");
    }
    data.extend(b"t.");
    assert!(matches!(any(&data), Err(PickleError::LimitExceeded { limit: Limit::Bytes, .. })));
    let opts = DecodeOptions { max_bytes: 64 << 20, ..DecodeOptions::records() };
    let (v, _) = decode(&data, &opts).expect("fits a larger budget");
    assert_eq!(v.as_tuple().map(<[_]>::len), Some(40));
}

fn nested_lists(depth: usize) -> Vec<u8> {
    let mut data = vec![b']'; depth];
    data.extend(vec![b'a'; depth - 1]);
    data.push(b'.');
    data
}

#[test]
fn depth_is_bounded() {
    assert!(any(&nested_lists(DEFAULT_MAX_DEPTH)).is_ok());
    assert!(matches!(
        any(&nested_lists(DEFAULT_MAX_DEPTH + 1)),
        Err(PickleError::LimitExceeded { limit: Limit::Depth, .. })
    ));
    // Far deeper input is rejected without recursing that deep.
    assert!(any(&nested_lists(1_000_000)).is_err());
    let opts = DecodeOptions { max_depth: 3, ..DecodeOptions::wire() };
    assert!(decode(&nested_lists(3), &opts).is_ok());
    assert!(decode(&nested_lists(4), &opts).is_err());
}

#[test]
fn memo_and_item_limits() {
    let opts = DecodeOptions { max_memo: 2, max_items: 5, ..DecodeOptions::wire() };
    assert!(decode(b"Nq\x00q\x01q\x00.", &opts).is_ok());
    assert!(matches!(decode(b"Nq\x00q\x01q\x02.", &opts), Err(PickleError::LimitExceeded { limit: Limit::Memo, .. })));
    assert!(decode(b"(NNNNl.", &opts).is_ok());
    assert!(matches!(decode(b"(NNNNNl.", &opts), Err(PickleError::LimitExceeded { limit: Limit::Items, .. })));
}

#[test]
fn objects_collect_items_and_state() {
    // REDUCE, then list items, dict items and BUILD, as CPython's save_reduce writes them.
    let v = any(b"cm\nC\n)R(K\x01K\x02eK\x03K\x04s}b.").expect("decodes");
    assert_eq!(
        v,
        Value::Object {
            class: Box::new(Value::global("m", "C")),
            args: Box::new(Value::Tuple(vec![])),
            state: Some(Box::new(Value::Dict(vec![]))),
            list_items: vec![1.into(), 2.into()],
            dict_items: vec![(3.into(), 4.into())],
        }
    );
    // INST and OBJ.
    assert_eq!(any(b"(K\x01im\nC\n."), Ok(Value::object(Value::global("m", "C"), Value::Tuple(vec![1.into()]), None)));
    assert_eq!(any(b"(cm\nC\nK\x01o."), Ok(Value::object(Value::global("m", "C"), Value::Tuple(vec![1.into()]), None)));
    assert!(matches!(any(b"(o."), Err(PickleError::StackUnderflow { .. })));
    // NEWOBJ_EX is spelled as copyreg.__newobj_ex__(cls, args, kwargs).
    assert_eq!(
        any(b"cm\nC\n)}\x92."),
        Ok(Value::object(
            Value::global("copyreg", "__newobj_ex__"),
            Value::Tuple(vec![Value::global("m", "C"), Value::Tuple(vec![]), Value::Dict(vec![])]),
            None
        ))
    );
    // BUILD on something that is not a fresh object wraps it.
    assert_eq!(any(b"]K\x01b."), Ok(Value::object(list(vec![]), Value::Tuple(vec![]), Some(1.into()))));
}

#[test]
fn extension_codes_and_bad_text_fail_only_when_used() {
    assert!(matches!(any(b"\x82\x01."), Err(PickleError::UnregisteredExtension { code: 1, .. })));
    assert_eq!(any(b"\x82\x010N."), Ok(Value::None));
    assert!(matches!(any(b"X\x03\x00\x00\x00\xed\xa0\x80."), Err(PickleError::InvalidText { .. })));
    assert!(matches!(any(b"V\\ud800\n."), Err(PickleError::InvalidText { .. })));
}

#[test]
fn persistent_ids() {
    assert_eq!(
        any(b"\x80\x03C\x08\x00\x00\x00\x00\x00\x00\x00\x01Q."),
        Ok(Value::PersistentId(Box::new(Value::Bytes(vec![0, 0, 0, 0, 0, 0, 0, 1]))))
    );
    assert_eq!(any(b"Pabc\n."), Ok(Value::PersistentId(Box::new(Value::Bytes(b"abc".to_vec())))));
}

/// A data record: two pickles, the second referring to the first one's memo.
#[test]
fn decoder_shares_the_memo_across_pickles() {
    let data = b"\x80\x03X\x01\x00\x00\x00aq\x00.\x80\x03h\x00\x85q\x01.\x80\x03h\x01.";
    let opts = DecodeOptions::records();
    let mut d = Decoder::new(data, &opts);
    assert_eq!(d.next_value(), Ok("a".into()));
    assert_eq!(d.position(), 11);
    assert_eq!(d.next_value(), Ok(Value::Tuple(vec!["a".into()])));
    assert!(!d.at_end());
    assert_eq!(d.next_value(), Ok(Value::Tuple(vec!["a".into()])));
    assert!(d.at_end());
    assert!(matches!(d.next_value(), Err(PickleError::Truncated { .. })));
    // decode() reads only the first pickle.
    assert_eq!(decode(data, &opts), Ok(("a".into(), 11)));
}

#[test]
fn python2_and_text_opcodes() {
    assert_eq!(any(b"I01\n."), Ok(Value::Bool(true)));
    assert_eq!(any(b"I12\n."), Ok(Value::Int(12)));
    assert_eq!(any(b"L12L\n."), Ok(Value::Int(12)));
    assert_eq!(any(b"F1.25\n."), Ok(Value::Float(1.25)));
    assert_eq!(any(b"S'\\x00a'\n."), Ok(Value::Bytes(b"\0a".to_vec())));
    assert_eq!(any(b"U\x02ab."), Ok(Value::Bytes(b"ab".to_vec())));
    assert_eq!(any(b"Vcaf\xe9\n."), Ok("caf\u{e9}".into()));
    assert_eq!(any(b"(K\x01K\x02l."), Ok(list(vec![1.into(), 2.into()])));
    assert_eq!(any(b"(K\x01K\x02d."), Ok(Value::Dict(vec![(1.into(), 2.into())])));
    assert_eq!(any(b"\x8f(K\x01\x90."), Ok(Value::Set(vec![1.into()])));
}

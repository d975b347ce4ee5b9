//! ZEO 5 messages: the `(msgid, flag, name, args)` 4-tuple inside every frame after the
//! handshake, in either encoding.
//!
//! | kind | msgid | flag | name | args |
//! |---|---|---|---|---|
//! | sync call | int ≥ 1, or `(oid, tid)` for `loadBefore` | false | method | tuple |
//! | async call | `0` | true | method | tuple |
//! | reply | the call's msgid, verbatim | `0` | `.reply` | the return value itself |
//! | error reply | the call's msgid | `2` | `.reply` | `(dotted_class_name, payload)` |
//! | heartbeat | `-1` | `0` | `.reply` | `None` |
//!
//! Decoding follows what the Python peers accept rather than what they send: flags are tested
//! for truthiness (clients send `0`/`False`, the reference server `0` and `2`), method names may
//! be bytes (Python 2 clients), `args` may be a list, and a `-1` msgid is a heartbeat whatever
//! the rest says. Encoding writes exactly what the reference implementation writes: int flags
//! `0`/`2` on replies, bool flags on calls, `PROTO 3` fast-mode pickles or `packb` msgpack.
//!
//! Error payloads for the exceptions clients know are built by [`crate::errors`].

use crate::msgpack::{self, MsgpackError, MsgpackOptions};
use crate::pickle::{self, DecodeOptions, PickleError, Value};

/// The method name of replies and error replies (and of the client's heartbeat).
pub const REPLY: &str = ".reply";

/// The msgid of heartbeats, which the server ignores.
pub const HEARTBEAT_MSGID: i64 = -1;

/// The flag of normal replies. The reference server sends the int `0`, not `False`.
pub const REPLY_FLAG: i64 = 0;

/// The flag of error replies. Clients only test it for truth; the reference server sends `2`.
pub const ERROR_FLAG: i64 = 2;

/// The message encoding, chosen by the server in its hello frame and echoed by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `Z5`: zodbpickle protocol-3 pickles in fast mode (the default).
    Pickle,
    /// `M5`: msgpack (`packb(use_bin_type=True)`, `unpackb(raw=False, use_list=False)`).
    Msgpack,
}

impl Encoding {
    /// The hello (protocol id) frame payload for this encoding: `Z5` or `M5`. ZEO 5 and 6
    /// servers send only these; there is no `Z6`.
    pub fn hello(self) -> &'static [u8] {
        match self {
            Encoding::Pickle => b"Z5",
            Encoding::Msgpack => b"M5",
        }
    }

    /// The encoding a hello frame announces. Only `Z5` and `M5`: ZEO 4 (`Z4`) and older
    /// protocol ids are refused, as ZEO ≥ 5.4 does (issue #209), and so is anything else.
    pub fn from_hello(b: &[u8]) -> Option<Encoding> {
        match b {
            b"Z5" => Some(Encoding::Pickle),
            b"M5" => Some(Encoding::Msgpack),
            _ => None,
        }
    }
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call: sync (msgid >= 1, or a tuple for loadBefore) or async (msgid 0, flag true).
    Call {
        /// Echoed verbatim in the reply; a tuple msgid must come back as a tuple.
        msgid: Value,
        /// Async calls get no reply; an error while handling one closes the connection.
        is_async: bool,
        /// The method name.
        method: String,
        /// The positional arguments.
        args: Vec<Value>,
    },
    /// A normal reply (flag 0, name ".reply"), the value itself as args.
    Reply {
        /// The msgid of the call answered.
        msgid: Value,
        /// The return value (not wrapped in a tuple).
        value: Value,
    },
    /// An error reply (flag 2, name ".reply", args (dotted_class_name, payload)).
    Error {
        /// The msgid of the call answered.
        msgid: Value,
        /// `module.ClassName` of the exception, e.g. `ZODB.POSException.ConflictError`.
        class: String,
        /// The exception's `__dict__` if non-empty, else its args tuple (see [`crate::errors`]).
        payload: Value,
    },
    /// msgid -1 heartbeat (any name): ignored by the server.
    Heartbeat,
}

impl Message {
    /// A sync call (flag `False`) with the given msgid.
    pub fn call(msgid: impl Into<Value>, method: &str, args: Vec<Value>) -> Message {
        Message::Call { msgid: msgid.into(), is_async: false, method: method.to_owned(), args }
    }

    /// An async call, with msgid `0` and flag `True` as ZEO writes them.
    pub fn async_call(method: &str, args: Vec<Value>) -> Message {
        Message::Call { msgid: Value::Int(0), is_async: true, method: method.to_owned(), args }
    }

    /// A normal reply to the call with `msgid`.
    pub fn reply(msgid: Value, value: Value) -> Message {
        Message::Reply { msgid, value }
    }

    /// An error reply to the call with `msgid`; `error` comes from a [`crate::errors`]
    /// constructor.
    pub fn error(msgid: Value, (class, payload): (String, Value)) -> Message {
        Message::Error { msgid, class, payload }
    }

    /// The message as the 4-tuple that is pickled or packed.
    pub fn to_value(&self) -> Value {
        self.clone().into_value()
    }

    /// The message as the 4-tuple that is pickled or packed, without copying its contents.
    pub fn into_value(self) -> Value {
        let (msgid, flag, name, args) = match self {
            Message::Call { msgid, is_async, method, args } => {
                (msgid, Value::Bool(is_async), method, Value::Tuple(args))
            }
            Message::Reply { msgid, value } => (msgid, Value::Int(REPLY_FLAG), REPLY.to_owned(), value),
            Message::Error { msgid, class, payload } => {
                (msgid, Value::Int(ERROR_FLAG), REPLY.to_owned(), Value::Tuple(vec![Value::Str(class), payload]))
            }
            Message::Heartbeat => (Value::Int(HEARTBEAT_MSGID), Value::Int(REPLY_FLAG), REPLY.to_owned(), Value::None),
        };
        Value::Tuple(vec![msgid, flag, Value::Str(name), args])
    }

    /// Interprets a decoded 4-tuple (or 4-list: Python unpacks any sequence).
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadShape`] when the value is not a 4-sequence, the name (or an error
    /// reply's class) is not text, a call's args are not a tuple or list, or an error reply's
    /// args are not a pair. A `-1` msgid is a heartbeat before any of the rest is looked at.
    pub fn from_value(value: Value) -> Result<Message, ProtoError> {
        let items = match value {
            Value::Tuple(items) | Value::List(items) => items,
            other => return Err(bad_shape(format!("message is a {}, not a 4-tuple", other.type_name()))),
        };
        let [msgid, flag, name, args]: [Value; 4] = items
            .try_into()
            .map_err(|items: Vec<Value>| bad_shape(format!("message has {} elements, not 4", items.len())))?;
        if is_heartbeat_msgid(&msgid) {
            return Ok(Message::Heartbeat);
        }
        let name = text(name, "method name")?;
        if name == REPLY {
            if !flag.is_truthy() {
                return Ok(Message::Reply { msgid, value: args });
            }
            let pair = match args {
                Value::Tuple(items) | Value::List(items) => items,
                other => return Err(bad_shape(format!("error reply args are a {}, not a pair", other.type_name()))),
            };
            let [class, payload]: [Value; 2] = pair.try_into().map_err(|items: Vec<Value>| {
                bad_shape(format!("error reply args have {} elements, not 2", items.len()))
            })?;
            return Ok(Message::Error { msgid, class: text(class, "error class name")?, payload });
        }
        let args = match args {
            Value::Tuple(items) | Value::List(items) => items,
            other => return Err(bad_shape(format!("args of {name} are a {}, not a tuple", other.type_name()))),
        };
        Ok(Message::Call { msgid, is_async: flag.is_truthy(), method: name, args })
    }
}

/// Python's `message_id == -1`, which is also true for `-1.0`.
fn is_heartbeat_msgid(msgid: &Value) -> bool {
    match msgid {
        Value::Int(i) => *i == HEARTBEAT_MSGID,
        Value::Float(f) => *f == HEARTBEAT_MSGID as f64,
        _ => false,
    }
}

/// A str, or bytes holding UTF-8 (Python 2 clients pickle names as byte strings).
fn text(value: Value, what: &str) -> Result<String, ProtoError> {
    match value {
        Value::Str(s) => Ok(s),
        Value::Bytes(b) => String::from_utf8(b).map_err(|_| bad_shape(format!("{what} is bytes but not UTF-8"))),
        other => Err(bad_shape(format!("{what} is a {}, not a str", other.type_name()))),
    }
}

fn bad_shape(msg: String) -> ProtoError {
    ProtoError::BadShape(msg)
}

/// Why a message could not be decoded or encoded.
///
/// Any decoding error means the reference server would close the connection (it logs and
/// closes on every undecodable frame); the variants exist so logs and tests can tell a hostile
/// or buggy peer's garbage from a refused global from a well-formed value of the wrong shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The payload is not a valid pickle (or exceeds the decoder's limits).
    #[error("undecodable pickle message: {0}")]
    Pickle(#[source] PickleError),
    /// The pickle names a global outside the allowlist (`ZEO.asyncio.marshal`'s
    /// `_SAFE_MODULE_NAMES`); the reference server refuses it and closes the connection.
    #[error("message uses forbidden global {module}.{name}")]
    ForbiddenGlobal {
        /// The module named.
        module: String,
        /// The attribute named.
        name: String,
    },
    /// The payload is not valid msgpack (or exceeds the decoder's limits).
    #[error("undecodable msgpack message: {0}")]
    Msgpack(#[source] MsgpackError),
    /// The payload decoded, but not to a message (not a 4-tuple, a non-text name, ...).
    #[error("malformed message: {0}")]
    BadShape(String),
    /// The message holds a value msgpack cannot carry (a set, a global, an int beyond 64
    /// bits, ...). Pickle can encode every [`Value`].
    #[error("message cannot be encoded as msgpack: {0}")]
    Unencodable(#[source] MsgpackError),
}

impl From<PickleError> for ProtoError {
    fn from(err: PickleError) -> Self {
        match err {
            PickleError::ForbiddenGlobal { module, name, .. } => ProtoError::ForbiddenGlobal { module, name },
            other => ProtoError::Pickle(other),
        }
    }
}

/// Decodes one frame payload, as a server decodes client messages: pickles with
/// [`DecodeOptions::wire`] (a forbidden global is an error), msgpack with
/// [`MsgpackOptions::default`].
///
/// As with Python's `Unpickler.load()`, bytes after the pickle's `STOP` are ignored; msgpack,
/// like `unpackb`, refuses trailing bytes.
///
/// # Errors
///
/// Any [`ProtoError`] but [`ProtoError::Unencodable`]. Never panics, whatever the input.
pub fn decode(payload: &[u8], enc: Encoding) -> Result<Message, ProtoError> {
    decode_with(payload, enc, &DecodeOptions::wire())
}

/// [`decode`] with chosen limits and global policy. The msgpack decoder takes `opts`'
/// `max_depth` and `max_items`. A client talking to the reference Python server needs
/// [`pickle::GlobalPolicy::Any`]: that server pickles `MultipleUndoErrors` details with
/// `ZODB.POSException._recon`, which the wire allowlist refuses.
///
/// # Errors
///
/// As [`decode`].
pub fn decode_with(payload: &[u8], enc: Encoding, opts: &DecodeOptions) -> Result<Message, ProtoError> {
    let value = match enc {
        Encoding::Pickle => pickle::decode(payload, opts)?.0,
        Encoding::Msgpack => {
            let mp = MsgpackOptions { max_depth: opts.max_depth, max_items: opts.max_items, strict_map_key: true };
            msgpack::decode_with(payload, &mp).map_err(ProtoError::Msgpack)?
        }
    };
    Message::from_value(value)
}

/// Encodes a message: pickles exactly as ZEO's fast-mode protocol-3 pickler (never a higher
/// protocol, which clients refuse), msgpack exactly as `packb(use_bin_type=True)`.
///
/// The message's values are copied once to build the 4-tuple; [`encode_value`] with
/// [`Message::into_value`] avoids that for large replies.
///
/// # Errors
///
/// [`ProtoError::Unencodable`] for msgpack when a value has no msgpack form. Pickle encoding
/// cannot fail.
pub fn encode(msg: &Message, enc: Encoding) -> Result<Vec<u8>, ProtoError> {
    encode_value(&msg.to_value(), enc)
}

/// Encodes an already built 4-tuple (see [`Message::into_value`]) or any other value.
///
/// # Errors
///
/// As [`encode`].
pub fn encode_value(value: &Value, enc: Encoding) -> Result<Vec<u8>, ProtoError> {
    match enc {
        Encoding::Pickle => Ok(pickle::encode_wire(value)),
        Encoding::Msgpack => msgpack::encode(value).map_err(ProtoError::Unencodable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire_tests::{h, to_hex};
    use crate::{MAXTID, Z64, errors};

    const BOTH: [Encoding; 2] = [Encoding::Pickle, Encoding::Msgpack];

    fn tid() -> Value {
        Value::Bytes(h("040d2a9043ad2911"))
    }

    /// Decodes `hex`, checks the message, and checks that it encodes back to the same bytes.
    fn both_ways(hex: &str, enc: Encoding, expected: &Message) {
        let decoded = decode(&h(hex), enc).unwrap_or_else(|e| panic!("{hex}: {e}"));
        assert_eq!(&decoded, expected, "{hex}");
        assert_eq!(to_hex(&encode(expected, enc).expect("encodes")), hex, "{expected:?}");
    }

    #[test]
    fn hello() {
        for enc in BOTH {
            assert_eq!(Encoding::from_hello(enc.hello()), Some(enc));
        }
        assert_eq!(Encoding::Pickle.hello(), b"Z5");
        assert_eq!(Encoding::Msgpack.hello(), b"M5");
        for bad in [&b"Z4"[..], b"Z3101", b"M6", b"Z6", b"z5", b"Z", b"", b"Z55", b"ruok"] {
            assert_eq!(Encoding::from_hello(bad), None, "{bad:?}");
        }
    }

    /// Every pickle vector of the spec's section 2.5, both directions.
    #[test]
    fn spec_section_2_5_pickle_vectors() {
        both_ways(
            "8003284b0189580800000072656769737465725801000000318986742e",
            Encoding::Pickle,
            &Message::call(1, "register", vec!["1".into(), Value::Bool(false)]),
        );
        both_ways(
            "8003284b014b0058060000002e7265706c7943080000000000000000742e",
            Encoding::Pickle,
            &Message::reply(Value::Int(1), Z64.into()),
        );
        both_ways(
            "8003284b00885815000000696e76616c69646174655472616e73616374696f6e4308040d2a9043ad29115d430800000000000000006186742e",
            Encoding::Pickle,
            &Message::async_call("invalidateTransaction", vec![tid(), Value::List(vec![Z64.into()])]),
        );
        let pos_key = [
            "800328",
            "43080000000000000000",
            "4308040d2a9043ad2911",
            "86",
            "4b02",
            "5806000000",
            &to_hex(b".reply"),
            "581d000000",
            &to_hex(b"ZODB.POSException.POSKeyError"),
            "43080000000000000000",
            "85",
            "86",
            "74",
            "2e",
        ]
        .concat();
        both_ways(
            &pos_key,
            Encoding::Pickle,
            &Message::error(Value::Tuple(vec![Z64.into(), tid()]), errors::pos_key(Z64)),
        );
        both_ways("8003284affffffff4b0058060000002e7265706c794e742e", Encoding::Pickle, &Message::Heartbeat);
    }

    /// The msgpack vectors of sections 2.3 and 2.5.
    #[test]
    fn spec_msgpack_vectors() {
        let register = format!("9401c2a8{}92a131c2", to_hex(b"register"));
        both_ways(&register, Encoding::Msgpack, &Message::call(1, "register", vec!["1".into(), Value::Bool(false)]));
        both_ways("94ff00a62e7265706c79c0", Encoding::Msgpack, &Message::Heartbeat);
    }

    #[test]
    fn tuple_msgids_stay_tuples() {
        let msgid = Value::Tuple(vec![Z64.into(), MAXTID.into()]);
        for enc in BOTH {
            let call = Message::call(msgid.clone(), "loadBefore", vec![Z64.into(), MAXTID.into()]);
            let decoded = decode(&encode(&call, enc).expect("encodes"), enc).expect("decodes");
            assert_eq!(decoded, call);
            let Message::Call { msgid: echoed, .. } = decoded else { panic!("not a call") };
            let reply = Message::reply(echoed, Value::None);
            let back = decode(&encode(&reply, enc).expect("encodes"), enc).expect("decodes");
            assert_eq!(back, Message::reply(msgid.clone(), Value::None));
        }
    }

    #[test]
    fn flags_are_tested_for_truth() {
        let shape = |msgid: Value, flag: Value, name: Value, args: Value| Value::Tuple(vec![msgid, flag, name, args]);
        let args = Value::Tuple(vec![Value::Int(5)]);
        for (flag, is_async) in [
            (Value::Bool(false), false),
            (Value::Int(0), false),
            (Value::Bool(true), true),
            (Value::Int(1), true),
            (Value::Int(2), true),
        ] {
            for enc in BOTH {
                let data =
                    encode_value(&shape(Value::Int(3), flag.clone(), "m".into(), args.clone()), enc).expect("ok");
                assert_eq!(
                    decode(&data, enc),
                    Ok(Message::Call { msgid: Value::Int(3), is_async, method: "m".into(), args: vec![Value::Int(5)] })
                );
                let reply =
                    encode_value(&shape(Value::Int(3), flag.clone(), REPLY.into(), args.clone()), enc).expect("ok");
                let expected = if is_async {
                    // A truthy reply flag makes an error reply, whose args must be a pair.
                    Err(ProtoError::BadShape("error reply args have 1 elements, not 2".into()))
                } else {
                    Ok(Message::reply(Value::Int(3), args.clone()))
                };
                assert_eq!(decode(&reply, enc), expected);
            }
        }
    }

    #[test]
    fn lenient_shapes_python_accepts() {
        // A list instead of a tuple (outer and args), and a bytes method name (Python 2).
        let v = Value::List(vec![
            Value::Int(4),
            Value::Int(0),
            Value::Bytes(b"lastTransaction".to_vec()),
            Value::List(vec![Value::None]),
        ]);
        let expected = Message::call(4, "lastTransaction", vec![Value::None]);
        for enc in BOTH {
            assert_eq!(decode(&encode_value(&v, enc).expect("ok"), enc), Ok(expected.clone()));
        }
        // Error replies with a list pair and a bytes class name.
        let err = Value::Tuple(vec![
            Value::Int(9),
            Value::Bool(true),
            REPLY.into(),
            Value::List(vec![Value::Bytes(b"builtins.KeyError".to_vec()), Value::Tuple(vec![Value::Int(1)])]),
        ]);
        assert_eq!(
            decode(&encode_value(&err, Encoding::Pickle).expect("ok"), Encoding::Pickle),
            Ok(Message::error(Value::Int(9), errors::key_error(Value::Int(1))))
        );
        // Bytes after STOP are ignored, as Python's Unpickler.load() does; msgpack refuses them.
        let mut data = encode(&Message::Heartbeat, Encoding::Pickle).expect("ok");
        data.extend_from_slice(b"junk");
        assert_eq!(decode(&data, Encoding::Pickle), Ok(Message::Heartbeat));
        let mut data = encode(&Message::Heartbeat, Encoding::Msgpack).expect("ok");
        data.push(0xc0);
        assert!(matches!(
            decode(&data, Encoding::Msgpack),
            Err(ProtoError::Msgpack(MsgpackError::TrailingBytes { .. }))
        ));
    }

    #[test]
    fn heartbeats_whatever_the_rest() {
        for rest in [
            vec![Value::Int(0), ".reply".into(), Value::None],
            vec![Value::Bool(true), Value::Int(7), Value::Int(8)],
            vec![Value::None, "anything".into(), Value::Dict(vec![])],
        ] {
            for msgid in [Value::Int(-1), Value::Float(-1.0)] {
                let v = Value::Tuple([vec![msgid.clone()], rest.clone()].concat());
                for enc in BOTH {
                    assert_eq!(decode(&encode_value(&v, enc).expect("ok"), enc), Ok(Message::Heartbeat));
                }
            }
        }
        // Still a 4-tuple is required: Python unpacks it before comparing the msgid.
        let short = Value::Tuple(vec![Value::Int(-1), Value::Int(0), REPLY.into()]);
        assert!(matches!(
            decode(&encode_value(&short, Encoding::Pickle).expect("ok"), Encoding::Pickle),
            Err(ProtoError::BadShape(_))
        ));
    }

    #[test]
    fn bad_shapes() {
        let cases = [
            Value::None,
            Value::Int(1),
            Value::Tuple(vec![]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), "m".into()]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), "m".into(), Value::Tuple(vec![]), Value::None]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), Value::Int(3), Value::Tuple(vec![])]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), Value::Bytes(vec![0xff]), Value::Tuple(vec![])]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), "m".into(), Value::None]),
            Value::Tuple(vec![Value::Int(1), Value::Bool(false), "m".into(), Value::Dict(vec![])]),
            Value::Tuple(vec![Value::Int(1), Value::Int(2), REPLY.into(), Value::None]),
            Value::Tuple(vec![
                Value::Int(1),
                Value::Int(2),
                REPLY.into(),
                Value::Tuple(vec![Value::Int(1), Value::None]),
            ]),
        ];
        for v in cases {
            for enc in BOTH {
                let data = encode_value(&v, enc).expect("ok");
                assert!(matches!(decode(&data, enc), Err(ProtoError::BadShape(_))), "{v:?}");
            }
        }
    }

    #[test]
    fn undecodable_and_forbidden() {
        assert!(matches!(decode(b"", Encoding::Pickle), Err(ProtoError::Pickle(_))));
        assert!(matches!(decode(b"", Encoding::Msgpack), Err(ProtoError::Msgpack(_))));
        assert!(matches!(decode(b"\x80\x03(", Encoding::Pickle), Err(ProtoError::Pickle(_))));
        // (1, False, 'm', (os.system,)) and the same with an allowed global.
        let with_global = |module: &str, name: &str| {
            let g = Value::global(module, name);
            pickle::encode_wire(&Value::Tuple(vec![
                Value::Int(1),
                Value::Bool(false),
                "m".into(),
                Value::Tuple(vec![g]),
            ]))
        };
        assert_eq!(
            decode(&with_global("os", "system"), Encoding::Pickle),
            Err(ProtoError::ForbiddenGlobal { module: "os".into(), name: "system".into() })
        );
        assert!(decode(&with_global("ZopeUndo.Prefix", "Prefix"), Encoding::Pickle).is_ok());
        // A client of the reference server may allow any global.
        assert!(decode_with(&with_global("os", "system"), Encoding::Pickle, &DecodeOptions::records()).is_ok());
    }

    #[test]
    fn msgpack_refuses_what_it_cannot_carry() {
        let msg = Message::reply(Value::Int(1), Value::Set(vec![]));
        assert_eq!(
            encode(&msg, Encoding::Msgpack),
            Err(ProtoError::Unencodable(MsgpackError::Unsupported { type_name: "set" }))
        );
        assert!(encode(&msg, Encoding::Pickle).is_ok());
    }

    #[test]
    fn encode_matches_into_value() {
        let msgs = [
            Message::call(
                7,
                "tpc_begin",
                vec![Value::from(140_567_705_425_168u64), "user".into(), "".into(), Value::Dict(vec![])],
            ),
            Message::async_call("storea", vec![Z64.into(), Z64.into(), Value::Bytes(vec![1; 300]), Value::Int(1)]),
            Message::reply(Value::Int(7), Value::Tuple(vec![Value::Bytes(vec![2; 10]), tid(), Value::None])),
            Message::error(Value::Int(8), errors::conflict(Z64, MAXTID, Z64, Some("a.B"))),
            Message::Heartbeat,
        ];
        for msg in msgs {
            for enc in BOTH {
                let data = encode(&msg, enc).expect("encodes");
                assert_eq!(data, encode_value(&msg.clone().into_value(), enc).expect("encodes"));
                assert_eq!(decode(&data, enc).as_ref(), Ok(&msg));
            }
        }
    }
}

//! Error reply payloads: `(dotted_class_name, payload)` for the exceptions a server reports.
//!
//! The reference server sends `(f"{cls.__module__}.{cls.__name__}", exc.__dict__ or exc.args)`
//! (`ZEO.asyncio.marshal.reduce_exception`). The client (`ZEO.asyncio.client`) rebuilds the
//! exceptions it knows from that payload, and turns every other class name into
//! `ZEO.Exceptions.ServerException(name, payload)`, a `StorageError`:
//!
//! | class | rebuilt as | from |
//! |---|---|---|
//! | `ZODB.POSException.ConflictError` | `ConflictError(message=, oid=, serials=)`, then `class_name` | dict; `message`, `oid`, `serials` required |
//! | `ZODB.POSException.ReadConflictError` | the same, as `ReadConflictError` | dict |
//! | `ZODB.POSException.MultipleUndoErrors` | `MultipleUndoErrors(payload['_errs'])` | dict; `_errs` non-empty |
//! | `ZODB.POSException.POSKeyError`, `ReadOnlyError`, `StorageTransactionError`, `builtins.KeyError`, `builtins.TypeError` | `cls(*payload)` | args tuple |
//! | anything else | `ServerException(class, payload)` | anything |
//!
//! So the payloads below must match those shapes exactly: a missing `serials` key, for one,
//! makes the client's decoder raise and the call never completes. Where the reference server
//! sends the same exception, the constructors produce the same bytes it does (dict keys in the
//! same order), which the golden tests check against Python.

use crate::pickle::Value;
use crate::{Oid, Tid, Z64};

/// `(dotted_class_name, payload)`, the args of an error reply; see [`crate::message::Message::error`].
pub type ErrorReply = (String, Value);

/// A write conflict; its `oid` also gets invalidated in the client cache.
pub const CONFLICT_ERROR: &str = "ZODB.POSException.ConflictError";
/// A `checkCurrentSerialInTransaction` conflict.
pub const READ_CONFLICT_ERROR: &str = "ZODB.POSException.ReadConflictError";
/// An object (or revision) that does not exist.
pub const POS_KEY_ERROR: &str = "ZODB.POSException.POSKeyError";
/// A write on a read-only storage or connection.
pub const READ_ONLY_ERROR: &str = "ZODB.POSException.ReadOnlyError";
/// A call for a transaction that is not the current one, or in the wrong state.
pub const STORAGE_TRANSACTION_ERROR: &str = "ZODB.POSException.StorageTransactionError";
/// Undo failures: ZODB's tests expect undo to fail with this class.
pub const MULTIPLE_UNDO_ERRORS: &str = "ZODB.POSException.MultipleUndoErrors";
/// A single undo failure (reaches clients as `ServerException`).
pub const UNDO_ERROR: &str = "ZODB.POSException.UndoError";
/// A generic storage failure (reaches clients as `ServerException`).
pub const STORAGE_ERROR: &str = "ZODB.POSException.StorageError";
/// A storage failure that should never happen (reaches clients as `ServerException`).
pub const STORAGE_SYSTEM_ERROR: &str = "ZODB.POSException.StorageSystemError";
/// The reference server's own error class (reaches clients as `ServerException`).
pub const STORAGE_SERVER_ERROR: &str = "ZEO.StorageServer.StorageServerError";
/// `ZEO.Exceptions.ClientDisconnected` (reaches clients as `ServerException`).
pub const CLIENT_DISCONNECTED: &str = "ZEO.Exceptions.ClientDisconnected";
/// `KeyError`, e.g. `iterator_next` on an unknown iterator id.
pub const KEY_ERROR: &str = "builtins.KeyError";
/// `TypeError`.
pub const TYPE_ERROR: &str = "builtins.TypeError";
/// `ValueError`, e.g. `register` with an unknown storage name (reaches clients as
/// `ServerException`).
pub const VALUE_ERROR: &str = "builtins.ValueError";
/// `NotImplementedError` (reaches clients as `ServerException`).
pub const NOT_IMPLEMENTED_ERROR: &str = "builtins.NotImplementedError";
/// Plain `Exception` (reaches clients as `ServerException`).
pub const EXCEPTION: &str = "builtins.Exception";

/// The `__dict__` of a `ConflictError` built as `ConflictError(message, oid=, serials=)`, in
/// the order Python fills it: `message`, `oid`, `class_name`, `serials`.
fn conflict_dict(message: &str, oid: Oid, committed: Tid, read: Tid, class_name: Option<&str>) -> Value {
    Value::Dict(vec![
        ("message".into(), message.into()),
        ("oid".into(), oid.into()),
        ("class_name".into(), class_name.map_or(Value::None, Value::from)),
        ("serials".into(), Value::Tuple(vec![committed.into(), read.into()])),
    ])
}

/// `ConflictError(oid=oid, serials=(committed, read))` with the class name of the object
/// (`module.Class`, from the record's pickle) when known: the committed tid is the object's
/// current serial, `read` the serial the client based its change on.
pub fn conflict(oid: Oid, committed: Tid, read: Tid, class_name: Option<&str>) -> ErrorReply {
    (CONFLICT_ERROR.to_owned(), conflict_dict("database conflict error", oid, committed, read, class_name))
}

/// `ReadConflictError(oid=oid, serials=(committed, read))`, what `checkCurrentSerialInTransaction`
/// raises when the object changed since `read`. The reference server sends `class_name: None`.
pub fn read_conflict(oid: Oid, committed: Tid, read: Tid, class_name: Option<&str>) -> ErrorReply {
    (READ_CONFLICT_ERROR.to_owned(), conflict_dict("database read conflict error", oid, committed, read, class_name))
}

/// `POSKeyError(oid)`: payload `(oid,)`.
pub fn pos_key(oid: Oid) -> ErrorReply {
    (POS_KEY_ERROR.to_owned(), Value::Tuple(vec![oid.into()]))
}

/// `ReadOnlyError()`: payload `()`.
pub fn read_only() -> ErrorReply {
    (READ_ONLY_ERROR.to_owned(), Value::Tuple(vec![]))
}

/// `StorageTransactionError(msg)`: payload `(msg,)`.
pub fn storage_transaction(msg: &str) -> ErrorReply {
    storage_transaction_args(vec![msg.into()])
}

/// `StorageTransactionError(*args)`. The reference server's `vote` with a transaction id that
/// is not the current one sends `(current_id_or_None, given_id)`.
pub fn storage_transaction_args(args: Vec<Value>) -> ErrorReply {
    (STORAGE_TRANSACTION_ERROR.to_owned(), Value::Tuple(args))
}

/// `MultipleUndoErrors` with one `(oid, reason)` pair per object that could not be undone:
/// payload `{'_errs': [(oid, reason), ...]}`.
///
/// The client builds the exception from `_errs` alone (and its first pair). The reference
/// server also sends `_reason`/`_oid` holding pickled `UndoError` objects, which need a global
/// the client must import; plain strings are enough and keep the payload msgpack-safe. The
/// client fails on an empty `_errs`, so an empty `errs` sends `(z64, "undo failed")`.
pub fn multiple_undo(errs: &[(Oid, &str)]) -> ErrorReply {
    let mut pairs: Vec<Value> =
        errs.iter().map(|(oid, reason)| Value::Tuple(vec![(*oid).into(), (*reason).into()])).collect();
    if pairs.is_empty() {
        pairs.push(Value::Tuple(vec![Z64.into(), "undo failed".into()]));
    }
    (MULTIPLE_UNDO_ERRORS.to_owned(), Value::Dict(vec![("_errs".into(), Value::List(pairs))]))
}

/// `UndoError(reason, oid)`: payload `{'_reason': reason, '_oid': oid or None}`. Clients see a
/// `ServerException`; undo itself should report [`multiple_undo`].
pub fn undo_error(reason: &str, oid: Option<Oid>) -> ErrorReply {
    let oid = oid.map_or(Value::None, Value::from);
    (UNDO_ERROR.to_owned(), Value::Dict(vec![("_reason".into(), reason.into()), ("_oid".into(), oid)]))
}

/// `KeyError(key)`: payload `(key,)`.
pub fn key_error(key: Value) -> ErrorReply {
    (KEY_ERROR.to_owned(), Value::Tuple(vec![key]))
}

/// `ValueError(msg)`: payload `(msg,)`.
pub fn value_error(msg: &str) -> ErrorReply {
    args_error(VALUE_ERROR, msg)
}

/// `TypeError(msg)`: payload `(msg,)`.
pub fn type_error(msg: &str) -> ErrorReply {
    args_error(TYPE_ERROR, msg)
}

/// `StorageError(msg)`: payload `(msg,)`.
pub fn storage_error(msg: &str) -> ErrorReply {
    args_error(STORAGE_ERROR, msg)
}

/// `StorageSystemError(msg)`: payload `(msg,)`.
pub fn storage_system_error(msg: &str) -> ErrorReply {
    args_error(STORAGE_SYSTEM_ERROR, msg)
}

/// `ZEO.StorageServer.StorageServerError(msg)`: payload `(msg,)`.
pub fn storage_server_error(msg: &str) -> ErrorReply {
    args_error(STORAGE_SERVER_ERROR, msg)
}

/// `ClientDisconnected(msg)`: payload `(msg,)`.
pub fn client_disconnected(msg: &str) -> ErrorReply {
    args_error(CLIENT_DISCONNECTED, msg)
}

/// `NotImplementedError()`: payload `()`.
pub fn not_implemented() -> ErrorReply {
    (NOT_IMPLEMENTED_ERROR.to_owned(), Value::Tuple(vec![]))
}

/// `Exception(msg)`: payload `(msg,)`.
pub fn exception(msg: &str) -> ErrorReply {
    args_error(EXCEPTION, msg)
}

/// Any other exception class whose instances carry only args: payload `tuple(args)`.
pub fn other(class: &str, args: Vec<Value>) -> ErrorReply {
    (class.to_owned(), Value::Tuple(args))
}

fn args_error(class: &str, msg: &str) -> ErrorReply {
    other(class, vec![msg.into()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MAXTID, p64};

    #[test]
    fn conflict_payload_has_the_keys_the_client_needs() {
        let (class, payload) = conflict(p64(1), p64(3), p64(2), Some("persistent.mapping.PersistentMapping"));
        assert_eq!(class, CONFLICT_ERROR);
        assert_eq!(payload.dict_get("message"), Some(&Value::from("database conflict error")));
        assert_eq!(payload.dict_get("oid"), Some(&Value::from(p64(1))));
        assert_eq!(payload.dict_get("serials"), Some(&Value::Tuple(vec![p64(3).into(), p64(2).into()])));
        assert_eq!(payload.dict_get("class_name"), Some(&Value::from("persistent.mapping.PersistentMapping")));
        let keys: Vec<_> = payload.as_dict().unwrap_or_default().iter().filter_map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["message", "oid", "class_name", "serials"]);
        let (class, payload) = read_conflict(Z64, MAXTID, Z64, None);
        assert_eq!(class, READ_CONFLICT_ERROR);
        assert_eq!(payload.dict_get("class_name"), Some(&Value::None));
        assert_eq!(payload.dict_get("message"), Some(&Value::from("database read conflict error")));
    }

    #[test]
    fn args_payloads() {
        assert_eq!(pos_key(p64(5)), (POS_KEY_ERROR.into(), Value::Tuple(vec![p64(5).into()])));
        assert_eq!(read_only(), (READ_ONLY_ERROR.into(), Value::Tuple(vec![])));
        assert_eq!(storage_transaction("x"), (STORAGE_TRANSACTION_ERROR.into(), Value::Tuple(vec!["x".into()])));
        assert_eq!(key_error(Value::Int(3)), (KEY_ERROR.into(), Value::Tuple(vec![Value::Int(3)])));
        assert_eq!(value_error("v").0, "builtins.ValueError");
        assert_eq!(type_error("t").0, "builtins.TypeError");
        assert_eq!(storage_error("s"), ("ZODB.POSException.StorageError".into(), Value::Tuple(vec!["s".into()])));
        assert_eq!(not_implemented().1, Value::Tuple(vec![]));
        assert_eq!(other("a.B", vec![Value::None]), ("a.B".into(), Value::Tuple(vec![Value::None])));
    }

    #[test]
    fn undo_payloads() {
        let (class, payload) = multiple_undo(&[(p64(1), "no"), (p64(2), "nope")]);
        assert_eq!(class, MULTIPLE_UNDO_ERRORS);
        let errs = payload.dict_get("_errs").and_then(Value::as_list).unwrap_or_default();
        assert_eq!(
            errs,
            [Value::Tuple(vec![p64(1).into(), "no".into()]), Value::Tuple(vec![p64(2).into(), "nope".into()])]
        );
        let (_, empty) = multiple_undo(&[]);
        assert_eq!(empty.dict_get("_errs").and_then(Value::as_list).map(<[_]>::len), Some(1));
        let (class, payload) = undo_error("bad", Some(p64(9)));
        assert_eq!(class, UNDO_ERROR);
        assert_eq!(payload.dict_get("_oid"), Some(&Value::from(p64(9))));
        assert_eq!(undo_error("bad", None).1.dict_get("_oid"), Some(&Value::None));
    }
}

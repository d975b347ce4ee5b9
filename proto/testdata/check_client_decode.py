"""Feed messages encoded by zeo-proto to the real ZEO client's message handling.

Reads lines `name encoding hex` on stdin (encoding `Z` or `M`), as written by the ignored Rust
test `wire_tests::python::python_client_decodes_our_replies`, which runs this script:

    cargo test -p zeo-proto python_client -- --ignored --nocapture

Each frame goes through `ZEO.asyncio.client.Protocol.message_received` itself (on a stub
protocol object), so the decoder, `exc_factories` and `ServerException` fallback are ZEO's own
code. The resulting exception (or result) is then checked against what application code and
the ZODB/ZEO test suites rely on. Exits non-zero on any mismatch.
"""

import sys

import transaction.interfaces

import ZEO.Exceptions
import ZODB.POSException as POS
from ZEO.asyncio.client import Protocol
from ZEO.asyncio.marshal import decoder
from ZODB.utils import p64, z64

TID = bytes.fromhex("040d2a9043ad2911")
TXN_ID = 140567705425168


class Future:
    exc = result = None
    done = False

    def set_exception(self, exc):
        self.exc, self.done = exc, True

    def set_result(self, result):
        self.result, self.done = result, True


class StubProtocol:
    """What `Protocol.message_received` touches on `self`, for replies."""

    exception_type_type = Protocol.exception_type_type
    name = "zeo-proto check"

    def __init__(self, encoding):
        self.decode = decoder(encoding)
        self.futures = {}


def receive(encoding, data):
    stub = StubProtocol(encoding)
    msgid = stub.decode(data)[0]
    future = stub.futures[msgid] = Future()
    Protocol.message_received(stub, data)
    assert future.done, "future not completed"
    assert msgid not in stub.futures, "future not popped"
    return msgid, future


def server_exception(cls, payload):
    def check(exc):
        assert type(exc) is ZEO.Exceptions.ServerException, type(exc)
        assert isinstance(exc, POS.StorageError)
        assert exc.args == (cls, payload), exc.args
    return check


def args_exception(cls, *args):
    def check(exc):
        assert type(exc) is cls, type(exc)
        assert exc.args == args, exc.args
        str(exc)  # must not fail
    return check


def conflict(cls, message, class_name):
    def check(exc):
        assert type(exc) is cls, type(exc)
        assert isinstance(exc, transaction.interfaces.TransientError)
        assert exc.oid == p64(1), exc.oid
        assert tuple(exc.serials) == (p64(3), p64(2)), exc.serials
        assert exc.message == message, exc.message
        assert exc.class_name == class_name, exc.class_name
        assert exc.get_oid() == p64(1) and exc.get_serials() == (p64(3), p64(2))
        text = str(exc)
        assert message in text and "oid 0x01" in text and "serial this txn started with" in text, text
        if class_name:
            assert class_name in text, text
    return check


def multiple_undo(exc):
    assert type(exc) is POS.MultipleUndoErrors, type(exc)
    assert isinstance(exc, POS.UndoError)
    assert [tuple(e) for e in exc._errs] == [(p64(1), "no"), (p64(2), "nope")], exc._errs
    assert str(exc) == "Undo error 0x01: no\nUndo error 0x02: nope", str(exc)


EXPECTED_ERRORS = {
    "conflict": conflict(POS.ConflictError, "database conflict error", "persistent.mapping.PersistentMapping"),
    "conflict no class": conflict(POS.ConflictError, "database conflict error", None),
    "read_conflict": conflict(POS.ReadConflictError, "database read conflict error", None),
    "pos_key": args_exception(POS.POSKeyError, z64),
    "read_only": args_exception(POS.ReadOnlyError),
    "storage_transaction": args_exception(
        POS.StorageTransactionError, "Multiple simultaneous tpc_begin requests from the same client."),
    "storage_transaction_args": args_exception(POS.StorageTransactionError, None, TXN_ID),
    "multiple_undo": multiple_undo,
    "undo_error": server_exception(
        "ZODB.POSException.UndoError",
        {"_reason": "Some data were modified by a later transaction", "_oid": p64(1)}),
    "undo_error no oid": server_exception(
        "ZODB.POSException.UndoError", {"_reason": "non-undoable transaction", "_oid": None}),
    "key_error": args_exception(KeyError, 3),
    "value_error": server_exception("builtins.ValueError", ("unknown storage: 2",)),
    "type_error": args_exception(TypeError, "bad"),
    "storage_error": server_exception("ZODB.POSException.StorageError", ("s",)),
    "storage_system_error": server_exception(
        "ZODB.POSException.StorageSystemError", ("Couldn't save truncated data",)),
    "storage_server_error": server_exception(
        "ZEO.StorageServer.StorageServerError", ("Versions aren't supported.",)),
    "client_disconnected": server_exception("ZEO.Exceptions.ClientDisconnected", ("closed",)),
    "not_implemented": server_exception("builtins.NotImplementedError", ()),
    "exception": server_exception("builtins.Exception", ("Out-of-order request",)),
}

# Normal replies: (msgid, result).
EXPECTED_REPLIES = {
    "reply z64": (1, z64),
    "reply loadBefore": ((z64, TID), (b"data", TID, None)),
    "reply vote": (4, [(p64(1), TID)]),
}


def check(name, encoding, data):
    msgid, future = receive(encoding, data)
    if name in EXPECTED_ERRORS:
        assert future.exc is not None, "no exception, result %r" % (future.result,)
        EXPECTED_ERRORS[name](future.exc)
        return "%s: %s" % (type(future.exc).__name__, future.exc)
    want_msgid, want = EXPECTED_REPLIES[name]
    assert msgid == want_msgid and type(msgid) is type(want_msgid), msgid
    assert future.exc is None, future.exc
    result = future.result
    if encoding == b"M":  # use_list=False: lists arrive as tuples
        want = tuple(tuple(x) if isinstance(x, tuple) else x for x in want) if isinstance(want, list) else want
    assert result == want, result
    return "result %r" % (result,)


def main():
    seen, failures = set(), 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        name, encoding, hexdata = line.rsplit(" ", 2)
        seen.add(name)
        try:
            what = check(name, encoding.encode(), bytes.fromhex(hexdata))
        except Exception as e:  # noqa: BLE001 -- report every failure
            failures += 1
            print("FAIL %s %s: %r" % (name, encoding, e))
        else:
            print("ok   %s %s -> %s" % (name, encoding, what))
    missing = (set(EXPECTED_ERRORS) | set(EXPECTED_REPLIES)) - seen
    if missing:
        failures += 1
        print("FAIL missing cases: %s" % sorted(missing))
    print("%d failures" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

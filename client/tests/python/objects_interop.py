"""Python's side of the object layer interop test (client/tests/integration/objects.rs).

Runs real ZODB + ZEO ClientStorage against a ZEO server and checks or writes objects:

  objects_interop.py check-rust HOST:PORT   check what the Rust test wrote into a database whose
                                            root Rust created, then modify it
  objects_interop.py write-fresh HOST:PORT  open an empty database (ZODB creates the root) and
                                            write objects for Rust to read

Exits 0 and prints "ok" on success; any failed check raises (exit 1). The expected values are
the Rust test's fixtures; keep both sides in step.
"""

import sys

import transaction
import ZEO
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return ZEO.DB((host, int(port)), wait_timeout=30)


def check_rust(db):
    conn = db.open()
    root = conn.root()
    # ZODB opened the database: the root Rust created is a PersistentMapping.
    assert type(root) is PersistentMapping, type(root)
    assert sorted(root.keys()) == ["count", "rust_list", "rust_map"], sorted(root.keys())
    assert root["count"] == 3
    m, lst = root["rust_map"], root["rust_list"]
    assert type(m) is PersistentMapping and type(lst) is PersistentList, (type(m), type(lst))
    expected = {
        "str": "h\u00e9llo",
        "bytes": b"\x00\xff",
        "int": -42,
        "big": 2**62,
        "float": 1.5,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "two", [3]],
        "dict": {"k": {"nested": 1}},
        "tuple": (1, "x"),
    }
    for key, want in expected.items():
        got = m[key]
        assert got == want and type(got) is type(want), (key, got, want)
    # References resolve to the same persistent objects (the cycle included).
    assert m["list_ref"] is lst
    assert list(lst[:2]) == ["first", 2] and lst[2] is m
    # Modify through ZODB: Rust checks these next.
    lst.append("from python")
    m["int"] = 43
    root["py"] = PersistentMapping({"name": "python", "items": PersistentList([b"x", 1.25]), "d": {"a": [None]}})
    transaction.commit()
    conn.close()


def write_fresh(db):
    conn = db.open()
    root = conn.root()
    assert len(root) == 0, "expected an empty database"
    root["py"] = PersistentMapping({"name": "python", "items": PersistentList([b"x", 1.25]), "d": {"a": [None]}})
    transaction.commit()
    conn.close()


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check-rust", "write-fresh"):
        print(__doc__)
        sys.exit(2)
    db = connect(sys.argv[2])
    try:
        (check_rust if sys.argv[1] == "check-rust" else write_fresh)(db)
    finally:
        db.close()
    print("ok")


if __name__ == "__main__":
    main()

"""Self-tests of the Python reference tools (run: python -m pytest tests/python).

They check that the tools the Rust interop tests rely on behave: fixtures
are reproducible, describe.py is deterministic, check_fs.py really fails on
damaged files, and pack_py.py matches the pack done inside make_fixture.py.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script, *args, check=True):
    p = subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)],
                       capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {args} failed:\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp("fx")
    out = {}
    for name, extra in (("plain", []), ("packed", ["--pack"])):
        path = d / f"{name}.fs"
        out[name] = (path, json.loads(run("make_fixture.py", path, *extra).stdout))
    return d, out


def test_fixture_is_reproducible(fixtures, tmp_path):
    _, fx = fixtures
    again = json.loads(run("make_fixture.py", tmp_path / "again.fs").stdout)
    assert again["sha256"] == fx["plain"][1]["sha256"]
    assert fx["plain"][1]["transactions"] >= 100
    assert fx["packed"][1]["transactions"] < fx["plain"][1]["transactions"]


@pytest.mark.parametrize("name", ["plain", "packed"])
def test_check_and_describe(fixtures, name, tmp_path):
    _, fx = fixtures
    path = fx[name][0]
    one = run("describe.py", path).stdout
    two = run("describe.py", path).stdout
    assert one == two, "describe.py is not deterministic"
    assert len(one) < 4_000_000
    doc = json.loads(one)
    assert len(doc["transactions"]) == fx[name][1]["transactions"]
    expect = tmp_path / "expect.json"
    expect.write_text(one)
    run("check_fs.py", path, "--expect", expect)


def test_expect_mismatch_fails(fixtures, tmp_path):
    _, fx = fixtures
    doc = json.loads(run("describe.py", fx["plain"][0]).stdout)
    doc["transactions"][5]["records"][0]["data"] = "00"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    p = run("check_fs.py", fx["plain"][0], "--expect", bad, check=False)
    assert p.returncode != 0
    assert "$.transactions[5].records[0].data" in p.stderr


def test_pack_py_matches_fixture_pack(fixtures, tmp_path):
    _, fx = fixtures
    stop = fx["packed"][1]["pack_stop_tid"]
    out = tmp_path / "packed.fs"
    info = json.loads(run("pack_py.py", fx["plain"][0], out, stop).stdout)
    assert info["stop_tid"] == stop and info["changed"]
    with open(out, "rb") as a, open(fx["packed"][0], "rb") as b:
        assert a.read() == b.read()
    # Exact stop: one tid earlier leaves the stop transaction unpacked.
    earlier = f"{int(stop, 16) - 1:016x}"
    run("pack_py.py", fx["plain"][0], out, earlier)
    doc = json.loads(run("describe.py", out).stdout)
    status = {t["tid"]: t["status"] for t in doc["transactions"]}
    assert status[stop] == " "
    assert status[max(t for t in status if t < stop)] == "p"


def data_record(path, index):
    """File position of the first record of the index-th transaction with records."""
    from ZODB.FileStorage import FileStorage
    st = FileStorage(str(path), read_only=True)
    try:
        txns = [list(t) for t in st.iterator()]
        recs = [r for rs in txns if rs for r in rs if r.data is not None]
        return recs[index].pos
    finally:
        st.close()


# Offsets in a data record header: oid 0, tid 8, prev 16, tloc 24, vlen 32,
# plen 34 (each 8 bytes except vlen). Flip the last byte of each field.
@pytest.mark.parametrize("field,offset", [
    ("oid", 7), ("tid", 15), ("prev", 23), ("tloc", 31), ("vlen", 33), ("plen", 41)])
def test_corrupt_data_header_fails(fixtures, tmp_path, field, offset):
    _, fx = fixtures
    src = fx["plain"][0]
    pos = data_record(src, 40)
    bad = tmp_path / "bad.fs"
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as f:
        f.seek(pos + offset)
        b = f.read(1)
        f.seek(pos + offset)
        f.write(bytes([b[0] ^ 0x01]))
    p = run("check_fs.py", bad, check=False)
    assert p.returncode != 0, f"corrupt {field} not detected:\n{p.stdout}{p.stderr}"


def test_dangling_reference_fails(fixtures, tmp_path):
    """deleteObject on a reachable object: fsrefs must complain."""
    _, fx = fixtures
    bad = tmp_path / "dangling.fs"
    shutil.copyfile(fx["plain"][0], bad)
    from ZODB.Connection import TransactionMetaData
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import load_current, p64
    st = FileStorage(str(bad))
    try:
        oid = p64(1)  # root["map"], referenced by the root
        t = TransactionMetaData()
        st.tpc_begin(t)
        st.deleteObject(oid, load_current(st, oid)[1], t)
        st.tpc_vote(t)
        st.tpc_finish(t)
    finally:
        st.close()
    p = run("check_fs.py", bad, check=False)
    assert p.returncode != 0
    assert "fsrefs" in p.stderr

#!/usr/bin/env python3
"""Check a FileStorage file with ZODB's own tools; exit non-zero on any problem.

usage: python check_fs.py FILE.fs [--expect EXPECTED.json] [--full-probes]

Checks, in order (each failure is printed; the exit status is 1 if any failed):
1. fstest: ZODB.scripts.fstest.check(FILE) (format, lengths, tids in order).
2. fsrefs: ZODB.scripts.fsrefs.main(FILE) prints nothing (no missing or
   undone references, every current object loads). Records that are not
   pickles at all (first byte != 0x80, e.g. b'x' stored through the storage
   API) are treated as having no references instead of crashing fsrefs.
3. The file opens read-only; every data record's tid is its transaction's
   tid and its prev pointer is 0 or the oid's previous record; every oid in
   the index loads its current revision, and the result agrees with the last record of that oid in the
   iterator (no-data record -> POSKeyError, else the same data and tid).
   If FILE.index exists, it must give the same oid->position map as a full
   scan without it.
4. With --expect: describe.py's document for FILE equals EXPECTED.json
   (structural JSON equality); the first differing path is printed.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import traceback

import ZODB.scripts.fsrefs as fsrefs
import ZODB.scripts.fstest as fstest
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import load_current

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import describe  # noqa: E402


def check_fstest(path):
    try:
        fstest.check(path)
    except Exception as e:  # FormatError, struct.error, ...
        return [f"fstest: {type(e).__name__}: {e}"]
    return []


def check_fsrefs(path):
    real_get_refs = fsrefs.get_refs

    def get_refs(data):
        if data[:1] != b"\x80":  # not a pickle at all: opaque data
            return []
        return real_get_refs(data)

    out = io.StringIO()
    fsrefs.get_refs = get_refs
    try:
        with contextlib.redirect_stdout(out):
            fsrefs.main(path)
    except Exception:
        return ["fsrefs raised:\n" + traceback.format_exc() + out.getvalue()]
    finally:
        fsrefs.get_refs = real_get_refs
    text = out.getvalue()
    return [f"fsrefs reported problems:\n{text}"] if text.strip() else []


def check_loads(path):
    errors = []
    st = FileStorage(path, read_only=True)
    try:
        last, last_pos = {}, {}
        for t in st.iterator():
            for r in t:
                # fstest does not look at a data record's tid or prev.
                h = st._read_data_header(r.pos)
                if h.tid != t.tid:
                    errors.append(f"record at {r.pos}: tid {h.tid.hex()} "
                                  f"!= transaction tid {t.tid.hex()}")
                # prev is the previous record of the oid, or 0 (ZODB's own
                # pack writes 0 when it keeps an older, non-current record).
                if h.prev and h.prev != last_pos.get(r.oid):
                    errors.append(f"record at {r.pos}: prev {h.prev} != "
                                  f"{last_pos.get(r.oid)} (oid {r.oid.hex()})")
                last[r.oid] = r
                last_pos[r.oid] = r.pos
        index_oids = set(st._index.keys())
        if index_oids != set(last):
            errors.append(f"index oids != iterator oids: "
                          f"{len(index_oids)} vs {len(last)}")
        for oid in sorted(index_oids):
            rec = last.get(oid)
            try:
                data, tid = load_current(st, oid)
            except POSKeyError:
                if rec is None or rec.data is not None:
                    errors.append(f"oid {oid.hex()}: POSKeyError on load")
                continue
            except Exception as e:
                errors.append(f"oid {oid.hex()}: load failed: {e!r}")
                continue
            if rec is None or rec.data is None:
                errors.append(f"oid {oid.hex()}: loads but has no data record")
            elif (data, tid) != (rec.data, rec.tid):
                errors.append(f"oid {oid.hex()}: load != last iterator record")
        saved = dict(st._index.items()) if os.path.exists(path + ".index") else None
    finally:
        st.close()

    if saved is not None:
        # Open through a symlink that has no .index next to it: full scan.
        with tempfile.TemporaryDirectory() as d:
            link = os.path.join(d, "Data.fs")
            os.symlink(os.path.abspath(path), link)
            st = FileStorage(link, read_only=True)
            try:
                scanned = dict(st._index.items())
            finally:
                st.close()
        if scanned != saved:
            errors.append(f"{path}.index disagrees with a full scan")
    return errors


def first_diff(a, b, path="$"):
    """Return (path, a_part, b_part) of the first difference, or None."""
    if type(a) is not type(b):
        return path, a, b
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, "<missing>"), b.get(k, "<missing>")
            d = first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}.length", len(a), len(b)
        return None
    return None if a == b else (path, a, b)


def short(v, n=300):
    s = json.dumps(v)
    return s if len(s) <= n else s[:n] + "..."


def check_expect(path, expect_path, full_probes):
    with open(expect_path) as f:
        expected = json.load(f)
    # Round-trip through JSON so that both sides have the same types.
    actual = json.loads(describe.dumps(describe.describe(path, full_probes)))
    d = first_diff(expected, actual)
    if d is None:
        return []
    where, e, a = d
    return [f"describe mismatch at {where}:\n  expected: {short(e)}\n  actual:   {short(a)}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--expect", help="describe.py JSON the file must match")
    ap.add_argument("--full-probes", action="store_true",
                    help="describe with --full-probes (must match --expect)")
    args = ap.parse_args()

    errors = check_fstest(args.path)
    if not errors:  # the other checks assume a readable file
        errors += check_fsrefs(args.path)
        try:
            errors += check_loads(args.path)
        except Exception:
            errors.append("opening/loading raised:\n" + traceback.format_exc())
        if args.expect:
            errors += check_expect(args.path, args.expect, args.full_probes)
    for e in errors:
        print(f"check_fs: {args.path}: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"check_fs: {args.path}: ok")


if __name__ == "__main__":
    main()

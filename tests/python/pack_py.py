#!/usr/bin/env python3
"""Copy IN.fs to OUT.fs and pack OUT.fs with ZODB's FileStorage at a tid.

usage: python pack_py.py IN.fs OUT.fs PACK_TID_HEX [--via-time] [--no-gc]

Packs with GC (ZODB.serialize.referencesf) unless --no-gc; keeps no .old
file; IN.fs is not modified. Prints JSON: the requested tid, the pack time
(float seconds), the stop tid the packer really used, and whether the pack
changed the file.

FileStorage.pack(t) takes a float time and turns it into a stop tid with
TimeStamp(*gmtime(t)[:5] + (t % 60,)). A float near 1.7e9 s has ~0.24 us
resolution, a tid ~14 ns, so most tids do not survive
TimeStamp(tid).timeTime() -> pack(t) (the stop comes out a few units off).
By default this script therefore makes pack() use exactly PACK_TID_HEX as
its stop (it substitutes the TimeStamp that pack() builds; everything else
is FileStorage's own pack). --via-time uses the plain float round trip.

Semantics observed (ZODB 6.4): transactions with tid <= stop are "before the
pack"; of them only records current at stop and reachable from the root (or
needed by a later backpointer) are kept, their transactions get status 'p',
and transactions left with no records (including empty ones) vanish.
"""

import argparse
import json
import os
import shutil
import sys
import time

from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.TimeStamp import TimeStamp

# The module (the package re-exports the class under the same name).
fsmod = sys.modules["ZODB.FileStorage.FileStorage"]


class _ExactStop:
    """Stands in for persistent.TimeStamp inside FileStorage.pack()."""

    def __init__(self, tid):
        self.tid = tid

    def __call__(self, *args):
        return self

    def raw(self):
        return self.tid


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("tid", help="pack tid, 16 hex digits")
    ap.add_argument("--via-time", action="store_true",
                    help="pass TimeStamp(tid).timeTime() to pack() unchanged")
    ap.add_argument("--no-gc", action="store_true", help="pack without GC")
    args = ap.parse_args()

    tid = bytes.fromhex(args.tid)
    assert len(tid) == 8, "tid must be 16 hex digits"
    t = TimeStamp(tid).timeTime()
    via_time = TimeStamp(*time.gmtime(t)[:5] + (t % 60,)).raw()
    stop = via_time if args.via_time else tid

    for ext in ("", ".index", ".lock", ".tmp", ".old", ".pack"):
        if os.path.exists(args.dst + ext):
            os.remove(args.dst + ext)
    shutil.copyfile(args.src, args.dst)
    with open(args.dst, "rb") as f:
        before = f.read()

    st = FileStorage(args.dst, pack_keep_old=False)
    try:
        if args.via_time:
            st.pack(t, referencesf, gc=not args.no_gc)
        else:
            real = fsmod.TimeStamp
            fsmod.TimeStamp = _ExactStop(tid)
            try:
                st.pack(t, referencesf, gc=not args.no_gc)
            finally:
                fsmod.TimeStamp = real
    finally:
        st.close()
    for ext in (".lock", ".tmp"):
        if os.path.exists(args.dst + ext):
            os.remove(args.dst + ext)
    with open(args.dst, "rb") as f:
        changed = f.read() != before

    json.dump({"requested_tid": tid.hex(), "pack_time": t,
               "stop_tid": stop.hex(), "via_time_stop_tid": via_time.hex(),
               "changed": changed, "size": os.path.getsize(args.dst)},
              sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

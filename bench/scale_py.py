#!/usr/bin/env python3
"""Python FileStorage side of bench/scale.sh: one measurement per process.

usage: python bench/scale_py.py --file FILE --phase open|reads|pack [--reads N]
       python bench/scale_py.py --file FILE --phase index

  open   FileStorage(read_only=True): open time, RSS after, peak RSS
         (with or without Data.fs.index: the caller decides what lies beside FILE).
  reads  open, then --reads loadBefore(oid, maxtid) of random oids in [0, objects).
  pack   FileStorage(pack_gc=False).pack(now): pack time and peak RSS (on a copy).
  index  a read-write open and close, which scans the file and writes Data.fs.index.

Prints one JSON object on stdout.
"""

import argparse
import json
import random
import time

from ZODB.FileStorage import FileStorage
from ZODB.serialize import referencesf
from ZODB.utils import maxtid, p64


def status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def percentile(sorted_values, q):
    return sorted_values[round((len(sorted_values) - 1) * q)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--phase", required=True, choices=["open", "reads", "pack", "index"])
    ap.add_argument("--reads", type=int, default=100_000)
    a = ap.parse_args()
    before = status_kb("VmRSS")
    t0 = time.perf_counter()
    read_only = a.phase in ("open", "reads")
    st = FileStorage(a.file, read_only=read_only, pack_gc=False)
    doc = {"open_s": time.perf_counter() - t0, "objects": len(st), "rss_before_kb": before,
           "rss_after_open_kb": status_kb("VmRSS")}
    if a.phase == "reads":
        rng = random.Random(7)
        n = len(st)
        lat = []
        t1 = time.perf_counter()
        for _ in range(a.reads):
            oid = p64(rng.randrange(n))
            t = time.perf_counter()
            st.loadBefore(oid, maxtid)
            lat.append(time.perf_counter() - t)
        doc["reads"] = a.reads
        doc["reads_s"] = time.perf_counter() - t1
        lat.sort()
        doc["load_p50_us"] = percentile(lat, 0.5) * 1e6
        doc["load_p99_us"] = percentile(lat, 0.99) * 1e6
        doc["rss_after_reads_kb"] = status_kb("VmRSS")
    elif a.phase == "pack":
        t1 = time.perf_counter()
        st.pack(time.time(), referencesf)
        doc["pack_s"] = time.perf_counter() - t1
    st.close()
    doc["hwm_kb"] = status_kb("VmHWM")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()

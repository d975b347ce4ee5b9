#!/usr/bin/env python3
"""Python FileStorage workloads: the reference side of the storage benchmark.

usage: python bench/storage_py.py [--quick] [--only tiny,bulk,load,open,fsync]
                                  [--dir DIR] [--cache-dir DIR] [size flags]

Prints one JSON document on stdout (progress goes to stderr). Workloads,
all in-process on FileStorage through the storage API (no ZODB.DB, no ZEO):

  tiny   tiny commits: one ~300 B object per transaction
         (tpc_begin/store/tpc_vote/tpc_finish; FileStorage fsyncs at
         finish), overwriting objects from a pool of 1000, for
         --tiny-seconds (or --tiny-n transactions). tx/s and latency.
  bulk   one transaction of --bulk-objects new ~300 B objects, repeated
         --bulk-reps times; median seconds per transaction.
  load   --load-objects objects created in 1000-object transactions, then
         --load-n random loadBefore(oid, maxtid) calls; loads/s.
  open   FileStorage(read_only=True) open time of a --open-mb MB file with
         --open-oids distinct objects (then revisions of random ones), with
         and without Data.fs.index (median of --open-reps; warm page cache).
         The file is built once with big batched commits and reused from
         --cache-dir (name encodes the parameters).
  fsync  raw disk: append 300 B + os.fsync in a loop for --fsync-seconds.

--quick shrinks everything for a smoke run (a few seconds). Object data is
deterministic pseudo-random bytes (seed 42). Temporary storages go to --dir
(default: the system temp dir); the JSON reports its filesystem type, since
fsync on tmpfs is meaningless.
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager

import ZODB
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.utils import maxtid, z64

OBJ_SIZE = 300


def log(msg):
    print(f"[storage_py] {msg}", file=sys.stderr, flush=True)


def fs_type(path):
    """Filesystem type of the mount holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, typ = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, mnt, t = line.split()[:3]
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, typ = mnt, t
    except OSError:
        pass
    return typ


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


def lat_summary(samples):
    return {"p50_ms": pct(samples, 0.50) * 1e3, "p99_ms": pct(samples, 0.99) * 1e3,
            "max_ms": max(samples) * 1e3}


@contextmanager
def temp_storage(base):
    with tempfile.TemporaryDirectory(dir=base, prefix="zeors-bench-") as d:
        st = FileStorage(os.path.join(d, "Data.fs"), create=True)
        try:
            yield st
        finally:
            st.close()


def commit(st, stores, user=b"", desc=b""):
    """One storage-level transaction; stores = [(oid, serial, data)]."""
    t = TransactionMetaData(user, desc)
    st.tpc_begin(t)
    for oid, serial, data in stores:
        st.store(oid, serial, data, "", t)
    st.tpc_vote(t)
    return st.tpc_finish(t)


def payloads(rng, n):
    return [rng.randbytes(OBJ_SIZE) for _ in range(n)]


def bulk_create(st, data, batch=1000):
    """Create len(data) objects in batch-sized transactions; return oids, serials."""
    oids, serials = [], {}
    for i in range(0, len(data), batch):
        chunk = [(st.new_oid(), z64, d) for d in data[i:i + batch]]
        tid = commit(st, chunk)
        for oid, _, _ in chunk:
            oids.append(oid)
            serials[oid] = tid
    return oids, serials


def bench_tiny(a, rng):
    with temp_storage(a.dir) as st:
        pool = payloads(rng, 64)
        oids, serials = bulk_create(st, payloads(rng, 1000))
        lat, n = [], 0
        start = time.perf_counter()
        while True:
            if a.tiny_n and n >= a.tiny_n:
                break
            if not a.tiny_n and time.perf_counter() - start >= a.tiny_seconds:
                break
            oid = oids[n % len(oids)]
            t0 = time.perf_counter()
            serials[oid] = commit(st, [(oid, serials[oid], pool[n % len(pool)])])
            lat.append(time.perf_counter() - t0)
            n += 1
        elapsed = time.perf_counter() - start
    return {"transactions": n, "seconds": elapsed, "tx_per_s": n / elapsed, **lat_summary(lat)}


def bench_bulk(a, rng):
    times = []
    with temp_storage(a.dir) as st:
        for _ in range(a.bulk_reps):
            data = payloads(rng, a.bulk_objects)
            stores = [(st.new_oid(), z64, d) for d in data]
            t0 = time.perf_counter()
            commit(st, stores)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"objects_per_tx": a.bulk_objects, "reps": a.bulk_reps, "median_s": med,
            "min_s": min(times), "max_s": max(times), "objects_per_s": a.bulk_objects / med}


def bench_load(a, rng):
    with temp_storage(a.dir) as st:
        t0 = time.perf_counter()
        oids, _ = bulk_create(st, payloads(rng, a.load_objects))
        create_s = time.perf_counter() - t0
        probe = [oids[rng.randrange(len(oids))] for _ in range(a.load_n)]
        t0 = time.perf_counter()
        for oid in probe:
            st.loadBefore(oid, maxtid)
        elapsed = time.perf_counter() - t0
    return {"objects": a.load_objects, "create_s": create_s, "loads": a.load_n,
            "seconds": elapsed, "loads_per_s": a.load_n / elapsed,
            "us_per_load": elapsed / a.load_n * 1e6}


def build_open_file(a, rng):
    """Build (or reuse) the big file for the open benchmark; return its path."""
    os.makedirs(a.cache_dir, exist_ok=True)
    path = os.path.join(a.cache_dir, f"open-{a.open_mb}mb-{a.open_oids}oids.fs")
    if os.path.exists(path) and os.path.exists(path + ".index") and \
            os.path.exists(path + ".done"):
        return path, False
    for ext in ("", ".index", ".lock", ".tmp", ".done"):
        if os.path.exists(path + ext):
            os.remove(path + ext)
    target = a.open_mb * 1024 * 1024
    pool = payloads(rng, 256)
    st = FileStorage(path, create=True)
    try:
        oids, serials, i, ntx = [], {}, 0, 0
        while st.getSize() < target:
            # Big batched commits: new objects until there are open_oids of
            # them, then new revisions of random ones (each oid once per
            # transaction: a second store would leave two records).
            stores, seen = [], set()
            for _ in range(10000):
                if len(oids) + len(stores) < a.open_oids:
                    oid, serial = st.new_oid(), z64
                else:
                    oid = oids[rng.randrange(len(oids))]
                    serial = serials[oid]
                if oid not in seen:
                    seen.add(oid)
                    stores.append((oid, serial, pool[i % len(pool)]))
                i += 1
            tid = commit(st, stores)
            for oid, _, _ in stores:
                if oid not in serials:
                    oids.append(oid)
                serials[oid] = tid
            ntx += 1
            if ntx % 50 == 0:
                log(f"building {path}: {st.getSize() >> 20} MB")
    finally:
        st.close()  # writes Data.fs.index
    for ext in (".lock", ".tmp"):
        if os.path.exists(path + ext):
            os.remove(path + ext)
    open(path + ".done", "w").close()
    return path, True


def bench_open(a, rng):
    t0 = time.perf_counter()
    path, built = build_open_file(a, rng)
    build_s = time.perf_counter() - t0

    def timed_open(p):
        t = time.perf_counter()
        st = FileStorage(p, read_only=True)
        n = len(st)
        el = time.perf_counter() - t
        st.close()
        return el, n

    with_idx = [timed_open(path) for _ in range(a.open_reps)]
    # A symlink in a directory without the index forces the full scan.
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        link = os.path.join(d, "Data.fs")
        os.symlink(os.path.abspath(path), link)
        without = [timed_open(link) for _ in range(a.open_reps)]
        rss_without = rss_of_open(link)
    rss_with = rss_of_open(path)
    return {"file": path, "file_mb": os.path.getsize(path) / 2**20,
            "index_mb": os.path.getsize(path + ".index") / 2**20,
            "objects": with_idx[0][1], "built_now": built, "build_s": build_s if built else None,
            "with_index_s": statistics.median(t for t, _ in with_idx),
            "without_index_s": statistics.median(t for t, _ in without),
            "reps": a.open_reps, "page_cache": "warm",
            "rss_with_index": rss_with, "rss_without_index": rss_without}


def status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_open(path):
    """Child side of rss_of_open: RSS before and after one read-only open."""
    before = status_kb("VmRSS")
    t = time.perf_counter()
    st = FileStorage(path, read_only=True)
    seconds = time.perf_counter() - t
    print(json.dumps({"objects": len(st), "seconds": seconds, "rss_before_kb": before,
                      "rss_after_kb": status_kb("VmRSS"), "hwm_kb": status_kb("VmHWM")}))


def rss_of_open(path):
    """Opens path read-only in a fresh interpreter (ZODB already imported before the baseline);
    its RSS growth per object is what fsIndex costs."""
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-open", path],
                         check=True, capture_output=True, text=True).stdout
    v = json.loads(out)
    n = max(v["objects"], 1)
    v["rss_bytes_per_object"] = (v["rss_after_kb"] - v["rss_before_kb"]) * 1024 / n
    v["peak_bytes_per_object"] = (v["hwm_kb"] - v["rss_before_kb"]) * 1024 / n
    return v


def bench_fsync(a, rng):
    rec = rng.randbytes(OBJ_SIZE)
    lat = []
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        fd = os.open(os.path.join(d, "append.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            start = time.perf_counter()
            while time.perf_counter() - start < a.fsync_seconds:
                t0 = time.perf_counter()
                os.write(fd, rec)
                os.fsync(fd)
                lat.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
        finally:
            os.close(fd)
    return {"ops": len(lat), "seconds": elapsed, "ops_per_s": len(lat) / elapsed,
            "bytes_per_op": OBJ_SIZE, **lat_summary(lat)}


BENCHES = {"tiny": bench_tiny, "bulk": bench_bulk, "load": bench_load,
           "open": bench_open, "fsync": bench_fsync}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    ap.add_argument("--only", default=",".join(BENCHES),
                    help="comma-separated subset of: " + ",".join(BENCHES))
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where temp storages go")
    ap.add_argument("--cache-dir", default=os.environ.get(
        "ZEORS_BENCH_CACHE", os.path.join(repo, "bench", "out", "cache")),
        help="where the big open-benchmark file is kept (env ZEORS_BENCH_CACHE)")
    ap.add_argument("--tiny-seconds", type=float, default=5.0)
    ap.add_argument("--tiny-n", type=int, default=0, help="fixed count instead of seconds")
    ap.add_argument("--bulk-objects", type=int, default=1000)
    ap.add_argument("--bulk-reps", type=int, default=20)
    ap.add_argument("--load-objects", type=int, default=100_000)
    ap.add_argument("--load-n", type=int, default=200_000)
    ap.add_argument("--open-mb", type=int, default=1024)
    ap.add_argument("--open-oids", type=int, default=1_000_000)
    ap.add_argument("--open-reps", type=int, default=3)
    ap.add_argument("--fsync-seconds", type=float, default=3.0)
    ap.add_argument("--rss-open", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_open:
        return rss_open(a.rss_open)
    if a.quick:
        a.tiny_seconds, a.bulk_reps = 0.5, 3
        a.load_objects, a.load_n = 5000, 10000
        a.open_mb, a.open_oids, a.open_reps = 8, 10000, 1
        a.fsync_seconds = 0.3
    only = [b for b in a.only.split(",") if b]
    unknown = set(only) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s): {','.join(sorted(unknown))}")

    results = {}
    for name in only:
        log(f"running {name}")
        results[name] = BENCHES[name](a, random.Random(42))
        log(f"{name}: {json.dumps(results[name])}")
    params = {k: v for k, v in vars(a).items() if k != "only"}
    json.dump({"impl": "python-filestorage", "python": platform.python_version(),
               "zodb": getattr(ZODB, "__version__", None) or _dist_version("ZODB"),
               "host": platform.node(), "cpus": os.cpu_count(), "dir_fs_type": fs_type(a.dir),
               "params": params, "results": results}, sys.stdout, indent=1)
    print()


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    main()

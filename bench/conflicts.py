"""Store-conflict benchmark: N Python ZEO client processes incrementing Lengths and inserting
into one OOBTree, against runzeo, zeo-server and zeo-server --client-conflict-resolution, one
after the other in one run (bench/conflicts.sh runs it; see docs/BENCHMARKS.md).

Each client process is one ClientStorage + ZODB.DB + Connection. A transaction adds 1 to each
of the Lengths (a BTreeFolder2's count, a catalog's length...) and inserts one new key into the
shared OOBTree (a folder's id tree), retried as Zope retries a request: up to --attempts
attempts, a ConflictError each time it fails. Counted per server:

- commits, and throughput (commits per second over the window, all clients);
- conflicts that reached clients: ConflictErrors raised by commit (the server did not merge
  them, and neither could the client);
- resolved by clients: conflicts the server sent back to a client, which merged them itself
  (ClientStorage.tryToResolveConflict succeeded: one extra vote round trip each);
- exhausted: transactions that still failed after --attempts attempts (a Zope request answered
  with an error);
- the Lengths are checked against the commits (every commit counted exactly once).

Bounded in time: each server gets --seconds of load; every wait has a deadline and a client
that does not finish in time fails the run.
"""
import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "interop"))

import servers  # noqa: E402

CONFIGS = (
    ("runzeo (server-side resolution)", "python", {"client_conflict_resolution": False}),
    ("zeo-server (server-side resolution, default)", "rust", {"client_conflict_resolution": False}),
    ("zeo-server --client-conflict-resolution", "rust", {"client_conflict_resolution": True}),
)


def seed(addr, lengths):
    import transaction
    import ZODB
    from BTrees.Length import Length
    from BTrees.OOBTree import OOBTree
    from ZEO.ClientStorage import ClientStorage

    db = ZODB.DB(ClientStorage(addr, wait_timeout=30))
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    conn.root()["lengths"] = [Length() for _ in range(lengths)]
    conn.root()["tree"] = OOBTree()
    tm.commit()
    db.close()


def client(addr, index, lengths, seconds, attempts, start_at, results):
    import transaction
    import ZODB
    from ZODB.POSException import ConflictError
    from ZEO.ClientStorage import ClientStorage

    storage = ClientStorage(addr, wait_timeout=30)
    counts = {"commits": 0, "conflicts": 0, "client_resolved": 0, "exhausted": 0, "kinds": {}}
    resolve = storage.tryToResolveConflict

    def counting_resolve(*args, **kw):
        data = resolve(*args, **kw)       # raises ConflictError when it cannot
        counts["client_resolved"] += 1
        return data

    storage.tryToResolveConflict = counting_resolve
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        for attempt in range(attempts):
            try:
                tm.begin()
                root = conn.root()
                for length in root["lengths"]:
                    length.change(1)
                root["tree"][f"{index:03d}-{n:07d}"] = n
                tm.commit()
                counts["commits"] += 1
                break
            except ConflictError as e:
                tm.abort()
                counts["conflicts"] += 1
                kind = type(e).__name__
                counts["kinds"][kind] = counts["kinds"].get(kind, 0) + 1
        else:
            counts["exhausted"] += 1
    conn.close()
    db.close()
    results.put(counts)


def measure(name, kind, options, args, workdir):
    srv = servers.Server(kind, os.path.join(workdir, name.split()[0] + str(len(os.listdir(workdir)))), 0,
                         **options)
    srv.start()
    try:
        seed(srv.addr, args.lengths)
        results = multiprocessing.Queue()
        start_at = time.time() + 2.0     # every client connected before the window opens
        procs = [multiprocessing.Process(
            target=client, args=(srv.addr, i, args.lengths, args.seconds, args.attempts, start_at, results))
            for i in range(args.clients)]
        for p in procs:
            p.start()
        totals = {"commits": 0, "conflicts": 0, "client_resolved": 0, "exhausted": 0, "kinds": {}}
        for _ in procs:
            counts = results.get(timeout=args.seconds + 60)
            for k in ("commits", "conflicts", "client_resolved", "exhausted"):
                totals[k] += counts[k]
            for kind, n in counts["kinds"].items():
                totals["kinds"][kind] = totals["kinds"].get(kind, 0) + n
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                raise RuntimeError(f"{name}: a client did not exit")
        check = check_lengths(srv.addr)
        if check != {totals["commits"]}:
            raise RuntimeError(f"{name}: Lengths {sorted(check)} != commits {totals['commits']}")
        totals["tx_per_s"] = round(totals["commits"] / args.seconds, 1)
        return totals
    finally:
        srv.stop()


def check_lengths(addr):
    import ZODB
    from ZEO.ClientStorage import ClientStorage

    db = ZODB.DB(ClientStorage(addr, wait_timeout=30))
    conn = db.open()
    values = {length() for length in conn.root()["lengths"]}
    conn.close()
    db.close()
    return values


def table(rows, args):
    lines = [
        f"{args.clients} Python ZEO client processes (ZEO 6.2, ZODB 6.4, BTrees 6.5), {args.seconds} s per server, "
        f"each transaction adding 1 to {args.lengths} Lengths and inserting one key into one shared OOBTree, "
        f"up to {args.attempts} attempts per transaction (as Zope retries a request); the servers one after "
        "the other on fresh FileStorages, zeo-server the release build.",
        "",
        "| server | commits/s | conflicts that reached clients (per 1000 commits; kinds) | resolved by clients "
        "| transactions that exhausted retries |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        rate = round(1000 * r["conflicts"] / max(1, r["commits"]))
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(r["kinds"].items())) or "-"
        lines.append(f"| {name} | {r['tx_per_s']} | {r['conflicts']} ({rate}; {kinds}) | {r['client_resolved']} "
                     f"| {r['exhausted']} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--lengths", type=int, default=3)
    ap.add_argument("--attempts", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the servers' data directories go")
    ap.add_argument("--json", default=None, help="write the raw results here")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="conflicts-", dir=args.dir)
    rows = []
    for name, kind, options in CONFIGS:
        print(f"conflicts.py: {name} ...", file=sys.stderr)
        rows.append((name, measure(name, kind, options, args, workdir)))
        print(f"conflicts.py: {name}: {rows[-1][1]}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    sys.stdout.write(table(rows, args))


if __name__ == "__main__":
    main()

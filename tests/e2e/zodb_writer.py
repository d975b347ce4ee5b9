"""A real Python ZODB/ZEO client that writes without pause through a service address and keeps
a log of every acknowledged commit, so that a failover drill can count afterwards what it lost.

    zodb_writer.py write HOST:PORT ACK_LOG [--key KEY]
        Commits one transaction after another until SIGTERM or SIGINT: each sets
        root[KEY][N] = N (an OOBTree; KEY defaults to zodb_writer) for a fresh N. A commit that fails (the server
        went away mid-commit) is aborted and the next one takes a new N: it is unacknowledged and
        may or may not be there. After each acknowledged commit one line "N TID UNIX_TIME" is
        appended to ACK_LOG (and flushed: the log survives whatever happens to the servers).

    zodb_writer.py check HOST:PORT ACK_LOG [--key KEY] [--event NAME=UNIX_TIME ...]
        Reads the tree back through a new connection and prints one JSON object:
        {"acknowledged", "lost", "lost_ids" (at most 100), "max_gap_ms", "gaps_ms": {NAME: ms}}.
        An event's gap is the longest pause between two acknowledgements from the event until
        the next event: the outage as this client saw it. Exit status 3 if any acknowledged
        commit is lost.

Used by tests/e2e/netpair.py (the network-namespace tests and benchmark) and by
scripts/compose-drill, which runs it on the host inside a client container's network
namespace (so that the name of the service address resolves through Docker's DNS).
"""
import argparse
import json
import logging
import signal
import sys
import time

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from ZEO.ClientStorage import ClientStorage

EXIT_LOST = 3


def address(text):
    """HOST:PORT, or several comma-separated: ClientStorage then connects to the writable one
    (clients connected straight to the servers of a pair, as in tests/e2e/fencepair.py)."""
    addrs = []
    for part in text.split(","):
        host, port = part.rsplit(":", 1)
        addrs.append((host, int(port)))
    return addrs[0] if len(addrs) == 1 else addrs


def open_db(addr):
    # Short reconnection polls: the address moves during a failover and the drill measures how
    # soon this client writes again. wait_timeout bounds how long one call waits for a server.
    storage = ClientStorage(address(addr), wait_timeout=60, min_disconnect_poll=0.1,
                            max_disconnect_poll=0.5)
    return ZODB.DB(storage)


def write(addr, log_path, key):
    # ZEO's own account of its connections (to stderr): what a drill shows when it fails.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    db = open_db(addr)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    while True:
        try:
            tm.begin()
            if key not in conn.root():
                conn.root()[key] = OOBTree()
                tm.commit()
            break
        except Exception as e:  # a conflict with another client's first write, or a failover
            tm.abort()
            print(f"zodb_writer: setting up: {type(e).__name__}: {e}", file=sys.stderr)
            time.sleep(0.2)
    n = failed = 0
    with open(log_path, "a") as log:
        while not stop:
            n += 1
            try:
                tm.begin()
                conn.root()[key][n] = n
                tm.commit()
            except Exception as e:
                tm.abort()
                failed += 1
                print(f"zodb_writer: commit {n} failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            log.write(f"{n} {db.storage.lastTransaction().hex()} {time.time():.6f}\n")
            log.flush()
    db.close()
    print(f"zodb_writer: stopped after {n} commits, {failed} failed", file=sys.stderr)


def read_log(log_path):
    acked = []
    with open(log_path) as f:
        for line in f:
            n, _tid, t = line.split()
            acked.append((int(n), float(t)))
    return acked


def longest_gaps(times, events):
    """For each event, the longest pause between two acknowledgements that ends after it and not
    after the next event: the outage as this client saw it. None without an acknowledgement on
    both sides of the event."""
    gaps = {}
    ordered = sorted(events, key=lambda e: e[1])
    for i, (name, start) in enumerate(ordered):
        end = ordered[i + 1][1] if i + 1 < len(ordered) else float("inf")
        pauses = [b - a for a, b in zip(times, times[1:]) if start < b <= end]
        spans = any(t <= start for t in times) and any(t > start for t in times)
        gaps[name] = max(pauses) * 1000 if spans and pauses else None
    return gaps


def check(addr, log_path, key, events):
    acked = read_log(log_path)
    times = sorted(t for _, t in acked)
    db = open_db(addr)
    conn = db.open()
    tree = conn.root().get(key)
    lost = [n for n, _ in acked if tree is None or tree.get(n) != n]
    db.close()
    report = {
        "acknowledged": len(acked),
        "lost": len(lost),
        "lost_ids": lost[:100],
        "max_gap_ms": max((b - a for a, b in zip(times, times[1:])), default=0) * 1000,
        "gaps_ms": longest_gaps(times, events),
    }
    print(json.dumps(report))
    return EXIT_LOST if lost else 0


def event(text):
    name, t = text.split("=", 1)
    return name, float(t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    c = sub.add_parser("check")
    for s in (w, c):
        s.add_argument("address", help="HOST:PORT[,HOST:PORT...]")
        s.add_argument("log", help="the log of acknowledged commits")
        s.add_argument("--key", default="zodb_writer", help="the root key of this writer's tree")
    c.add_argument("--event", type=event, action="append", default=[], help="NAME=UNIX_TIME")
    args = p.parse_args()
    if args.command == "write":
        write(args.address, args.log, args.key)
        return 0
    return check(args.address, args.log, args.key, args.event)


if __name__ == "__main__":
    sys.exit(main())

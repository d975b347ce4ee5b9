"""A real Python ZODB application writing through a ZEO service address during failovers.

Each transaction adds one key to this writer's OOBTree under the root (ZODB, ZEO's
ClientStorage, BTrees: what a Zope/Plone process does). A commit that raises is aborted and
retried with the next key; only commits that returned count as acknowledged. At the end, the
writer reconnects, reads every acknowledged key back, and writes a JSON report:

    {"acknowledged": N, "lost": N, "max_gap_ms": F, "acks": [monotonic seconds, ...]}

usage: python pywriter.py --address HOST:PORT --duration SECONDS --out REPORT.json [--name NAME]
Exit status 3 when an acknowledged write is lost.
"""
import argparse
import json
import logging
import sys
import time

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from ZEO.ClientStorage import ClientStorage


def open_db(address, wait_timeout):
    host, port = address.rsplit(":", 1)
    # While disconnected, a call waits this long for a connection, then fails and is retried. (A
    # call already sent on a connection whose server vanished waits until TCP gives up: ZEO has no
    # per-call timeout; a moved address answers the next retransmission with a reset.)
    storage = ClientStorage((host, int(port)), wait_timeout=wait_timeout)
    return ZODB.DB(storage)


def write(db, name, deadline, acks, values):
    conn = db.open()
    i = len(values)
    while time.monotonic() < deadline:
        i += 1
        try:
            root = conn.root()
            if name not in root:
                root[name] = OOBTree()
            root[name][i] = f"{name} write {i}"
            transaction.commit()
        except Exception as e:  # a failover in progress: disconnected, read-only, conflict
            transaction.abort()
            logging.debug("write %d failed: %r", i, e)
            time.sleep(0.05)
            try:
                conn.sync()
            except Exception:
                pass
            continue
        acks.append(time.monotonic())
        values[i] = f"{name} write {i}"
    conn.close()


def verify(db, name, values, limit):
    deadline = time.monotonic() + limit
    while True:
        try:
            conn = db.open()
            conn.sync()
            tree = conn.root().get(name, OOBTree())
            lost = sum(1 for k, v in values.items() if tree.get(k) != v)
            conn.close()
            return lost
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="pywriter")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    db = open_db(args.address, args.timeout)
    acks, values = [], {}
    start = time.monotonic()
    write(db, args.name, start + args.duration, acks, values)
    end = time.monotonic()
    lost = verify(db, args.name, values, 60)
    db.close()
    # From the start to the first ack and from the last ack to the end count too: a writer stuck
    # from a failover to the end saw that whole stretch as an outage.
    points = [start, *acks, end]
    gaps = [b - a for a, b in zip(points, points[1:])]
    report = {"acknowledged": len(values), "lost": lost, "max_gap_ms": max(gaps, default=0) * 1e3, "acks": acks}
    with open(args.out, "w") as f:
        json.dump(report, f)
    print(f"pywriter {args.name}: acknowledged {len(values)}, lost {lost}, longest gap {report['max_gap_ms']:.0f} ms")
    sys.exit(3 if lost else 0)


if __name__ == "__main__":
    main()

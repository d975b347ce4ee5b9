"""A ZODB client process driven by JSON lines on stdin (one reply line per command on stdout).

    python worker.py HOST PORT

It opens ZODB.DB(ClientStorage((HOST, PORT))) and works on root['shared'], a
PersistentMapping the test creates first. Commands:
  {"op": "get", "key": K}                       -> {"value": V}   (starts a new transaction)
  {"op": "set", "key": K, "value": V}           -> {"tid": HEX}
  {"op": "wait", "key": K, "value": V, "timeout": S}
                                                -> {"ok": bool, "value": last seen, "seconds": s}
  {"op": "incr", "key": K, "n": N}              -> {"conflicts": C, "value": V}
        N increments of shared[K] (a PersistentMapping {"v": int}), each its own
        transaction, retried on ConflictError
  {"op": "last"}                                -> {"tid": HEX}  (storage.lastTransaction())
  {"op": "close"}                               -> {"closed": true}, then exit
Any exception -> {"error": "Class: message"}.
"""
import json
import os
import sys
import time

import transaction
import ZODB
from ZODB.POSException import ConflictError

from ZEO.ClientStorage import ClientStorage


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    storage = ClientStorage((host, port), wait_timeout=20)
    db = ZODB.DB(storage)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)

    def shared():
        return conn.root()["shared"]

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        try:
            if op == "get":
                tm.begin()
                reply({"value": shared().get(cmd["key"])})
            elif op == "set":
                tm.begin()
                shared()[cmd["key"]] = cmd["value"]
                tm.commit()
                reply({"tid": storage.lastTransaction().hex()})
            elif op == "wait":
                t0 = time.monotonic()
                deadline = t0 + cmd.get("timeout", 10)
                while True:
                    tm.begin()
                    value = shared().get(cmd["key"])
                    if value == cmd["value"] or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                reply({"ok": value == cmd["value"], "value": value,
                       "seconds": round(time.monotonic() - t0, 3)})
            elif op == "incr":
                conflicts = 0
                for _ in range(cmd["n"]):
                    for _attempt in range(100):
                        try:
                            tm.begin()
                            counter = shared()[cmd["key"]]
                            counter["v"] = counter["v"] + 1
                            tm.commit()
                            break
                        except ConflictError:
                            conflicts += 1
                            tm.abort()
                    else:
                        raise RuntimeError("too many conflicts")
                tm.begin()
                reply({"conflicts": conflicts, "value": shared()[cmd["key"]]["v"]})
            elif op == "last":
                reply({"tid": storage.lastTransaction().hex()})
            elif op == "close":
                tm.abort()
                conn.close()
                db.close()
                reply({"closed": True})
                return
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as exc:  # reported to the test, which fails
            tm.abort()
            reply({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()

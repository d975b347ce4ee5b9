"""Client benchmark, Python side: ZEO's ClientStorage against a running server, the same three
measures as client/examples/client_bench.rs (cold loads, cache-hit loads, tiny commits).

usage: client_py.py setup ADDR OIDS_FILE N     (creates N objects of ~300 bytes, writes their oids)
       client_py.py run ADDR OIDS_FILE [--quick]   (prints one JSON document)
"""
import json
import sys
import time

from ZEO.ClientStorage import ClientStorage
from ZODB.Connection import TransactionMetaData
from ZODB.utils import p64, u64, z64


def addr_of(s):
    host, port = s.rsplit(":", 1)
    return (host, int(port))


def commit(cs, writes):
    t = TransactionMetaData()
    cs.tpc_begin(t)
    for oid, serial, data in writes:
        cs.store(oid, serial, data, "", t)
    cs.tpc_vote(t)
    return cs.tpc_finish(t)


def setup(addr, path, n):
    cs = ClientStorage(addr_of(addr), wait_timeout=30)
    oids = [cs.new_oid() for _ in range(n)]
    for i in range(0, n, 500):
        commit(cs, [(o, z64, b"x" * 300) for o in oids[i:i + 500]])
    cs.close()
    with open(path, "w") as f:
        f.writelines("%016x\n" % u64(o) for o in oids)


def run(addr, path, quick):
    oids = [p64(int(line, 16)) for line in open(path)]
    cs = ClientStorage(addr_of(addr), wait_timeout=30)
    t = time.perf_counter()
    for o in oids:
        cs.load(o)
    cold = len(oids) / (time.perf_counter() - t)
    rounds = 5 if quick else 20
    t = time.perf_counter()
    for _ in range(rounds):
        for o in oids:
            cs.load(o)
    hit_ns = (time.perf_counter() - t) * 1e9 / (rounds * len(oids))
    n = 300 if quick else 2000
    target = oids[0]
    _, serial = cs.load(target)
    t = time.perf_counter()
    for i in range(n):
        serial = commit(cs, [(target, serial, b"py %96d" % i)])
    commits = n / (time.perf_counter() - t)
    cs.close()
    print(json.dumps({"cold_loads_per_s": cold, "cache_hit_ns": hit_ns, "commits_per_s": commits,
                      "objects": len(oids)}))


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        run(sys.argv[2], sys.argv[3], "--quick" in sys.argv)

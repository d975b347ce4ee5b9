#!/usr/bin/env python3
"""Server benchmark: the same Python ZEO client workload against the Python ZEO server (runzeo) and
against zeo-server, in one run, at several client-process counts.

usage: server_load.py [--quick] [--clients 1,2,8] [--seconds S] [--rounds R] [--only add,...]
                      [--kinds python,rust] [--dir DIR] --out-py FILE --out-rs FILE

Both servers are started at the beginning through tests/interop/servers.py (zeo-server from
$ZEORS_SERVER_BIN), each on a fresh FileStorage in its own directory under --dir, with the same
invalidation queue size; runzeo keeps its default settings (server-side conflict resolution; no
conflicts happen here). Both stay up for the whole run, idle while the other one is measured. For
each client count, the servers take turns in ABBA order over --rounds rounds (the order flips at
each client count too), to spread the drift of a shared machine. In each round, that many worker
processes (this script with --worker, each one ClientStorage + ZODB.DB + one Connection) connect,
run every workload in turn, and quit; a workload's result adds up its rounds.

Workloads (each process on its own objects, so nothing conflicts; each runs until a common deadline):
  add     each transaction adds --objects new ~300 B PersistentMappings      objects/s
  update  each transaction modifies the process's first --objects objects   objects/s
  tiny    each transaction modifies one ~300 B object (of 100, in turn)     tx/s, latency per tx
  cold    Connection.get + activate through an empty ZEO client cache and an empty Connection
          cache (both emptied before each pass over the process's objects): one loadBefore
          round trip per object                                              objects/s, latency
  loadbefore  raw storage._server.call('loadBefore', oid, maxtid) on random oids of the process
          (ZEO 6's _server.load_before would answer from the client cache)   calls/s, latency

Around each workload, the server's CPU time (utime+stime from /proc/PID/stat) is read before the
start signal and after the last worker reported; its VmRSS/VmHWM (/proc/PID/status) after. Each
JSON document (one per server) holds the results per client count and workload.
"""

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKLOADS = ("add", "update", "tiny", "cold", "loadbefore")
KIND_KEY = {"python": "py", "rust": "rs"}


def log(*a):
    print("server_load:", *a, file=sys.stderr, flush=True)


# -- worker side ------------------------------------------------------------------------------


def payloads(seed, n=256, size=256):
    """Pseudo-random byte strings; a PersistentMapping {'data': <256 B>} pickles to ~300 B."""
    r = random.Random(seed)
    return [r.randbytes(size) for _ in range(n)]


def worker_main(host, port, wid, objects, db_cache):
    import transaction
    import ZODB
    from persistent.mapping import PersistentMapping
    from ZEO.ClientStorage import ClientStorage
    from ZODB.utils import p64, u64

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the pipe

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def recv():
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        return json.loads(line)

    data = payloads(42 + wid)
    storage = ClientStorage((host, port), wait=True, wait_timeout=60)
    db = ZODB.DB(storage, cache_size=db_cache)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    oids = []          # every object this process added, in order
    rng = random.Random(wid)
    counter = [0]

    def payload():
        counter[0] += 1
        return data[counter[0] % len(data)]

    def empty_caches():
        tm.abort()
        conn.cacheMinimize()
        storage._cache.clear()

    # The probe object checks the size of one stored record.
    probe = PersistentMapping({"data": data[0]})
    tm.begin()
    conn.add(probe)
    tm.commit()
    record_bytes = len(storage.load(probe._p_oid)[0])
    send({"hello": wid, "record_bytes": record_bytes})

    def prepare(workload):
        """Set up outside the measured window; return op() -> number of operations done."""
        if workload == "add":
            def op():
                tm.begin()
                objs = [PersistentMapping({"data": payload()}) for _ in range(objects)]
                for o in objs:
                    conn.add(o)
                tm.commit()
                oids.extend(o._p_oid for o in objs)
                return objects
            return op, None
        if not oids:
            raise RuntimeError(f"{workload} needs objects: run add first")
        if workload in ("update", "tiny"):
            n = objects if workload == "update" else 100
            tm.begin()
            mine = [conn.get(oid) for oid in oids[:n]]
            for o in mine:
                o._p_activate()  # warm: updates measure the write path only
            if workload == "update":
                def op():
                    tm.begin()
                    for o in mine:
                        o["data"] = payload()
                    tm.commit()
                    return len(mine)
            else:
                it = [0]

                def op():
                    tm.begin()
                    o = mine[it[0] % len(mine)]
                    it[0] += 1
                    o["data"] = payload()
                    tm.commit()
                    return 1
            return op, None
        if workload == "cold":
            order = list(oids)
            rng.shuffle(order)
            pos = [0]
            empty_caches()
            tm.begin()

            def op():
                obj = conn.get(order[pos[0]])
                obj._p_activate()
                pos[0] += 1
                return 1

            def between():
                if pos[0] == len(order):  # pass done: empty both caches again (not timed)
                    pos[0] = 0
                    empty_caches()
                    tm.begin()
            return op, between
        if workload == "loadbefore":
            maxtid = p64(u64(storage.lastTransaction()) + 1)
            call = storage._server.call
            n = len(oids)

            def op():
                r = call("loadBefore", oids[rng.randrange(n)], maxtid)
                if not r:
                    raise RuntimeError("loadBefore returned nothing")
                return 1
            return op, None
        raise ValueError(workload)

    while True:
        msg = recv()
        if msg["cmd"] == "quit":
            break
        workload = msg["workload"]
        op, between = prepare(workload)
        send({"ready": wid})
        end = recv()["end"]
        lat_us = []
        ops = 0
        cpu0 = time.process_time()
        t0 = time.monotonic()
        while True:
            start = time.monotonic()
            if start >= end:
                break
            ops += op()
            lat_us.append(round((time.monotonic() - start) * 1e6))
            if between:
                between()
        t1 = time.monotonic()
        tm.abort()
        send({"wid": wid, "ops": ops, "calls": len(lat_us), "t0": t0, "t1": t1,
              "cpu_s": time.process_time() - cpu0, "lat_us": lat_us})
    conn.close()
    db.close()


# -- orchestrator -----------------------------------------------------------------------------


def proc_cpu_s(pid):
    """(user, system) CPU seconds of the whole process (all threads, exited ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def proc_ctxsw(pid):
    """Context switches per live thread {tid: (voluntary, involuntary)}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        v = n = 0
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        v = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        n = int(line.split()[1])
        except OSError:
            continue
        out[tid] = (v, n)
    return out


def ctxsw_delta(before, after):
    """Switches between two proc_ctxsw snapshots (threads that exited in between are missed)."""
    v = n = 0
    for tid, (av, an) in after.items():
        bv, bn = before.get(tid, (0, 0))
        v += av - bv
        n += an - bn
    return v, n


def proc_mem_mb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def fs_type(path):
    try:
        return subprocess.run(["findmnt", "-no", "FSTYPE", "-T", path], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


class Workers:
    def __init__(self, addr, n, objects, db_cache):
        self.procs = []
        for wid in range(n):
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", addr[0], str(addr[1]),
                 str(wid), str(objects), str(db_cache)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1))
        self.hello = [self.recv(p) for p in self.procs]

    @staticmethod
    def recv(p):
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {p.pid} exited with {p.wait()}")
        return json.loads(line)

    def send_all(self, msg):
        line = json.dumps(msg) + "\n"
        for p in self.procs:
            p.stdin.write(line)
            p.stdin.flush()

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write('{"cmd": "quit"}\n')
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summarize(raws):
    """One result from the raw measurements of one or more rounds of a workload (rates are
    total operations over total window; percentiles over every call of every round)."""
    ops = sum(r["ops"] for r in raws)
    window = sum(r["window_s"] for r in raws)
    lat = sorted(v for r in raws for v in r["lat_us"])
    user = sum(r["user_s"] for r in raws)
    system = sum(r["system_s"] for r in raws)
    swv = sum(r["ctxsw"][0] for r in raws)
    swn = sum(r["ctxsw"][1] for r in raws)
    ccpu = sum(r["clients_cpu_s"] for r in raws)
    return {
        "ops": ops,
        "calls": len(lat),
        "window_s": window,
        "ops_per_s": ops / window,
        "calls_per_s": len(lat) / window,
        "p50_ms": percentile(lat, 0.50) / 1e3 if lat else None,
        "p99_ms": percentile(lat, 0.99) / 1e3 if lat else None,
        "max_ms": lat[-1] / 1e3 if lat else None,
        "server_cpu_s": user + system,
        "server_user_s": user,
        "server_system_s": system,
        "server_cpu_us_per_op": (user + system) / ops * 1e6 if ops else None,
        "server_cpu_util": (user + system) / window,
        "server_ctxsw_voluntary": swv,
        "server_ctxsw_involuntary": swn,
        "server_ctxsw_per_call": (swv + swn) / len(lat) if lat else None,
        "clients_cpu_s": ccpu,
        "clients_cpu_us_per_op": ccpu / ops * 1e6 if ops else None,
        "server_vmrss_mb": raws[-1]["mem"].get("VmRSS"),
        "server_vmhwm_mb": raws[-1]["mem"].get("VmHWM"),
        "rounds": [{"ops_per_s": r["ops"] / r["window_s"],
                    "server_cpu_us_per_op": (r["user_s"] + r["system_s"]) / r["ops"] * 1e6
                    if r["ops"] else None,
                    "per_worker_ops": r["per_worker_ops"]} for r in raws],
    }


def run_cell(srv, clients, workloads, seconds, objects, db_cache):
    """One server, one client count, one round: spawn the workers, run every workload, return the
    raw measurements {workload: raw}, the record size and the spawn time."""
    pid = srv.proc.pid
    t_spawn = time.monotonic()
    workers = Workers(srv.addr, clients, objects, db_cache)
    res = {"spawn_s": time.monotonic() - t_spawn,
           "record_bytes": workers.hello[0]["record_bytes"], "raw": {}}
    try:
        for wl in workloads:
            workers.send_all({"cmd": "run", "workload": wl})
            for p in workers.procs:
                workers.recv(p)  # ready
            sw0 = proc_ctxsw(pid)
            cpu0 = proc_cpu_s(pid)
            go = time.monotonic()
            workers.send_all({"end": go + seconds})
            reports = [workers.recv(p) for p in workers.procs]
            done = time.monotonic()
            cpu1 = proc_cpu_s(pid)
            sw = ctxsw_delta(sw0, proc_ctxsw(pid))
            raw = {
                "ops": sum(r["ops"] for r in reports),
                "window_s": done - go,
                "lat_us": [v for r in reports for v in r["lat_us"]],
                "user_s": cpu1[0] - cpu0[0],
                "system_s": cpu1[1] - cpu0[1],
                "ctxsw": sw,
                "clients_cpu_s": sum(r["cpu_s"] for r in reports),
                "mem": proc_mem_mb(pid),
                "per_worker_ops": [r["ops"] for r in reports],
            }
            res["raw"][wl] = raw
            cell = summarize([raw])
            log(f"  {srv.kind:6} c={clients} {wl:10} {cell['ops_per_s']:10,.0f} op/s  "
                f"p50 {cell['p50_ms']:.3g} ms  p99 {cell['p99_ms']:.3g} ms  "
                f"server {cell['server_cpu_us_per_op']:.3g} us/op ({cell['server_cpu_util']:.0%}, "
                f"sys {raw['system_s'] / (cell['server_cpu_s'] or 1):.0%}, "
                f"{cell['server_ctxsw_per_call']:.2g} csw/call)  RSS {cell['server_vmrss_mb']:.0f} MB")
    finally:
        workers.close()
    return res


def init_storage(addr):
    """Create the root object once, so that the workers' DB() calls do not race to create it."""
    import ZODB
    from ZEO.ClientStorage import ClientStorage
    db = ZODB.DB(ClientStorage(addr, wait=True, wait_timeout=60))
    db.close()


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s per workload")
    ap.add_argument("--clients", default="1,2,8", help="client process counts (default 1,2,8)")
    ap.add_argument("--seconds", type=float,
                    help="seconds per workload and round (default 7.5; --quick: 2)")
    ap.add_argument("--rounds", type=int,
                    help="rounds per server and client count, in ABBA order (default 2; --quick: 1)")
    ap.add_argument("--objects", type=int, default=1000,
                    help="objects per add/update transaction (default 1000)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads, in this order")
    ap.add_argument("--kinds", default="python,rust", help="servers to measure")
    ap.add_argument("--invalidation-queue-size", type=int, default=100,
                    help="both servers (default 100, runzeo's default)")
    ap.add_argument("--dir", default=os.path.join(HERE, "out", "tmp"),
                    help="the servers' data directories go under here (default bench/out/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' Data.fs files")
    ap.add_argument("--out-py", help="JSON for the Python server (default stdout, both)")
    ap.add_argument("--out-rs", help="JSON for zeo-server")
    ap.add_argument("--worker", nargs=5, metavar=("HOST", "PORT", "WID", "OBJECTS", "DBCACHE"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        host, port, wid, objects, db_cache = a.worker
        worker_main(host, int(port), int(wid), int(objects), int(db_cache))
        return

    sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
    from servers import rust_binary, start_server  # noqa: E402

    clients = [int(c) for c in a.clients.split(",")]
    seconds = a.seconds or (2.0 if a.quick else 7.5)
    rounds = a.rounds or (1 if a.quick else 2)
    workloads = [w for w in a.only.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    if workloads and workloads[0] != "add":
        workloads.insert(0, "add")  # the others work on the objects add created
    kinds = [k for k in a.kinds.split(",") if k]
    db_cache = max(5000, 2 * a.objects)

    base = os.path.abspath(a.dir)
    os.makedirs(base, exist_ok=True)
    fstype = fs_type(base)
    log(f"data directories under {base} ({fstype}); {rounds} x {seconds:g} s per workload; clients {clients}; "
        f"workloads {workloads}; servers {kinds}")
    if fstype in ("tmpfs", "ramfs"):
        log(f"WARNING: {base} is {fstype}: fsync is free there")

    servers, docs = {}, {}
    started = time.time()
    la0 = loadavg()
    try:
        for kind in kinds:
            d = os.path.join(base, f"server-{kind}")
            shutil.rmtree(d, ignore_errors=True)
            opts = {"invalidation_queue_size": a.invalidation_queue_size}
            if kind == "python":
                opts["client_conflict_resolution"] = False  # runzeo's default
            srv = start_server(kind, d, **opts)
            init_storage(srv.addr)
            servers[kind] = srv
            docs[kind] = {
                "server": kind,
                "argv": srv.argv,
                "config": srv.python_config(srv.addr[1]) if kind == "python" else None,
                "binary": rust_binary() if kind == "rust" else None,
                "dir": d,
                "dir_fs_type": fs_type(d),
                "results": {},
            }
            log(f"{kind} server pid {srv.proc.pid} on {srv.addr[0]}:{srv.addr[1]}, data in {d}")
        for step, c in enumerate(clients):
            # ABBA: the order flips at every round and at every client count.
            order = kinds if step % 2 == 0 else list(reversed(kinds))
            seq = []
            for rnd in range(rounds):
                seq += order if rnd % 2 == 0 else list(reversed(order))
            cells = {kind: [] for kind in kinds}
            for kind in seq:
                cells[kind].append(run_cell(servers[kind], c, workloads, seconds, a.objects, db_cache))
            for kind, runs in cells.items():
                docs[kind]["results"][str(c)] = {
                    "spawn_s": [r["spawn_s"] for r in runs],
                    "record_bytes": runs[0]["record_bytes"],
                    "workloads": {wl: summarize([r["raw"][wl] for r in runs]) for wl in workloads},
                }
        for kind, srv in servers.items():
            docs[kind]["final_mem_mb"] = proc_mem_mb(srv.proc.pid)
            docs[kind]["data_fs_mb"] = os.path.getsize(srv.options["path"]) / 2**20
    finally:
        for srv in servers.values():
            srv.stop()
            if not a.keep:  # the data files only; the server logs and zeo.conf stay
                for name in os.listdir(srv.datadir):
                    if name.startswith("Data.fs"):
                        os.unlink(os.path.join(srv.datadir, name))

    common = {
        "params": {"quick": a.quick, "clients": clients, "seconds": seconds, "rounds": rounds,
                   "objects": a.objects,
                   "workloads": workloads, "invalidation_queue_size": a.invalidation_queue_size,
                   "db_cache_size": db_cache, "order": "ABBA per client count, flipped at each count"},
        "python": platform.python_version(),
        "zodb": _version("ZODB"),
        "zeo": _version("ZEO"),
        "nproc": len(os.sched_getaffinity(0)),
        "loadavg_start": la0,
        "loadavg_end": loadavg(),
        "run_s": time.time() - started,
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
    }
    for kind, doc in docs.items():
        doc.update(common)
    log(f"done in {time.time() - started:.0f} s")
    outs = {"python": a.out_py, "rust": a.out_rs}
    if not any(outs.values()):
        json.dump(docs, sys.stdout, indent=1)
        return
    for kind, doc in docs.items():
        if outs.get(kind):
            with open(outs[kind], "w") as f:
                json.dump(doc, f, indent=1)


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()

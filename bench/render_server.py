#!/usr/bin/env python3
"""Render the server benchmark (bench/server.sh) as Markdown.

usage: render_server.py PY_JSON RS_JSON --command CMD [--git REV] [--out FILE] [--doc docs/BENCHMARKS.md]

Writes the section to --out (default stdout). With --doc, also replaces the part of that file
between <!-- server:begin --> and <!-- server:end -->; when the markers are missing, they replace
the body of the "## Server (ZEO protocol)" section (which is appended when missing too).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchdoc  # noqa: E402
from render_storage import fmt, machine  # noqa: E402

BEGIN, END = "<!-- server:begin -->", "<!-- server:end -->"
HEADING = "## Server (ZEO protocol)"

# workload key -> (label, unit of one operation)
LABELS = {
    "add": ("add, {n} new objects per tx", "objects/s"),
    "update": ("update, {n} objects per tx", "objects/s"),
    "tiny": ("tiny commits, 1 object per tx", "tx/s"),
    "cold": ("cold read, empty client caches", "objects/s"),
    "loadbefore": ("loadBefore round trips, raw call", "calls/s"),
}


def ratio_str(r):
    return fmt(r) + "×" if r else "—"


def pct(v):
    return "—" if v is None else f"{v * 100:.0f}%"


def met_str(m):
    return "—" if m is None else ("yes" if m else "**no**")


def render(py, rs, command, git, json_paths):
    n = rs["params"]["objects"]
    clients = [str(c) for c in rs["params"]["clients"]]
    workloads = [w for w in rs["params"]["workloads"] if w in LABELS]

    def cell(doc, c, w):
        return doc["results"].get(c, {}).get("workloads", {}).get(w)

    perf, cpu = [], []
    faster_met = faster_all = cpu_met = cpu_all = 0
    slower = []
    for w in workloads:
        label, unit = LABELS[w]
        label = label.format(n=n)
        perf_label = f"{label} ({unit})"
        for c in clients:
            p, r = cell(py, c, w), cell(rs, c, w)
            if not p or not r:
                continue
            ratio = r["ops_per_s"] / p["ops_per_s"] if p["ops_per_s"] else None
            faster = ratio is not None and ratio > 1
            pr, rr = p.get("rounds") or [], r.get("rounds") or []
            won = ""
            if len(pr) > 1 and len(pr) == len(rr):
                # Rounds pair up in ABBA order: A1 B1 B2 A2 -> (A1, B1), (A2, B2).
                wins = sum(b["ops_per_s"] > a["ops_per_s"] for a, b in zip(pr, rr))
                won = f" ({wins}/{len(pr)} rounds)"
            faster_all += 1
            faster_met += faster
            if not faster:
                slower.append(f"{w} × {c}")
            perf.append(
                f"| {perf_label} | {c} | {fmt(p['ops_per_s'])} | {fmt(r['ops_per_s'])} "
                f"| {ratio_str(ratio)} | {fmt(p['p50_ms'])} / {fmt(r['p50_ms'])} "
                f"| {fmt(p['p99_ms'])} / {fmt(r['p99_ms'])} | {met_str(faster)}{won} |")
            pc, rc = p["server_cpu_us_per_op"], r["server_cpu_us_per_op"]
            cr = pc / rc if pc and rc else None
            ok = cr is not None and cr >= 10
            cpu_all += 1
            cpu_met += ok
            sys_share = r["server_system_s"] / r["server_cpu_s"] if r["server_cpu_s"] else None
            cpu.append(
                f"| {label} | {c} | {fmt(pc)} | {fmt(rc)} | {ratio_str(cr)} "
                f"| {pct(p['server_cpu_util'])} / {pct(r['server_cpu_util'])} "
                f"| {pct(sys_share)} "
                f"| {fmt(p['server_ctxsw_per_call'])} / {fmt(r['server_ctxsw_per_call'])} "
                f"| {fmt(p['clients_cpu_us_per_op'])} / {fmt(r['clients_cpu_us_per_op'])} "
                f"| {met_str(ok)} |")

    def hwm(doc):
        return (doc.get("final_mem_mb") or {}).get("VmHWM")

    def rss(doc):
        return (doc.get("final_mem_mb") or {}).get("VmRSS")

    def rss_per_count(doc):
        return ", ".join(
            f"{c}: {max(v['server_vmrss_mb'] for v in doc['results'][c]['workloads'].values()):.0f}"
            for c in clients if c in doc["results"])

    ph, rh = hwm(py), hwm(rs)
    mem_ok = ph is not None and rh is not None and rh <= ph
    m = machine()
    pp = rs["params"]
    quick = pp.get("quick")
    lines = [
        f"Run of {rs.get('started_utc') or m['date']} — "
        f"{'quick smoke run (`--quick`), short windows: not representative' if quick else 'full run'}.",
        "",
        "**Targets** (reported, not asserted):",
        "",
        f"- server CPU per operation at most a tenth of the Python server's: "
        f"{'met' if cpu_met == cpu_all else '**not met**'} ({cpu_met} of {cpu_all} rows at ≤ 1/10);",
        f"- every server-bound row faster than the Python server at every client count: "
        f"{'met' if faster_met == faster_all else '**not met**'} ({faster_met} of {faster_all} rows faster"
        f"{'; slower: ' + ', '.join(slower) if slower else ''});",
        f"- server RSS at most the Python server's: {'met' if mem_ok else '**not met**'} "
        f"(peak VmHWM {fmt(ph)} MB Python, {fmt(rh)} MB zeo-rs).",
        "",
        "Throughput (all client processes together) and latency per operation (per transaction for "
        "add, update and tiny; per object or call for the reads):",
        "",
        "| workload | clients | Python ZEO | zeo-rs | ratio | p50 ms (Python / zeo-rs) "
        "| p99 ms (Python / zeo-rs) | faster? |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *perf,
        "",
        "Server CPU time per operation (utime+stime of the server process over the workload's "
        "window), the server's CPU use (100% = one core), the share of zeo-rs's CPU time spent in "
        "the kernel, server context switches per call (approximate: threads that exit during the "
        "window are missed) and the client processes' CPU time per operation:",
        "",
        "| workload | clients | Python µs/op | zeo-rs µs/op | ratio | server CPU use (Python / zeo-rs) "
        "| zeo-rs in kernel | ctx switches/call (Python / zeo-rs) | clients µs/op (Python / zeo-rs) "
        "| ≤ 1/10? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *cpu,
        "",
        "Server memory (MB):",
        "",
        "| | Python ZEO | zeo-rs | zeo-rs ≤ Python? |",
        "|---|---:|---:|---|",
        f"| peak RSS over the run (VmHWM) | {fmt(ph)} | {fmt(rh)} | {met_str(mem_ok)} |",
        f"| RSS at the end (VmRSS) | {fmt(rss(py))} | {fmt(rss(rs))} | "
        f"{met_str(rss(rs) <= rss(py) if rss(py) and rss(rs) else None)} |",
        f"| highest RSS after a workload, per client count | {rss_per_count(py)} | {rss_per_count(rs)} | — |",
        f"| Data.fs at the end | {fmt(py.get('data_fs_mb'))} | {fmt(rs.get('data_fs_mb'))} | — |",
        "",
        "Ratio: how many times faster zeo-rs is (throughput), or how many times less CPU it uses.",
        "",
        "- **Machine**: "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['mem_gb']} GB RAM, Linux {m['kernel']}; load average "
        f"{' '.join(rs.get('loadavg_start', []))} at the start, {' '.join(rs.get('loadavg_end', []))} at the "
        f"end (other jobs share the machine); data directories on `{py.get('dir_fs_type')}` (Python) and "
        f"`{rs.get('dir_fs_type')}` (zeo-rs); clients and servers on the same CPUs, over loopback TCP.",
        f"- **Software**: Python {rs.get('python')}, ZODB {rs.get('zodb')}, ZEO {rs.get('zeo')} (clients "
        f"and the Python server); zeo-server release build{', commit ' + git if git else ''}.",
        f"- **Command**: `{command}` ({fmt(rs.get('run_s'))} s; raw JSON in `{json_paths[0]}` and "
        f"`{json_paths[1]}`).",
        f"- **Servers**: both up for the whole run, each on a fresh FileStorage, invalidation queue "
        f"{pp.get('invalidation_queue_size')}; runzeo with its defaults otherwise (server-side "
        f"conflict resolution; nothing conflicts here), zeo-server with its defaults. For each client "
        f"count they take turns in ABBA order (Python, zeo-rs, zeo-rs, Python with 2 rounds; "
        f"flipped at the next count), the idle one waiting; each round starts new client "
        f"processes, and a row adds up its rounds (rates: total operations over total time; "
        f"percentiles over all calls). \"(n/m rounds)\": in how many rounds zeo-rs was faster.",
        f"- **Workloads**: each client process is one `ZEO.ClientStorage` + `ZODB.DB` + Connection "
        f"(DB cache {pp.get('db_cache_size')} objects) working on its own objects (no conflicts), "
        f"{pp.get('rounds', 1)} round(s) of {fmt(pp.get('seconds'))} s per workload, in the order {', '.join(pp.get('workloads', []))}; "
        f"objects are PersistentMappings of 256 pseudo-random bytes ({rs['results'][clients[0]]['record_bytes']} "
        f"B pickles). add: `conn.add` of {n} new objects per transaction; update: sets the data of "
        f"the process's first {n} objects (loaded beforehand) per transaction; tiny: one of 100 "
        f"objects per transaction; cold read: `conn.get(oid)._p_activate()` over the process's "
        f"objects in random order, the ZEO client cache (`ClientCache.clear()`) and the Connection "
        f"cache (`cacheMinimize`) emptied before each pass, so each object costs one `loadBefore` "
        f"round trip; loadBefore: `storage._server.call('loadBefore', oid, last_tid + 1)` on random "
        f"oids of the process (ZEO 6's `_server.load_before` would answer from the client cache).",
        "- **Noise**: shared 2-CPU VM, with the clients on the same CPUs as the server: with 8 client "
        "processes the clients, not the server, use most of the CPU, so throughput there says more "
        "about scheduling than about the server; server CPU per operation is the steadier measure "
        "(clock-tick resolution, 10 ms per window). Compare only numbers from one run.",
    ]
    return "\n".join(lines) + "\n"


def main():
    benchdoc.run(__doc__.splitlines()[0], render, BEGIN, END, HEADING)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Render the scale benchmark (bench/scale.sh) as Markdown.

usage: render_scale.py SCALE_JSON --file DATA_FS --command CMD [--git G] [--out F] [--doc D]

SCALE_JSON has one line per measurement: {"side": "rs"|"py", "what": ..., "result": {...}}. With
--doc, the section replaces the part of that file between <!-- scale:begin --> and <!-- scale:end -->.
"""

import argparse
import datetime
import json
import os

import benchdoc
from render_storage import fmt, machine

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def render(rows_in, data_file, command, git, json_path):
    got = {(r["side"], r["what"]): r["result"] for r in rows_in}

    def g(side, what, key):
        return (got.get((side, what)) or {}).get(key)

    def mb(side, what, key):
        kb = g(side, what, key)
        return kb / 1024 if kb is not None else None

    def per_obj(side, what, key):
        kb, before, n = g(side, what, key), g(side, what, "rss_before_kb"), g(side, what, "objects")
        return (kb - before) * 1024 / n if None not in (kb, before) and n else None

    rows = []

    def row(measure, pv, rv, better="lower", show=fmt):
        ratio = None
        if pv and rv:
            ratio = rv / pv if better == "higher" else pv / rv
        rows.append(f"| {measure} | {show(pv)} | {show(rv)} | {fmt(ratio) + '×' if ratio else '—'} |")

    def both(measure, what, key, f=g, **kw):
        row(measure, f("py", what, key), f("rs", what, key), **kw)

    both("objects found (with index / without)", "open-with-index", "objects", better="same")
    rows[-1] = (f"| objects found, with index / without | {fmt(g('py', 'open-with-index', 'objects'))} / "
                f"{fmt(g('py', 'open-without-index', 'objects'))} | {fmt(g('rs', 'open-with-index', 'objects'))} / "
                f"{fmt(g('rs', 'open-without-index', 'objects'))} | — |")
    both("open with the index (s)", "open-with-index", "open_s")
    both("open without the index, full scan (s)", "open-without-index", "open_s")
    both("RSS after open with the index (MB)", "open-with-index", "rss_after_open_kb", f=mb)
    both("RSS growth per object, open with the index (bytes)", "open-with-index", "rss_after_open_kb", f=per_obj)
    both("peak RSS, open with the index (MB)", "open-with-index", "hwm_kb", f=mb)
    both("RSS after open without the index (MB)", "open-without-index", "rss_after_open_kb", f=mb)
    both("peak RSS, open without the index (MB)", "open-without-index", "hwm_kb", f=mb)
    reads = g("rs", "reads", "reads") or g("py", "reads", "reads")
    both(f"RSS after {fmt(reads)} random first loads (MB)", "reads", "rss_after_reads_kb", f=mb)
    both("load p50 (µs), first load of a random oid", "reads", "load_p50_us")
    both("load p99 (µs)", "reads", "load_p99_us")
    both(f"{fmt(reads)} loads (s)", "reads", "reads_s")
    both("pack to the last transaction, no GC (s)", "pack", "pack_s")
    both("peak RSS of the packing process (MB)", "pack", "hwm_kb", f=mb)

    gen = got.get(("rs", "generate"))
    first = got.get(("py", "first-open-rw"))
    failed = [f"{s} {w}: {r['failed']}" for (s, w), r in got.items() if "failed" in r]
    m = machine()
    # The run's date is when its results were written, not when they are rendered.
    m["date"] = datetime.datetime.fromtimestamp(os.path.getmtime(json_path), datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")
    size = os.path.getsize(data_file) / 2**30 if os.path.exists(data_file) else None
    lines = [
        f"Run of {m['date']}.",
        "",
        "| measure | Python FileStorage | zeo-rs | ratio |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        "Ratio: how many times less zeo-rs needs (time or memory). Every figure comes from its own fresh "
        "process (a Python interpreter with ZODB imported, or the `scale_bench` example), so RSS growth "
        "is what the open itself costs; the page cache is warm (the file was just read).",
        "",
        "- **Machine**: "
        f"{m['nproc']} CPUs ({m['cpu']}), {m['mem_gb']} GB RAM, Linux {m['kernel']}"
        f"{', commit ' + git if git else ''}.",
        f"- **Command**: `{command}`; raw results in `{json_path}`.",
        f"- **File**: `{os.path.relpath(data_file)}` ({fmt(size)} GB), out of git: "
        + (f"{fmt(gen['objects'])} objects created in {fmt(gen['transactions'])} transactions of up to 100,000 "
           f"through the zeo-rs commit path, then {fmt(gen['updates'])} new revisions of random objects, "
           f"100-byte records, generated in {fmt(gen['generate_s'])} s (cached for later runs); "
           if gen and "generate_s" in gen else "cached from an earlier run; ")
        + (f"Python's first read-write open (scan, then writing `Data.fs.index`) took {fmt(first['open_s'])} s."
           if first and "open_s" in first else ""),
        "- **Loads**: `loadBefore(oid, maxtid)` of 100,000 random oids, each process's first loads "
        "(no record cache yet; the page cache is warm).",
        "- **Pack**: on a copy of the file with that side's own index, to the last transaction, without "
        "garbage collection (`pack_gc=False` for Python: the generated records are not pickles), so it "
        "drops the superseded revisions and copies the rest.",
    ]
    lines += [
        "- **Scope**: the storage engines in-process (the `zeo-storage` crate and ZODB's FileStorage). "
        "zeo-server and runzeo open, index, load and pack through exactly these; a server adds its "
        "network path to each load, which `bench/server.sh` measures.",
        "- **Noise**: one run on a shared 2-core VM (load average around 6 during it); timings move by "
        "up to ±50% between runs, memory figures by under 1%.",
    ]
    if failed:
        lines.append("- **Failed or timed out**: " + "; ".join(failed))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scale_json")
    ap.add_argument("--file", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--git", default="")
    ap.add_argument("--out")
    ap.add_argument("--doc")
    a = ap.parse_args()
    with open(a.scale_json) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    section = render(rows, a.file, a.command, a.git, os.path.relpath(a.scale_json))
    if a.out:
        with open(a.out, "w") as f:
            f.write(section)
    print(section, end="") if not a.out else None
    if a.doc:
        benchdoc.splice(a.doc, section, BEGIN, END, "## Scale (10 million objects)", "# Benchmarks\n")


if __name__ == "__main__":
    main()

"""Shared plumbing of the benchmark renderers: the command line (two result JSON files in, one
Markdown section out) and splicing a section into docs/BENCHMARKS.md between its markers."""

import argparse
import json
import os
import re


def splice(doc_path, section, begin, end, heading, new_doc):
    """Replace the text between `begin` and `end` in `doc_path` with `section`. A missing document
    starts as `new_doc`; missing markers go under `heading` (replacing that section's body), or at
    the end with the heading when there is none."""
    text = open(doc_path).read() if os.path.exists(doc_path) else new_doc
    if begin not in text or end not in text:
        block = f"{begin}\n{end}\n"
        if heading in text:
            start = text.index(heading) + len(heading)
            nxt = text.find("\n## ", start)
            tail = text[nxt:] if nxt >= 0 else "\n"
            text = text[:start] + "\n\n" + block + tail
        else:
            text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: f"{begin}\n{section}{end}", text, count=1)
    with open(doc_path, "w") as f:
        f.write(text)


def run(description, render, begin, end, heading, new_doc="# Benchmarks\n"):
    """The renderers' command line: `PY_JSON RS_JSON --command C [--git G] [--out F] [--doc D]`."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("py_json")
    ap.add_argument("rs_json")
    ap.add_argument("--command", required=True, help="the command line to report")
    ap.add_argument("--git", default="", help="commit the zeo-rs side was built from")
    ap.add_argument("--out", help="write the section here (default: stdout)")
    ap.add_argument("--doc", help="splice the section into this Markdown file")
    a = ap.parse_args()
    with open(a.py_json) as f:
        py = json.load(f)
    with open(a.rs_json) as f:
        rs = json.load(f)
    paths = [os.path.relpath(p, os.getcwd()) for p in (a.py_json, a.rs_json)]
    section = render(py, rs, a.command, a.git, paths)
    if a.out:
        with open(a.out, "w") as f:
            f.write(section)
    else:
        print(section, end="")
    if a.doc:
        splice(a.doc, section, begin, end, heading, new_doc)

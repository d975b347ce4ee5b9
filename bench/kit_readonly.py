"""How soon a writable Python ZEO client gets in after its server stops being read-only (the
address of a switchover: refused by the demoted server, then writable again), with and without
the client kit's short read-only retry. Local zeo-server on 127.0.0.1; the server is restarted
writable on the same port right after the client's first refusal, so the time measured is the
client's retry wait plus reconnecting and registering.

usage: .venv/bin/python bench/kit_readonly.py [--runs N] [--python VENV_PYTHON]
Binary: $ZEORS_SERVER_BIN or target/debug/zeo-server. Prints one line per run and a summary.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
sys.path.insert(0, os.path.join(REPO, "client", "python", "tests"))

import servers  # noqa: E402
from conftest import worker  # noqa: E402


def one(python, how):
    with tempfile.TemporaryDirectory() as d:
        srv = servers.start_server("rust", d, read_only=True)
        try:
            p = worker(python, "readonly", f"{srv.addr[0]}:{srv.addr[1]}", how)
            assert p.stdout.readline().strip() == "refused", p.stderr.read()
            srv.restart(read_only=False)
            p.stdin.write("go\n")
            p.stdin.flush()
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            return json.loads(out.strip().splitlines()[-1])["seconds_to_writable"]
        finally:
            srv.stop()


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--runs", type=int, default=5)
    a.add_argument("--python", default=os.path.join(REPO, ".venv", "bin", "python"))
    args = a.parse_args()
    for how, label in (("install", "with the kit"), ("none", "without the kit")):
        times = [one(args.python, how) for _ in range(args.runs)]
        print(f"{label}: {' '.join(f'{t:.2f}' for t in times)} s; median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s", flush=True)


if __name__ == "__main__":
    main()

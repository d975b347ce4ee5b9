#!/usr/bin/env python3
"""Run ZODB's own maintenance tools on a Data.fs and check they work on it.

usage: python tools_roundtrip.py FILE.fs WORKDIR

1. repozo: a full backup (-B -F), then an incremental one after nothing changed, then a recovery
   (-R) into a new file, which must be byte-identical to FILE.fs.
2. copyTransactionsFrom (what zodbconvert does between two FileStorages): copy every transaction
   of FILE.fs into a new FileStorage; the copy must describe() identically (same transactions,
   records, tids and data).
3. fsdump, fstail and analyze must run without error.

Exits non-zero on the first failure. FILE.fs is only read.
"""

import hashlib
import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout

from ZODB.FileStorage import FileStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from describe import describe  # noqa: E402


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(*args):
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    src, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    # repozo wants a storage it can read consistently; work on a copy so FILE.fs stays untouched.
    live = os.path.join(work, "live.fs")
    shutil.copyfile(src, live)
    backups = os.path.join(work, "backups")
    os.makedirs(backups, exist_ok=True)
    run("ZODB.scripts.repozo", "-B", "-F", "-r", backups, "-f", live)
    run("ZODB.scripts.repozo", "-B", "-r", backups, "-f", live)
    restored = os.path.join(work, "restored.fs")
    run("ZODB.scripts.repozo", "-R", "-r", backups, "-o", restored)
    if sha(restored) != sha(src):
        sys.exit("repozo: the recovered file differs from the original")

    copy = os.path.join(work, "copy.fs")
    source = FileStorage(src, read_only=True)
    dest = FileStorage(copy, create=True)
    try:
        dest.copyTransactionsFrom(source)
    finally:
        dest.close()
        source.close()
    if describe(copy) != describe(src):
        sys.exit("copyTransactionsFrom: the copy does not describe() like the original")

    for module in ("ZODB.FileStorage.fsdump", "ZODB.scripts.fstail", "ZODB.scripts.analyze"):
        run(module, src)
    print("ok: repozo backup/recover, copyTransactionsFrom, fsdump, fstail, analyze")


if __name__ == "__main__":
    main()

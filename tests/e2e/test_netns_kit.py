"""The client kit against a vanished server host, in network namespaces (needs root): two
zeo-servers on hosts h1 and h2 (the same empty storage), an idle Python ZEO client on host cl
that knows both addresses. The host the client is connected to is cut off (its link down: no
reset ever comes). With the kit (keepalive and TCP_USER_TIMEOUT) the client's kernel drops the
dead connection and ZEO connects to the other host; without it, the client stays on the dead
connection for the whole window (ZEO's next heartbeat then waits on TCP's retransmission
timeout, about 15 minutes). The times are printed (measured), the assertions are on events."""
import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

import netlab

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("ZEORS_BIN_DIR") or os.path.join(REPO, "target", "debug")
PYTHON = os.environ.get("ZEORS_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")
PORT = 8100
# How long after the cut the client is watched: past the kit's bounds (about 11 s) with room for
# a loaded machine, and far below what a client without the kit needs (60 s heartbeat + ~15 min).
WINDOW = 45


def start_servers(lab, tmp_path):
    ready = {}
    for host in ("h1", "h2"):
        d = tmp_path / host
        d.mkdir()
        ready[host] = d / "ready.json"
        lab.spawn(host, [os.path.join(BIN, "zeo-server"), "--listen", f"{lab.ip(host)}:{PORT}",
                         "--path", str(d / "Data.fs"), "--ready-file", str(ready[host])],
                  stdout=subprocess.DEVNULL, stderr=open(d / "server.log", "w"))
    deadline = time.monotonic() + 60
    while not all(p.exists() for p in ready.values()):
        assert time.monotonic() < deadline, "zeo-servers not ready"
        time.sleep(0.05)


def events_of(proc):
    q = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(json.loads(line))
    threading.Thread(target=pump, daemon=True).start()
    return q


def next_event(q, until):
    try:
        return q.get(timeout=max(0.0, until - time.monotonic()))
    except queue.Empty:
        return None


@pytest.mark.parametrize("kit", [True, False], ids=["with-kit", "without-kit"])
def test_idle_client_leaves_a_cut_server_host(tmp_path, kit):
    with netlab.Lab(["h1", "h2", "cl"]) as lab:
        start_servers(lab, tmp_path)
        addrs = {f"{lab.ip(h)}:{PORT}": h for h in ("h1", "h2")}
        argv = [PYTHON] + ([os.path.join(HERE, "with_kit.py")] if kit else [])
        argv += [os.path.join(HERE, "kit_idle_client.py"), ",".join(addrs)]
        log = open(tmp_path / "client.log", "w")
        client = lab.spawn("cl", argv, stdout=subprocess.PIPE, stderr=log, text=True)
        q = events_of(client)
        first = next_event(q, time.monotonic() + 60)
        assert first and first["event"] == "connected", (first, (tmp_path / "client.log").read_text())
        victim = addrs[first["addr"]]
        other = next(a for a, h in addrs.items() if h != victim)
        time.sleep(1)  # an established, idle connection
        cut = time.time()
        lab.cut(victim)
        seen = []
        until = time.monotonic() + WINDOW
        while (e := next_event(q, until)) is not None:
            seen.append(e)
            if e["event"] == "connected":
                break
        kit_log = (tmp_path / "client.log").read_text()
        timeline = [(e["event"], e.get("addr"), round(e["t"] - cut, 2)) for e in seen]
        print(f"kit={kit}: after cutting {victim}: {timeline}", file=sys.stderr)
        if kit:
            assert "zeors_client_kit: ZEO client socket to" in kit_log, kit_log[-2000:]
            # "disconnected" may fall between two samples: ZEO reconnects at once.
            assert seen and seen[-1]["event"] == "connected", (timeline, kit_log[-3000:])
            assert seen[-1]["addr"] == other, timeline
            assert "Disconnected from storage" in kit_log or "disconnected" in [e["event"] for e in seen]
        else:
            assert seen == [], f"without the kit the dead connection was dropped: {timeline}"
            assert "zeors_client_kit" not in kit_log

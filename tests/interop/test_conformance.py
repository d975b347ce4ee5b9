"""ZODB/ZEO's own conformance classes against the server under test, one pytest test per
class. Each class runs in its own process (`conformance.py CLASS`), with a wall-clock budget;
the test passes when the unittest run was successful (known gaps are expected failures
with a written reason, see conformance.KNOWN_GAPS). On failure it prints every failing test
with its traceback and the tails of the server logs of that test.

ZEORS_CONFORMANCE_FULL=1 adds the slow classes (conformance.EXTRA_CLASSES).
"""
import json
import os
import signal
import subprocess
import sys

import pytest

import conformance

HERE = os.path.dirname(os.path.abspath(__file__))

CLASSES = dict(conformance.CLASSES)
if os.environ.get("ZEORS_CONFORMANCE_FULL"):
    CLASSES.update(conformance.EXTRA_CLASSES)


def _report(report):
    lines = [f"{report['class']} against {report['server']}: {report['run']} run, "
             f"{report['failures']} failed, {report['errors']} errors, "
             f"{report['expected_failures']} expected failures, "
             f"{report['unexpected_successes']} unexpected successes, "
             f"{report['seconds']} s"]
    for t in report["tests"]:
        if t["outcome"] in ("failed", "error", "unexpected-success"):
            lines.append(f"\n=== {t['outcome'].upper()}: {t['id']}")
            lines.append(t.get("detail", "")[-3000:])
            for log in t.get("server_logs", []):
                lines.append(f"--- server log {log['log']} (tail)")
                lines.append(log["tail"])
        elif t["outcome"] == "expected-failure":
            lines.append(f"(known gap) {t['id']}: {t.get('error', '')}\n    reason: "
                         f"{t.get('reason', '')}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(CLASSES))
def test_conformance(name, tmp_path, kind):
    budget = CLASSES[name][1]
    out = tmp_path / "report.json"
    env = dict(os.environ, ZEORS_SERVER=kind, ZEORS_INTEROP_ARTIFACTS=str(tmp_path))
    cmd = [sys.executable, os.path.join(HERE, "conformance.py"), name, "--json", str(out)]
    with open(tmp_path / "unittest.out", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=str(tmp_path))
        try:
            rc = proc.wait(budget)
        except subprocess.TimeoutExpired:
            # conformance.py stops its servers and dumps its threads on SIGTERM.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            tail = (tmp_path / "unittest.out").read_text(errors="replace")[-6000:]
            pytest.fail(f"{name} exceeded its {budget} s budget; output tail:\n{tail}")
    if not out.exists():
        tail = (tmp_path / "unittest.out").read_text(errors="replace")[-6000:]
        pytest.fail(f"{name} produced no report (exit {rc}); output tail:\n{tail}")
    report = json.loads(out.read_text())
    text = _report(report)
    print(text)
    assert rc == 0 and report["run"] > 0, text

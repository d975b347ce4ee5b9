"""What the namespace e2e tests need from the machine, checked once per test.

A missing requirement is a skip that pytest's `-rs` summary lists (and scripts/test's table
counts) on a developer's machine, and a failure under CI, where .ci/run installs everything:
there it means a broken setup, never a reason to pass."""
import os
import shutil

import pytest

import netlab


def missing_requirements():
    missing = [f"`{p}` on PATH" for p in ("etcd", "etcdctl", "arping", "ip", "iptables") if not shutil.which(p)]
    if not netlab.can_run():
        missing.append("root and network namespaces")
    return missing


@pytest.fixture(autouse=True)
def _machine_requirements():
    missing = missing_requirements()
    if missing:
        reason = "needs " + ", ".join(missing) + " (scripts/test installs the packages; run as root)"
        if os.environ.get("CI"):
            pytest.fail("CI is set: " + reason)
        pytest.skip(reason)

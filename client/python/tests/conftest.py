"""Fixtures of the kit's tests: the ZEO versions under test (one venv each) and zeo-server.

ZEO 6.x is the repository's .venv (scripts/setup-venv); ZEO 5.4 is .venv-zeo5, made by
`scripts/setup-venv --venv .venv-zeo5 --requirements client/python/requirements-zeo5.txt`
(scripts/test does it). A missing venv or server binary fails the test: nothing is skipped."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))
sys.path.insert(0, os.path.join(REPO, "client", "python", "src"))  # the in-process tests

import servers  # noqa: E402  (tests/interop/servers.py: zeo-server with a ready file)

VENVS = {"zeo6": ".venv", "zeo5": ".venv-zeo5"}
KIT_SRC = os.path.join(REPO, "client", "python", "src")
WORKER = os.path.join(HERE, "kit_worker.py")


@pytest.fixture(params=sorted(VENVS))
def zeo_python(request):
    python = os.path.join(REPO, VENVS[request.param], "bin", "python")
    assert os.access(python, os.X_OK), f"{python} missing: see this file's docstring"
    return python


@pytest.fixture
def server(tmp_path):
    assert os.access(servers.rust_binary(), os.X_OK), \
        f"{servers.rust_binary()} missing (cargo build -p zeo-server, or set ZEORS_SERVER_BIN)"
    srv = servers.start_server("rust", str(tmp_path))
    yield srv
    srv.stop()


def worker(python, *args, kit_path=KIT_SRC, **kw):
    """The kit worker as a subprocess of the venv under test, the kit on its path (the sources,
    or where a wheel was installed)."""
    env = dict(os.environ, PYTHONPATH=kit_path)
    return subprocess.Popen([python, WORKER, *args], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)

"""pytest plumbing for the interop tests: --server, per-test time limits, server and client
fixtures that always clean up, and server logs printed for failed tests."""
import faulthandler
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import servers  # noqa: E402

DEFAULT_TIMEOUT = 90


def pytest_addoption(parser):
    parser.addoption("--server", choices=servers.KINDS, default=None,
                     help="server under test (default: $ZEORS_SERVER, else rust)")


def pytest_configure(config):
    kind = config.getoption("--server")
    if kind:
        # Subprocesses (conformance runs, workers) inherit it.
        os.environ["ZEORS_SERVER"] = kind
    config.addinivalue_line("markers", "timeout_s(n): wall-clock limit for one test")


def pytest_report_header(config):
    kind = servers.server_kind()
    where = servers.rust_binary() if kind == "rust" else "runzeo (pyserver.py)"
    return f"zeo interop: server under test = {kind} ({where})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class _TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def time_limit(request):
    """Every test gets a wall-clock limit (marker timeout_s, default 90 s): SIGALRM raises
    in the test; if that does not unwind it, faulthandler dumps the stacks and exits."""
    marker = request.node.get_closest_marker("timeout_s")
    limit = int(marker.args[0]) if marker else DEFAULT_TIMEOUT

    def on_alarm(signum, frame):
        raise _TestTimeout(f"test exceeded its {limit} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    faulthandler.dump_traceback_later(limit + 60, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def kind():
    return servers.server_kind()


@pytest.fixture
def make_server(request, tmp_path, kind):
    """make_server(name='s', **options) -> a running servers.Server with its data in
    tmp_path/name. All are stopped at teardown; their logs are printed if the test failed."""
    started = []

    def make(name="s", port=0, **options):
        srv = servers.Server(kind, str(tmp_path / name), port, **options)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for srv in started:
            print(f"\n----- {srv.kind} server log {srv.log_path} (tail) -----")
            print(srv.log_tail(60))


@pytest.fixture
def server(make_server):
    """A plain server (FileStorage, no blobs) in the harness's default mode."""
    return make_server()


@pytest.fixture
def clients():
    """Tracks ClientStorages/DBs/worker processes and closes them at teardown."""
    opened = []

    class Clients:
        def add(self, obj):
            opened.append(obj)
            return obj

    yield Clients()
    for obj in reversed(opened):
        try:
            obj.close()
        except Exception:
            pass

"""The kit against real ZEO clients (5.4 and 6.x from PyPI) and a real zeo-server: the socket
options are on the client's socket (getsockopt in the client process), the read-only retry
takes effect against a read-only server, ZConfig's %import loads it, and nothing changes
without it."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, worker

TIMEOUT = 180  # seconds per worker: generous for a loaded machine


def addr(server):
    return f"{server.addr[0]}:{server.addr[1]}"


def run(python, *args, **kw):
    p = worker(python, *args, **kw)
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 0, f"worker failed ({p.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1]), err


KIT_DEFAULTS = {"keepalive": 1, "idle": 5, "interval": 2, "count": 3,
                "user_timeout_ms": 10000, "register_failed_poll": 0.5}


@pytest.mark.parametrize("how", ["install", "zconfig"])
def test_defaults_are_set_on_the_client_socket(zeo_python, server, how):
    """install() and `%import zeors_client_kit` set the defaults on the live ZEO socket."""
    got, log = run(zeo_python, "sockopts", addr(server), how)
    assert got["kit_installed"] is True
    assert {k: got[k] for k in KIT_DEFAULTS} == KIT_DEFAULTS
    # Logged once at INFO, naming what was set.
    assert log.count("ZEO client socket to") == 1
    assert "TCP_USER_TIMEOUT=10000ms" in log


def test_zconfig_section_sets_its_values(zeo_python, server):
    """A <zeors-client-kit> section around <zeoclient> sets its own values."""
    got, _ = run(zeo_python, "sockopts", addr(server), "zconfig-section")
    assert {k: got[k] for k in KIT_DEFAULTS} == {
        "keepalive": 1, "idle": 4, "interval": 3, "count": 2, "user_timeout_ms": 7000,
        "register_failed_poll": 0.25}


@pytest.mark.parametrize("how", ["none", "zconfig-plain"])
def test_nothing_changes_without_loading(zeo_python, server, how):
    """Imported but not enabled, or a ZConfig file without %import: ZEO as it is."""
    got, log = run(zeo_python, "sockopts", addr(server), how)
    assert got["kit_installed"] is False
    assert got["keepalive"] == 0
    assert got["user_timeout_ms"] == 0
    assert got["register_failed_poll"] == 9
    assert "zeors_client_kit" not in log


def test_read_only_refusal_then_writable(zeo_python, server):
    """A writable client refused by a read-only server reaches the server once it is writable
    (the same address, as after a switchover), with the kit's short retry in force."""
    server.restart(read_only=True)
    p = worker(zeo_python, "readonly", addr(server), "install")
    try:
        assert p.stdout.readline().strip() == "refused", p.stderr.read()[-3000:]
        server.restart(read_only=False)
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["committed"] is True and got["read_only"] is False
    assert got["register_failed_poll"] == 0.5


def test_unknown_zeo_layout_is_refused(monkeypatch):
    """A ZEO version or layout the kit does not know is refused, naming it; nothing patched."""
    import ZEO.asyncio.client as client
    import zeors_client_kit
    from zeors_client_kit import _patch

    before = client.Protocol.connection_made
    monkeypatch.setattr(_patch.importlib.metadata, "version", lambda name: "5.2.3")
    with pytest.raises(zeors_client_kit.UnsupportedZEO, match="supports ZEO 5.4 and 6.x, found ZEO 5.2.3"):
        zeors_client_kit.install()
    monkeypatch.setattr(_patch.importlib.metadata, "version", lambda name: "6.9")
    monkeypatch.delattr(client.ClientIO, "register_failed")
    with pytest.raises(zeors_client_kit.UnsupportedZEO, match="ClientIO.register_failed"):
        zeors_client_kit.install()
    assert client.Protocol.connection_made is before
    assert not zeors_client_kit.installed()


def test_bad_values_are_refused():
    import zeors_client_kit

    with pytest.raises(ValueError, match="user_timeout"):
        zeors_client_kit.Settings(user_timeout=-1)
    with pytest.raises(ValueError, match="keepalive_count"):
        zeors_client_kit.Settings(keepalive_count=0)


def test_ha_addresses_pick_the_clients_that_get_the_short_retry():
    from zeors_client_kit import Settings

    everyone = Settings()
    assert everyone.is_ha([("zeo.a", 8100)]) and everyone.is_ha(["/tmp/zeo.sock"])
    only_a = Settings(ha_addresses=[("zeo.a", "8100")])
    assert only_a.is_ha([("zeo.b", 8100), ("zeo.a", 8100)])
    assert not only_a.is_ha([("zeo.b", 8100)])
    assert not only_a.is_ha(["/tmp/zeo.sock"])


def test_the_wheel_installs_and_loads_from_zconfig(server, tmp_path):
    """scripts/build-python-kit's wheel, installed, carries component.xml: %import works."""
    build = subprocess.run([os.path.join(REPO, "scripts", "build-python-kit"), str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("zeors_client_kit-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    got, _ = run(sys.executable, "sockopts", addr(server), "zconfig", kit_path=str(site))
    assert got["kit_installed"] is True and got["user_timeout_ms"] == 10000

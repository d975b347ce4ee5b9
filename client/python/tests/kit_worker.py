"""A ZEO client process for the kit's tests, run by the venv of the ZEO under test (5.4 or 6.x).

    kit_worker.py sockopts HOST:PORT HOW     print the client socket's options as one JSON line
    kit_worker.py readonly HOST:PORT HOW     print "refused" once a read-only server refused it,
                                             then wait until it is connected to a writable
                                             server, commit, and print JSON

HOW is how the kit is (not) loaded: "none" (imported, never enabled), "install" (Python
API), "zconfig" (%import in a ZConfig file), "zconfig-section" (%import and a
<zeors-client-kit> section with other values), "zconfig-plain" (ZConfig without %import).
The kit comes from client/python/src (PYTHONPATH set by the test) or an installed wheel."""
import importlib.metadata
import json
import logging
import socket
import sys
import threading
import time

import ZEO
import ZEO.ClientStorage
import ZODB.config
import transaction

import zeors_client_kit

DEADLINE = 120  # seconds: generous, the machine may be busy


def zconfig(addr, how):
    server = f"<zeoclient>\n server {addr}\n</zeoclient>"
    if how == "zconfig":
        return f"%import zeors_client_kit\n<zodb>\n{server}\n</zodb>\n"
    if how == "zconfig-section":
        return ("%import zeors_client_kit\n<zodb>\n<zeors-client-kit>\n keepalive-idle 4s\n"
                " keepalive-interval 3s\n keepalive-count 2\n user-timeout 7s\n"
                f" read-only-retry 0.25\n ha-address {addr}\n ha-address 192.0.2.1:8100\n{server}\n"
                "</zeors-client-kit>\n</zodb>\n")
    return f"<zodb>\n{server}\n</zodb>\n"


def open_storage(addr, how):
    """The ClientStorage, and the DB when ZConfig opened one (it waits for the connection)."""
    if how == "install":
        zeors_client_kit.install()
    if how.startswith("zconfig"):
        db = ZODB.config.databaseFromString(zconfig(addr, how))
        return db.storage, db
    host, port = addr.rsplit(":", 1)
    return ZEO.ClientStorage.ClientStorage((host, int(port)), wait=False), None


def wait_connected(storage):
    end = time.monotonic() + DEADLINE
    while not storage.is_connected():
        if time.monotonic() > end:
            raise SystemExit("not connected within the deadline")
        time.sleep(0.01)


def client_io(storage):
    return storage._server.client


def sockopts(storage):
    sock = client_io(storage).protocol.sm_protocol.transport.get_extra_info("socket")
    tcp = socket.IPPROTO_TCP
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "user_timeout_ms": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
    }


def report(storage, **extra):
    out = {
        "zeo": importlib.metadata.version("ZEO"),
        "kit_installed": zeors_client_kit.installed(),
        "register_failed_poll": client_io(storage).register_failed_poll,
    }
    out.update(extra)
    print(json.dumps(out), flush=True)


class Refusals(logging.Handler):
    """Sees ZEO's "Registration or cache validation failed" (a read-only refusal)."""

    def __init__(self):
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record):
        if "Registration or cache validation failed" in record.getMessage():
            self.seen.set()


def main():
    mode, addr, how = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    refusals = Refusals()
    logging.getLogger("ZEO.asyncio.client").addHandler(refusals)
    storage, db = open_storage(addr, how)
    if mode == "sockopts":
        wait_connected(storage)
        report(storage, **sockopts(storage))
    elif mode == "readonly":
        if not refusals.seen.wait(DEADLINE):
            raise SystemExit("no read-only refusal seen")
        print("refused", flush=True)
        sys.stdin.readline()  # the test made the server writable
        started = time.monotonic()
        wait_connected(storage)
        connected = time.monotonic() - started
        db = ZODB.DB(storage)
        conn = db.open()
        conn.root()["kit"] = time.time()
        transaction.commit()
        conn.close()
        report(storage, committed=True, read_only=bool(storage.isReadOnly()), seconds_to_writable=connected)
    (db or storage).close()


if __name__ == "__main__":
    main()

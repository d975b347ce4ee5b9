"""An idle Python ZEO client that reports its connections, for the kernel-timeout test:

    kit_idle_client.py HOST:PORT,HOST:PORT

Opens a ClientStorage on the addresses (ZEO tries them all and keeps the first that registers)
and writes nothing. Prints one JSON line per change: {"event": "connected", "addr": "HOST:PORT",
"t": UNIX_TIME} or {"event": "disconnected", "t": ...}, until killed. It never writes, so a
connection to a vanished host is noticed only by the kernel (the kit's keepalive and
TCP_USER_TIMEOUT) or by ZEO's 60 s heartbeat and TCP's retransmission timeout."""
import json
import logging
import sys
import time

from ZEO.ClientStorage import ClientStorage


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main():
    # ZEO's (and the kit's) account of the connections, to stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    addrs = [address(a) for a in sys.argv[1].split(",")]
    storage = ClientStorage(addrs, wait=False, min_disconnect_poll=0.1, max_disconnect_poll=0.5)
    last = None
    while True:
        io = storage._server.client
        now = None
        if storage.is_connected() and io.protocol is not None:
            now = "%s:%s" % tuple(io.protocol.addr)
        if now != last:
            event = {"event": "connected", "addr": now} if now else {"event": "disconnected"}
            event["t"] = time.time()
            print(json.dumps(event), flush=True)
            last = now
        time.sleep(0.02)


if __name__ == "__main__":
    main()

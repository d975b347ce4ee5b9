"""Run the reference Python ZEO server exactly as `runzeo -C CONF` does, and additionally
write READY_FILE ({"listen": "127.0.0.1:PORT"}) once it accepts connections, the same
contract as `zeo-server --ready-file`. This makes port 0 usable.

    python pyserver.py CONF READY_FILE

Logging goes to stderr in runzeo's default format ("------\\n<time> LEVEL logger message").
SIGTERM stops it (runzeo's handler).
"""
import json
import os
import sys

from ZEO import runzeo


class ReadyFileZEOServer(runzeo.ZEOServer):

    ready_file = None

    def create_server(self):
        super().create_server()
        host, port = self.server.acceptor.addr[:2]
        tmp = self.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"listen": f"{host}:{port}", "admin": None, "pid": os.getpid()}, f)
        os.rename(tmp, self.ready_file)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    conf, ready = sys.argv[1:]
    options = runzeo.ZEOOptions()
    options.realize(["-C", conf])
    server = ReadyFileZEOServer(options)
    server.ready_file = os.path.abspath(ready)
    server.main()


if __name__ == "__main__":
    main()

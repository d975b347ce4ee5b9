"""A fake of the Kubernetes API's Lease resource for the fencing e2e (fencepair.py), served from the
root namespace on the lab's bridge address, with stalls on demand per client address.

What the supervisor's `kubernetes` lease backend uses and nothing more: GET, POST (create) and PUT
(replace) of `coordination.k8s.io/v1` Leases, a global resourceVersion counter, 409 Conflict on a
stale resourceVersion and 409 AlreadyExists on a duplicate create, 404 NotFound, errors as a
`Status`. The faithful fake of the rest (gated fields, MicroTime, 429/5xx) is the Rust one in
supervisor/src/testkit/kube_fake.rs, used by the supervisor's own tests.

`stall(ip)`: every request from that client address is accepted and never answered (the connection
stays open until `unstall(ip)` or the fake stops), as a wedged API server or a half-dead
connection through a broken load balancer does; other clients are served as before.
"""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/?]+))?(?:\?.*)?$")


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}


class FakeKube:
    def __init__(self, host):
        self.lock = threading.Lock()
        self.leases = {}
        self.version = 0
        self.stalled = set()
        self.released = threading.Condition(self.lock)
        self.closing = False
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake.lock:
                    fake.requests += 1
                    # A stalled client waits here, its request read and never answered.
                    while self.client_address[0] in fake.stalled and not fake.closing:
                        fake.released.wait()
                    if fake.closing:
                        self.close_connection = True
                        return
                    code, reply = fake.handle(method, self.path, body)
                # A request held by a stall may have been applied after its client gave up (as a
                # timed-out write to a real API server may land): the client finds out by reading.
                data = json.dumps(reply).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up on a stalled request and closed
                    self.close_connection = True

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_PUT(self):
                self._serve("PUT")

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, method, path, body):
        m = PATH.match(path)
        if not m:
            return status(404, "NotFound", f"no route {method} {path}")
        ns, name = m.group(1), m.group(2)
        if method == "GET" and name:
            lease = self.leases.get((ns, name))
            return (200, lease) if lease else status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if method == "POST" and not name:
            name = body["metadata"]["name"]
            if (ns, name) in self.leases:
                return status(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
            return 201, self._store(ns, name, body)
        if method == "PUT" and name:
            current = self.leases.get((ns, name))
            if not current:
                return status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": '
                                               "the object has been modified; please apply your changes to the latest "
                                               "version and try again")
            return 200, self._store(ns, name, body)
        return status(405, "MethodNotAllowed", f"{method} {path}")

    def _store(self, ns, name, body):
        self.version += 1
        lease = dict(body, apiVersion="coordination.k8s.io/v1", kind="Lease")
        lease["metadata"] = dict(body.get("metadata") or {}, name=name, namespace=ns,
                                 resourceVersion=str(self.version))
        self.leases[(ns, name)] = lease
        return lease

    def lease(self, ns, name):
        with self.lock:
            return self.leases.get((ns, name))

    def stall(self, ip):
        with self.lock:
            self.stalled.add(ip)

    def unstall(self, ip):
        with self.lock:
            self.stalled.discard(ip)
            self.released.notify_all()

    def close(self):
        with self.lock:
            self.closing = True
            self.released.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path, namespace):
        """A kubeconfig pointing at the fake (no credentials: the fake asks for none)."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake", "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

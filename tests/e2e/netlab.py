"""A small lab of hosts in network namespaces, for the failover tests: each host is a namespace
with one interface (eth0) on a shared bridge in the root namespace, addresses from the test
range 198.51.100.0/24 (not 192.0.2.0/24: a machine like CI's sits on that network itself, and
a lab bridge holding its gateway's address cuts it off). Needs root (CAP_NET_ADMIN) and iproute2.

    with Lab(["h1", "h2", "cl"]) as lab:
        proc = lab.spawn("h1", ["zeo-server", ...])
        lab.cut("h1")          # the host's link goes down: it is cut off from everyone
        lab.heal("h1")

The bridge itself has 198.51.100.1, so services run in the root namespace (etcd) are reachable
from every host, and cut off with it.
"""
import os
import subprocess
import uuid

SUBNET = "198.51.100"
PREFIX = 24


def sh(*argv, check=True, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def can_run():
    """Whether namespaces can be made here (root, iproute2)."""
    if os.geteuid() != 0:
        return False
    probe = "zlprobe" + uuid.uuid4().hex[:6]
    try:
        sh("ip", "netns", "add", probe)
        sh("ip", "netns", "del", probe)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


class Lab:
    def __init__(self, hosts, first=11, subnet=SUBNET):
        """`subnet` is the first three octets of the lab's /24: another test range (198.18.N)
        where several labs run at once."""
        tag = uuid.uuid4().hex[:5]
        self.bridge = f"zb{tag}"
        self.subnet = subnet
        self.hosts = {h: {"ns": f"z{tag}{h}", "veth": f"z{tag}{h}"[:15],
                          "ip": f"{subnet}.{first + i}"} for i, h in enumerate(hosts)}
        self.gateway = f"{subnet}.1"
        self.procs = []

    def __enter__(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/{PREFIX}", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        # With br_netfilter loaded, bridged frames cross iptables' FORWARD chain, whose policy
        # is DROP wherever Docker runs: let the lab's own traffic through.
        self._forward("-I")
        for h in self.hosts.values():
            sh("ip", "netns", "add", h["ns"])
            sh("ip", "link", "add", h["veth"], "type", "veth", "peer", "name", "eth0", "netns", h["ns"])
            sh("ip", "link", "set", h["veth"], "master", self.bridge)
            sh("ip", "link", "set", h["veth"], "up")
            sh("ip", "addr", "add", f"{h['ip']}/{PREFIX}", "dev", "eth0", ns=h["ns"])
            sh("ip", "link", "set", "eth0", "up", ns=h["ns"])
            sh("ip", "link", "set", "lo", "up", ns=h["ns"])
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for h in self.hosts.values():
            sh("ip", "netns", "del", h["ns"], check=False)
        self._forward("-D", check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    def _forward(self, op, check=True):
        for tool in ("iptables", "iptables-legacy"):
            try:
                sh(tool, op, "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT", check=check)
            except FileNotFoundError:
                continue

    def ip(self, host):
        return self.hosts[host]["ip"]

    def ns(self, host):
        return self.hosts[host]["ns"]

    def spawn(self, host, argv, **kw):
        """Starts a process inside `host`; killed when the lab closes."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + list(argv), **kw)
        self.procs.append(p)
        return p

    def run(self, host, *argv, check=True):
        return sh(*argv, check=check, ns=self.ns(host))

    def cut(self, host):
        """Takes the host's link down on the bridge side: no packet in or out."""
        sh("ip", "link", "set", self.hosts[host]["veth"], "down")

    def heal(self, host):
        sh("ip", "link", "set", self.hosts[host]["veth"], "up")

    def reachable(self, host, addr, port, timeout=1.0):
        """Whether a TCP connection from `host` to addr:port succeeds (or is refused: the host
        answered). False when packets are lost."""
        code = ("import socket,sys\n"
                "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
                "except ConnectionRefusedError: pass\n"
                "except OSError: sys.exit(1)\n")
        return self.run(host, "python3", "-c", code, addr, str(port), str(timeout), check=False).returncode == 0

    def addresses(self, host):
        out = self.run(host, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

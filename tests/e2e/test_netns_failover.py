"""Failover between hosts, in network namespaces (needs root): etcd on its own host, two server
hosts each running zeo-server under zeo-supervisor (exec mode, etcd lease, virtual IP moved with
gratuitous ARP), and a client host writing through the virtual IP with a Rust client (zeo-load in
verify mode) and a Python ZODB application (zodb_writer.py) at the same time.

Scenarios: SIGKILL of the primary's server, the primary host cut off from everyone (its link
down), the primary's server paused (SIGSTOP). In each, every acknowledged write must survive
(sync replication), a new primary must take over, and at no moment may two servers be writable.
"""
import os
import signal
import time

import pytest

from netpair import VIP, Watch, pair, primary_host, server_pid, start_writers, status, wait, writer_reports

# What these tests need from the machine (root, etcd, arping) is checked in conftest.py.


@pytest.fixture
def cluster(tmp_path):
    with pair(tmp_path) as lab:
        yield lab, tmp_path


@pytest.mark.parametrize("fault", ["sigkill", "link_cut", "sigstop"])
def test_failover_through_the_virtual_ip(cluster, fault):
    lab, tmp = cluster
    wait("a standby in sync", lambda: any((status(lab, h) or {}).get("in_sync") for h in ("h1", "h2")), 60)
    time.sleep(1.5)  # past --stable-for and --min-failover-interval since the election
    writers = start_writers(lab, tmp, 25)
    watch = Watch(lab)
    watch.start()
    time.sleep(4)
    victim = primary_host(lab)
    assert victim, "a primary before the fault"
    pid = server_pid(str(tmp / victim))
    if fault == "sigkill":
        os.kill(pid, signal.SIGKILL)
    elif fault == "link_cut":
        lab.cut(victim)
    else:
        os.kill(pid, signal.SIGSTOP)
    other = "h2" if victim == "h1" else "h1"
    wait("the other host promoted and holding the virtual IP",
         lambda: (status(lab, other) or {}).get("role") == "primary" and VIP in lab.addresses(other), 60)
    if fault == "link_cut":
        # The cut-off primary fenced itself: its server no longer accepts commits.
        wait("the cut-off primary fenced", lambda: not (status(lab, victim) or {}).get("writable"), 30)
        lab.heal(victim)
    elif fault == "sigstop":
        # Its supervisor fences a server that stops answering: demote, else kill (exec mode). A
        # paused process cannot answer the demotion, so it is killed and never resumes as primary.
        wait("the paused server killed by its supervisor", lambda: server_pid(str(tmp / victim)) != pid, 30)
    # The old primary comes back as a standby of the new one.
    wait("the old primary rejoining", lambda: (status(lab, victim) or {}).get("role") == "standby", 90)
    rust, py = writer_reports(lab, tmp, writers)
    watch.stop.set()
    watch.join(10)
    print(f"{fault}: zeo-load acknowledged {rust['acknowledged']}, lost {rust['lost']}, gap {rust['max_gap_ms']:.0f} ms; "
          f"python acknowledged {py['acknowledged']}, lost {py['lost']}, gap {py['max_gap_ms']:.0f} ms")
    assert rust["acknowledged"] > 0 and py["acknowledged"] > 0
    assert rust["lost"] == 0, rust
    assert py["lost"] == 0, {k: v for k, v in py.items() if k != "acks"}
    assert watch.samples > 10 and watch.doubles == 0, "two writable servers at once"

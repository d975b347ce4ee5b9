"""The fencing scenarios of issue 12 on the sidecar-mode pair of fencepair.py, shared by
tests/e2e/test_fencing.py (2 runs each) and bench/fencing.py (N runs each). Each scenario runs in a
fresh pair, in strict (`--sync-standbys 1`, no timeout) or degrade (`--sync-timeout 500ms`) mode:

- sup_kill:   SIGKILL of the primary's supervisor, then its replication link drops; the supervisor
              is restarted once the other server took over (as the kubelet would).
- sup_stop:   SIGSTOP of the primary's supervisor, the link drops, the other server takes over (past
              the lease duration), then SIGCONT.
- store_cut:  the lease store (etcd) unreachable from the primary's host only, and the link drops.
- kube_stall: the lease in a fake Kubernetes API (kubefake.py) that stalls every request of the
              primary's supervisor (accepted, never answered), and the link drops.
- degrade_window: the link drops, then the primary's server is SIGKILLed at a random point in the
              first 2 s; it is restarted a second after each exit (as the kubelet would).
- disk_full:  the primary's server is SIGKILLed and the standby's data directory (a small tmpfs) is
              filled; the standby's promotion fails; the old primary's server is restarted and must
              become the writable primary again.

After each fault the faults are healed and the pair must settle again (one writable primary and an
in-sync standby) before the writers stop. `run` returns one row: acknowledged and lost commits of
both writers, the longest stretch with no writable server (s), the watcher's double-writer samples,
the epochs, and for disk_full the recovery time after the failed promotion (s).
"""
import json
import random
import signal
import time

from fencepair import HOSTS, Pair, Watcher, wait

SCENARIOS = ("sup_kill", "sup_stop", "store_cut", "kube_stall", "degrade_window", "disk_full")
WRITE_BEFORE = 3  # seconds of writes before the fault
WRITE_SECONDS = 12  # zeo-load's duration (the Python writer runs until the pair settled again)


def lease_record(pair):
    """The lease record in etcd (its JSON value) or the fake Kubernetes API, or None."""
    if pair.kube:
        return pair.kube.lease("zeo", "zeo-fence")
    out = pair.lab.run("etcd", "etcdctl", "--endpoints", f"http://{pair.ip('etcd')}:2379", "get",
                       "zeo-fence", "--print-value-only", check=False)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return None


def promotion_failed(pair, loser):
    """Whether `loser`'s supervisor logged a failed promotion that gave the lease back."""
    log = open(pair.tmp / f"{loser}-supervisor.log", errors="replace").read()
    return "could not be promoted: giving the lease back" in log


def run(scenario, mode, tmp, rng=random, write_seconds=WRITE_SECONDS):
    assert scenario in SCENARIOS
    lease = "kube" if scenario == "kube_stall" else "etcd"
    with Pair(tmp, mode=mode, lease=lease, tmpfs_mb=64 if scenario == "disk_full" else None) as pair:
        victim = pair.start()
        other = pair.other(victim)
        epoch0 = pair.epoch(victim)
        watch = Watcher(pair)
        watch.start()
        time.sleep(1.5)  # past --stable-for and --min-failover-interval since the election
        writers = pair.start_writers(write_seconds)
        time.sleep(WRITE_BEFORE)
        extra = {}
        watch.mark_fault()
        fault_at = time.monotonic()
        if scenario == "sup_kill":
            pair.signal_supervisor(victim, signal.SIGKILL)
            pair.cut_replication(victim)
        elif scenario == "sup_stop":
            pair.signal_supervisor(victim, signal.SIGSTOP)
            pair.cut_replication(victim)
        elif scenario in ("store_cut", "kube_stall"):
            pair.cut_store(victim)
            pair.cut_replication(victim)
        elif scenario == "degrade_window":
            pair.cut_replication(victim)
            delay = rng.uniform(0, 2)
            extra["kill_after_s"] = round(delay, 3)
            time.sleep(delay)
            pair.kill_server(victim)
        elif scenario == "disk_full":
            pair.kill_server(victim)
            pair.fill_disk(other)

        if scenario in ("sup_kill", "sup_stop", "store_cut", "kube_stall"):
            wait("the victim's server fenced", lambda: not (pair.status(victim) or {}).get("writable"), 60,
                 dump=pair.dump)
            wait("the other server a writable primary", lambda: pair.primary() == other, 90, dump=pair.dump)
            extra["takeover_s"] = round(time.monotonic() - fault_at, 2)
            if scenario == "sup_kill":
                pair.start_supervisor(victim)
            elif scenario == "sup_stop":
                pair.signal_supervisor(victim, signal.SIGCONT)
            else:
                pair.heal_store(victim)
            pair.heal_replication(victim)
        elif scenario == "degrade_window":
            pair.keep_running(victim, delay=1.0)
            time.sleep(1)
            pair.heal_replication(victim)
        else:
            wait("the standby's promotion failed", lambda: promotion_failed(pair, other), 90, dump=pair.dump)
            failed_at = time.monotonic()
            pair.keep_running(victim, delay=0)
            wait("the old primary writable again", lambda: pair.primary() == victim, 90, dump=pair.dump)
            extra["recovered_after_failed_promotion_s"] = round(time.monotonic() - failed_at, 2)
            pair.free_disk(other)
        wait("the pair settled: a writable primary and an in-sync standby", pair.settled, 120, dump=pair.dump)
        survivor = pair.primary()
        rust, py = pair.writer_reports(writers)
        watch.stop()
        epochs = {h: pair.epoch(h) for h in HOSTS}
        row = {
            "scenario": scenario, "mode": mode, "victim": victim, "survivor": survivor,
            "rust_acked": rust["acknowledged"], "rust_lost": rust["lost"],
            "py_acked": py["acknowledged"], "py_lost": py["lost"],
            "acked": rust["acknowledged"] + py["acknowledged"], "lost": rust["lost"] + py["lost"],
            "no_writable_s": round(watch.longest_unwritable, 2),
            "doubles": watch.doubles, "samples": watch.samples,
            "epoch_before": epoch0, "epoch_after": max(e or 0 for e in epochs.values()),
            "server_restarts": sum(pair.restarts.values()),
            **extra,
        }
        if row["lost"] or row["doubles"]:
            row["evidence"] = {"rust": rust, "py": py, "double_at": watch.double_at[:20],
                               "lease": lease_record(pair)}
            pair.dump(80)
        return row

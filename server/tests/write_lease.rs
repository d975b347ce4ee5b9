//! The server's write lease with real zeo-server processes on loopback: no acknowledgement
//! without a grant, none past its deadline (also across a SIGSTOP), the fence at expiry, the
//! admin calls' rules, and a degrade that waits for the supervisor's out-of-sync mark.

#[allow(dead_code)]
#[path = "replication/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Node, client, commit_new};
use zeo_client::{Client, ClientError, ClientOptions};

const SECOND: u64 = 1_000_000_000;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// This machine's CLOCK_BOOTTIME, the clock the server's grants are on.
fn boottime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    u64::try_from(ts.tv_sec()).unwrap() * SECOND + u64::try_from(ts.tv_nsec()).unwrap()
}

async fn grant(n: &Node, epoch: u64, until: u64) -> (u16, serde_json::Value) {
    n.post("/write-lease", &format!("{{\"epoch\": {epoch}, \"until_boottime_ns\": {until}}}")).await
}

/// A client whose calls outlast a paused server, so that what it sees is the server's answer.
async fn patient_client(addr: &str) -> Client {
    let mut o = ClientOptions::new([addr]);
    o.call_timeout = Duration::from_secs(60);
    o.wait_timeout = Duration::from_secs(10);
    o.commit_resolve_timeout = Duration::from_secs(2);
    Client::connect(o).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_is_acknowledged_before_a_grant_and_commits_flow_after_one() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--require-write-lease", "--max-write-grant", "5m"]);
    let s = a.status().await;
    assert_eq!((s["role"].as_str(), s["writable"].as_bool()), (Some("primary"), Some(false)), "{s}");
    assert_eq!(s["not_writable_reason"], "no write lease granted yet", "{s}");
    assert_eq!(s["write_lease"], serde_json::json!({"required": true, "remaining_ms": null, "expired": false}));
    assert!(s["boottime_ns"].as_u64().is_some_and(|t| t > 0), "{s}");

    let c = client(&a.zeo, false).await;
    let before = commit_new(&c, b"before the grant").await;
    assert_eq!(before.err(), Some(ClientError::ReadOnly), "refused at vote as ReadOnlyError");
    assert_eq!(a.status().await["last_tid"], "0000000000000000", "nothing was committed");

    // A grant for another epoch is refused; ours is capped at --max-write-grant.
    let now = boottime_ns();
    let (code, body) = grant(&a, 7, now + 60 * SECOND).await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("epoch 7")), "{body}");
    let (code, body) = grant(&a, 0, now + 3600 * SECOND).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["writable"], true, "{body}");
    let kept = body["until_boottime_ns"].as_u64().unwrap();
    assert!(kept <= boottime_ns() + 300 * SECOND && kept > now + 290 * SECOND, "capped at 5m: {body}");
    // An earlier deadline does not move it back.
    let (code, body) = grant(&a, 0, now + 60 * SECOND).await;
    assert_eq!((code, body["until_boottime_ns"].as_u64()), (200, Some(kept)), "{body}");

    let (oid, _) = commit_new(&c, b"after the grant").await.unwrap();
    assert_eq!(&c.load(oid).await.unwrap().0[..], b"after the grant");
    let s = a.status().await;
    assert_eq!((s["writable"].as_bool(), &s["not_writable_reason"]), (Some(true), &serde_json::Value::Null), "{s}");
    assert!(s["write_lease"]["remaining_ms"].as_u64().is_some_and(|ms| ms > 200_000), "{s}");

    let (code, metrics) = harness::http(&a.admin, "GET", "/metrics", "", None).await;
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("zeo_commits_refused_not_writable_total 1"), "{metrics}");
    assert!(metrics.contains("zeo_write_lease_remaining_seconds "), "{metrics}");
    assert!(metrics.contains("zeo_write_lease_expiries_total 0"), "{metrics}");
    // Unauthenticated grants are refused like every admin POST.
    let (code, _) = harness::http(&a.admin, "POST", "/write-lease", "{}", None).await;
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_the_server_fences_itself_and_stays_fenced_after_a_restart() {
    let d = tmp();
    let mut a = Node::start(&d.path().join("a"), "a", &["--require-write-lease"]);
    let (code, body) = grant(&a, 0, boottime_ns() + 4 * SECOND).await;
    assert_eq!(code, 200, "{body}");
    let c = client(&a.zeo, false).await;
    let (oid, _) = commit_new(&c, b"within the lease").await.unwrap();

    let s = a.wait_status("fenced by the deadline", |s| s["writable"] == false).await;
    let s = if s["role"] == "demoted" { s } else { a.wait_status("demoted", |s| s["role"] == "demoted").await };
    assert_eq!(s["not_writable_reason"], "write lease expired", "{s}");
    assert_eq!(s["write_lease"]["expired"], true, "{s}");
    a.wait_status("every client disconnected", |s| s["connections"] == 0).await;
    let log = a.log();
    assert_eq!(log.matches("write lease expired without a new grant").count(), 1, "logged once: {log}");
    assert!(log.contains("ERROR"), "{log}");

    // Nothing more is acknowledged, and a late grant does not revive the lease.
    assert!(commit_new(&c, b"after the deadline").await.is_err());
    let (code, body) = grant(&a, 0, boottime_ns() + 10 * SECOND).await;
    assert_eq!(code, 409, "{body}");
    let (code, metrics) = harness::http(&a.admin, "GET", "/metrics", "", None).await;
    assert_eq!(code, 200);
    assert!(metrics.as_str().unwrap().contains("zeo_write_lease_expiries_total 1"), "{metrics}");

    // The demotion is persisted: a restart does not write either.
    a.restart_with(&["--require-write-lease"]);
    let s = a.status().await;
    assert_eq!((s["role"].as_str(), s["writable"].as_bool()), (Some("demoted"), Some(false)), "{s}");
    assert_eq!(&client(&a.zeo, true).await.load(oid).await.unwrap().0[..], b"within the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_carries_the_first_grant() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--require-write-lease", "--wait-for-supervisor"]);
    assert_eq!(a.status().await["role"], "demoted");
    let (code, body) = a.post("/promote", "{\"epoch\": 1}").await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("until_boottime_ns")), "{body}");
    let past = boottime_ns() - SECOND;
    let (code, body) = a.post("/promote", &format!("{{\"epoch\": 1, \"until_boottime_ns\": {past}}}")).await;
    assert_eq!(code, 409, "a grant already over: {body}");
    assert_eq!(a.status().await["role"], "demoted");
    let until = boottime_ns() + 20 * SECOND;
    let (code, body) = a.post("/promote", &format!("{{\"epoch\": 1, \"until_boottime_ns\": {until}}}")).await;
    assert_eq!(code, 200, "{body}");
    let s = a.status().await;
    assert_eq!((s["role"].as_str(), s["writable"].as_bool()), (Some("primary"), Some(true)), "{s}");
    commit_new(&client(&a.zeo, false).await, b"promoted with a grant").await.unwrap();
    let (code, body) = grant(&a, 1, until + SECOND).await;
    assert_eq!((code, body["until_boottime_ns"].as_u64()), (200, Some(until + SECOND)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_while_paused_past_the_lease_is_not_acknowledged() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--require-write-lease"]);
    let c = patient_client(&a.zeo).await;
    let until = boottime_ns() + 2 * SECOND;
    let (code, body) = grant(&a, 0, until).await;
    assert_eq!(code, 200, "{body}");
    let last = a.status().await["last_tid"].clone();
    a.signal("-STOP");
    let pending = {
        let c = c.clone();
        tokio::spawn(async move { commit_new(&c, b"in flight across the pause").await })
    };
    // The clock the lease is on passes the deadline while the server cannot run.
    while boottime_ns() <= until + 200_000_000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("-CONT");
    let outcome = pending.await.unwrap();
    assert!(outcome.is_err(), "a commit past the lease was acknowledged: {outcome:?}");
    let s = a.wait_status("demoted", |s| s["role"] == "demoted").await;
    assert_eq!(s["writable"], false, "{s}");
    assert_eq!(s["last_tid"], last, "nothing was published: {s}");
}

/// Primary `a` in sync mode that may degrade after 300 ms, holding a five-minute grant.
async fn granted_degrading_primary(dir: &std::path::Path) -> Node {
    let a = Node::start(
        &dir.join("a"),
        "a",
        &["--require-write-lease", "--max-write-grant", "5m", "--sync-standbys", "1", "--sync-timeout", "300ms"],
    );
    let (code, body) = grant(&a, 0, boottime_ns() + 300 * SECOND).await;
    assert_eq!(code, 200, "{body}");
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_waits_for_the_supervisors_out_of_sync_mark() {
    let d = tmp();
    let a = granted_degrading_primary(d.path()).await;
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"warm").await.unwrap();
    b.wait_status("in sync", |s| s["in_sync"] == true).await;
    b.signal("-STOP");
    let pending = {
        let c = patient_client(&a.zeo).await;
        tokio::spawn(async move { commit_new(&c, b"waits for the mark").await })
    };
    let s = a.wait_status("asks to drop b", |s| s["degrade_requested"] == serde_json::json!(["b"])).await;
    assert_eq!(s["storages"]["1"]["degrade_requested"], serde_json::json!(["b"]), "{s}");
    assert_eq!(s["sync_state"], "blocked", "commits wait past the timeout: {s}");
    assert!(!pending.is_finished(), "a commit was acknowledged without the mark");
    assert_eq!(s["standbys"][0]["out_of_sync"], false, "{s}");

    let (code, body) = a.post("/out-of-sync", "{\"epoch\": 3, \"standbys\": [\"b\"]}").await;
    assert_eq!(code, 409, "wrong epoch: {body}");
    let (code, body) = a.post("/out-of-sync", "{\"epoch\": 0, \"standbys\": [\"b\"]}").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["dropped"], serde_json::json!(["b"]), "{body}");
    pending.await.unwrap().unwrap();
    let s = a.status().await;
    assert_eq!(s["sync_state"], "degraded", "{s}");
    assert_eq!(s["standbys"][0]["out_of_sync"], true, "{s}");
    assert_eq!(s["degrade_requested"], serde_json::json!([]), "{s}");
    b.signal("-CONT");
}

/// A primary whose only peer never connected to it (promoted while the old primary was gone with
/// its host) still degrades past it: the peer is a listed member of the link, so it is the one
/// left behind, marked out of sync before anything is acknowledged without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_member_that_never_connected_is_left_behind_once_marked() {
    let d = tmp();
    let a = granted_degrading_primary(d.path()).await;
    let pending = {
        let c = patient_client(&a.zeo).await;
        tokio::spawn(async move { commit_new(&c, b"no standby ever connected").await })
    };
    let s = a.wait_status("asks to drop b", |s| s["degrade_requested"] == serde_json::json!(["b"])).await;
    assert_eq!(s["sync_state"], "blocked", "nothing is acknowledged before the mark: {s}");
    assert!(!pending.is_finished(), "a commit was acknowledged without the mark");
    let (code, body) = a.post("/out-of-sync", "{\"epoch\": 0, \"standbys\": [\"b\"]}").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["dropped"], serde_json::json!(["b"]), "{body}");
    pending.await.unwrap().unwrap();
    let s = a.status().await;
    assert_eq!(s["sync_state"], "degraded", "{s}");
    // The mark is on the server's own durable record too, until b itself has caught up.
    let state = std::fs::read_to_string(a.dir.join("Data.fs.rsrepl")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["standbys_out_of_sync"], serde_json::json!(["b"]), "{state}");
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    b.wait_status("b caught up and in sync", |s| s["in_sync"] == true).await;
    let s = a.wait_status("sync again, b's mark cleared", |s| s["sync_state"] == "sync").await;
    assert_eq!(s["standbys"][0]["out_of_sync"], false, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_by_the_sync_gate_when_the_lease_runs_out_is_not_acknowledged_nor_lost() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--require-write-lease", "--sync-standbys", "1"]);
    let until = boottime_ns() + 4 * SECOND;
    let (code, body) = grant(&a, 0, until).await;
    assert_eq!(code, 200, "{body}");
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    let (_, warm) = commit_new(&ca, b"warm").await.unwrap();
    let warm = hex::encode(warm);
    b.wait_status("in sync", |s| s["in_sync"] == true).await;
    b.signal("-STOP");
    let pending = {
        let c = patient_client(&a.zeo).await;
        tokio::spawn(async move { commit_new(&c, b"held at the deadline").await })
    };
    a.wait_status("a commit waits for the standby", |s| s["sync_state"] == "blocked").await;
    // The primary is paused across its deadline, and the standby's acknowledgement is waiting in
    // its socket when it resumes: the gate opens and the expiry timer fires at once, in either order.
    a.signal("-STOP");
    b.signal("-CONT");
    b.wait_status("applied the held commit", |s| s["last_tid"].as_str() > Some(warm.as_str())).await;
    while boottime_ns() <= until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("-CONT");
    let outcome = pending.await.unwrap();
    // The answer to its tpc_finish, as the client saw it before failing to look the outcome up.
    let err = outcome.expect_err("acknowledged past the lease").to_string();
    assert!(err.contains("StorageTransactionError") && err.contains("write lease expired"), "{err}");
    let s = a.wait_status("demoted", |s| s["role"] == "demoted").await;
    let held = s["last_tid"].as_str().unwrap().to_owned();
    assert!(held > warm, "the transaction is durable here: {s}");
    assert_eq!(s["storages"]["1"]["last_tid"], warm, "but was never published: {s}");
    // Promoted again, with a grant, the server publishes it: nothing durable is lost.
    let until = boottime_ns() + 20 * SECOND;
    let (code, body) = a.post("/promote", &format!("{{\"epoch\": 1, \"until_boottime_ns\": {until}}}")).await;
    assert_eq!(code, 200, "{body}");
    a.wait_status("published after the grant", |s| s["storages"]["1"]["last_tid"] == held).await;
}

/// A standby under a file size limit (SIGXFSZ ignored): its writes fail with EFBIG past it, as
/// they would with ENOSPC on a full disk.
struct LimitedStandby {
    child: std::process::Child,
    admin: String,
}

impl LimitedStandby {
    fn start(dir: &std::path::Path, primary_repl: &str, limit_kib: u64) -> LimitedStandby {
        std::fs::create_dir_all(dir).unwrap();
        let ready = dir.join("ready.json");
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"", limit_kib * 2))
            .arg(env!("CARGO_BIN_EXE_zeo-server"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--standby-name", "b"])
            .args(["--standby-of", primary_repl])
            .args(harness::link_args("b", &[]))
            .arg("--path")
            .arg(dir.join("Data.fs"))
            .arg("--ready-file")
            .arg(&ready)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut n = LimitedStandby { child, admin: String::new() };
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(n.child.try_wait().unwrap().is_none(), "the standby exited");
            assert!(start.elapsed() < Duration::from_secs(30), "the standby did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        n.admin = doc["admin"].as_str().unwrap().to_owned();
        n
    }

    async fn wait_status(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let (code, s) = harness::http(&self.admin, "GET", "/status", "", None).await;
            assert_eq!(code, 200, "{s}");
            if f(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never {what}: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LimitedStandby {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_cannot_write_its_storage_reports_itself_not_in_sync_and_stays_up() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1", "--sync-timeout", "60s"]);
    let mut b = LimitedStandby::start(&d.path().join("b"), &a.repl, 256);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"small").await.unwrap();
    b.wait_status("in sync", |s| s["in_sync"] == true && s["storage_error"].is_null()).await;
    let _big = {
        let c = patient_client(&a.zeo).await;
        tokio::spawn(async move { commit_new(&c, &vec![7u8; 512 << 10]).await })
    };
    let s = b.wait_status("a storage error", |s| s["storage_error"].is_string()).await;
    assert_eq!(s["in_sync"], false, "not promotable: {s}");
    assert_eq!(s["storages"]["1"]["replication"]["in_sync"], false, "{s}");
    assert!(s["storage_error"].as_str().unwrap().to_lowercase().contains("large"), "EFBIG: {s}");
    assert!(b.child.try_wait().unwrap().is_none(), "the standby stays up");
}

/// The Python interpreter with ZODB and ZEO: `$ZEORS_PYTHON`, else `.venv/bin/python` at the root.
fn python() -> std::path::PathBuf {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p =
        std::env::var_os("ZEORS_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| repo.join(".venv/bin/python"));
    assert!(p.exists(), "no Python at {} (run scripts/setup-venv or set ZEORS_PYTHON)", p.display());
    p
}

/// One commit through ZEO's `ClientStorage`; prints `COMMITTED` or the exception's class and text.
const PYTHON_COMMIT: &str = r#"
import sys, transaction, ZODB, ZEO.ClientStorage
host, port = sys.argv[1].rsplit(":", 1)
storage = ZEO.ClientStorage.ClientStorage((host, int(port)), wait_timeout=30)
try:
    db = ZODB.DB(storage)  # an empty storage: creating the root object is the first commit
    conn = db.open()
    conn.root()["k"] = sys.argv[2]
    transaction.commit()
    print("COMMITTED")
except Exception as e:
    print(type(e).__module__ + "." + type(e).__name__, e)
"#;

fn python_commit(addr: &str, value: &str) -> String {
    let out = std::process::Command::new(python()).args(["-c", PYTHON_COMMIT, addr, value]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clientstorage_sees_read_only_error_before_a_grant_and_commits_after() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--require-write-lease", "--max-write-grant", "5m"]);
    let zeo = a.zeo.clone();
    let refused = tokio::task::spawn_blocking(move || python_commit(&zeo, "refused")).await.unwrap();
    assert!(
        refused.starts_with("ZODB.POSException.ReadOnlyError") && refused.contains("no write lease granted yet"),
        "{refused}"
    );
    let (code, body) = grant(&a, 0, boottime_ns() + 300 * SECOND).await;
    assert_eq!(code, 200, "{body}");
    let zeo = a.zeo.clone();
    let committed = tokio::task::spawn_blocking(move || python_commit(&zeo, "committed")).await.unwrap();
    assert_eq!(committed, "COMMITTED");
}

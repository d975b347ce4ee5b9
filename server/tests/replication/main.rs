//! Replication between real zeo-server processes on loopback: catch-up, live streaming, SIGKILL
//! of either side (sync: nothing acknowledged is lost; async: the loss is measured), divergence
//! and rewind, epochs, and a stopped standby in strict and degrade modes.

mod attacks;
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use harness::{Node, client, commit_new};
use rand::Rng;
use zeo_client::Client;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn hex_tid(t: &[u8; 8]) -> String {
    hex::encode(t)
}

/// Every acknowledged (oid, data) loads back from `c`.
async fn assert_all_present(c: &Client, acked: &[([u8; 8], Vec<u8>)], what: &str) {
    for (oid, data) in acked {
        let (got, _) = c.load(*oid).await.unwrap_or_else(|e| panic!("{what}: {} missing: {e}", hex::encode(oid)));
        assert_eq!(&got[..], &data[..], "{what}: wrong data for {}", hex::encode(oid));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_copies_an_existing_database_then_follows_live_commits() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &[]);
    let ca = client(&a.zeo, false).await;
    let mut acked = Vec::new();
    for i in 0..50u32 {
        let data = format!("before-{i}").into_bytes();
        acked.push((commit_new(&ca, &data).await.unwrap().0, data));
    }
    // An empty standby gets a copy of the file, then the stream, while writers keep going.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(ca.clone(), stop.clone(), "during-seed", 20);
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    b.wait_status("seeded", |s| s["connected"] == true).await;
    stop.store(true, Ordering::SeqCst);
    acked.extend(writer.await.unwrap());
    let mut last = [0; 8];
    for i in 0..50u32 {
        let data = format!("live-{i}").into_bytes();
        let (oid, tid) = commit_new(&ca, &data).await.unwrap();
        acked.push((oid, data));
        last = tid;
    }
    b.wait_applied(&hex_tid(&last)).await;
    let cb = client(&b.zeo, true).await;
    assert_all_present(&cb, &acked, "standby").await;
    assert!(b.log().contains("copy of the primary's file in place"), "{}", b.log());
    // Same tids, same data, same layout: the files are identical.
    assert_eq!(std::fs::read(a.data()).unwrap(), std::fs::read(b.data()).unwrap());
    let s = a.status().await;
    assert_eq!(s["standbys"][0]["name"], "b");
    assert_eq!(s["standbys"][0]["acked_tid"], hex_tid(&last));
    assert_eq!(s["standbys"][0]["lag_transactions"], 0);
    let s = b.status().await;
    // An async primary promises nothing: its standby is never "in sync" (promotable without loss).
    assert_eq!((s["role"].as_str(), s["in_sync"].as_bool()), (Some("standby"), Some(false)));
    // Writes on the standby are refused.
    let err = client_err(&b.zeo).await;
    assert!(err.contains("ReadOnly") || err.contains("read-only") || err.contains("read only"), "{err}");
}

/// Commits new objects until `stop` is set (and at least `at_least` of them); returns what was
/// acknowledged.
fn spawn_writer(
    c: Client,
    stop: Arc<AtomicBool>,
    prefix: &'static str,
    at_least: u32,
) -> tokio::task::JoinHandle<Vec<([u8; 8], Vec<u8>)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::SeqCst) || i < at_least {
            let data = format!("{prefix}-{i}").into_bytes();
            acked.push((commit_new(&c, &data).await.unwrap().0, data));
            i += 1;
        }
        acked
    })
}

/// What connecting writable to a read-only server gives.
async fn client_err(addr: &str) -> String {
    let mut o = zeo_client::ClientOptions::new([addr]);
    o.wait_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(1);
    match Client::connect(o).await {
        Ok(c) => match commit_new(&c, b"x").await {
            Ok(_) => "committed".into(),
            Err(e) => format!("{e:?}"),
        },
        Err(e) => format!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_far_behind_catches_up_under_load() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &[]);
    let mut b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"first").await.unwrap();
    b.kill();
    let mut acked = Vec::new();
    for i in 0..300u32 {
        let data = format!("while-down-{i}").into_bytes();
        acked.push((commit_new(&ca, &data).await.unwrap().0, data));
    }
    // Back, while writers keep going.
    b.restart_with(&["--standby-of", &a.repl]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(ca.clone(), stop.clone(), "during-catch-up", 100);
    b.wait_status("caught up once", |s| s["applied_tid"].as_str() > Some("0000000000000000")).await;
    stop.store(true, Ordering::SeqCst);
    acked.extend(writer.await.unwrap());
    let last = hex::encode(ca.sync().await.unwrap());
    b.wait_applied(&last).await;
    assert_all_present(&client(&b.zeo, true).await, &acked, "standby").await;
    assert_eq!(std::fs::read(a.data()).unwrap(), std::fs::read(b.data()).unwrap());
}

/// One SIGKILL run: a writer commits to the primary; one side is killed at a random moment (the
/// standby first in some runs, then restarted); the primary is killed; the standby is promoted.
/// Returns (acknowledged, lost).
async fn kill_run(base: &std::path::Path, run: u32, sync: bool) -> (usize, usize) {
    let mut rng = rand::rng();
    let mode: &[&str] = if sync { &["--sync-standbys", "1"] } else { &[] };
    let mut a = Node::start(&base.join(format!("a{run}")), "a", mode);
    let mut b_args = vec!["--standby-of", &a.repl];
    b_args.extend_from_slice(mode);
    let b_args: Vec<String> = b_args.iter().map(|s| s.to_string()).collect();
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = Node::start(&base.join(format!("b{run}")), "b", &b_refs);
    let ca = client(&a.zeo, false).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ca, stop) = (ca.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let data = format!("run-{run}-{i}").into_bytes();
                match commit_new(&ca, &data).await {
                    Ok((oid, _)) => acked.push((oid, data)),
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    if rng.random_bool(0.3) {
        // The standby dies first and comes back (it catches up from where it stopped).
        b.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        b.restart_with(&b_refs);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
    }
    a.kill();
    stop.store(true, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    b.promote(u64::from(run) + 1).await;
    let cb = client(&b.zeo, true).await;
    let mut lost = 0;
    for (oid, data) in &acked {
        match cb.load(*oid).await {
            Ok((got, _)) => assert_eq!(&got[..], &data[..], "run {run}: different data for {}", hex::encode(oid)),
            Err(_) => lost += 1,
        }
    }
    if sync && lost > 0 {
        panic!(
            "run {run}: {lost} of {} acknowledged commits lost in sync mode\nA:\n{}\nB:\n{}",
            acked.len(),
            a.log(),
            b.log()
        );
    }
    (acked.len(), lost)
}

fn runs(default: u32) -> u32 {
    std::env::var("ZEO_REPL_KILL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_loses_no_acknowledged_commit_across_sigkills() {
    let d = tmp();
    let (mut total, mut lost) = (0, 0);
    for run in 0..runs(50) {
        let (t, l) = kill_run(d.path(), run, true).await;
        total += t;
        lost += l;
        let _ = std::fs::remove_dir_all(d.path().join(format!("a{run}")));
        let _ = std::fs::remove_dir_all(d.path().join(format!("b{run}")));
    }
    println!("sync mode: {total} acknowledged commits over {} SIGKILL runs, {lost} lost", runs(50));
    assert_eq!(lost, 0);
    assert!(total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_loss_is_measured() {
    let d = tmp();
    let (mut total, mut lost) = (0, 0);
    let n = runs(50).min(20);
    for run in 0..n {
        let (t, l) = kill_run(d.path(), run, false).await;
        total += t;
        lost += l;
        let _ = std::fs::remove_dir_all(d.path().join(format!("a{run}")));
        let _ = std::fs::remove_dir_all(d.path().join(format!("b{run}")));
    }
    println!("async mode: {total} acknowledged commits over {n} SIGKILL runs, {lost} lost after promotion");
    assert!(total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_old_primary_rewinds_to_a_side_file_and_follows() {
    let d = tmp();
    let mut a = Node::start(&d.path().join("a"), "a", &[]);
    let mut b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    let (shared_oid, shared_tid) = commit_new(&ca, b"shared").await.unwrap();
    b.wait_applied(&hex_tid(&shared_tid)).await;
    // The standby goes down (async mode: the primary goes on alone), then the primary dies and
    // the standby, back, is promoted.
    b.kill();
    let (extra_oid, extra_tid) = commit_new(&ca, b"only-on-a").await.unwrap();
    drop(ca);
    a.kill();
    b.restart_with(&["--standby-of", &a.repl]);
    b.promote(1).await;
    let cb = client(&b.zeo, false).await;
    let (new_oid, new_tid) = commit_new(&cb, b"only-on-b").await.unwrap();
    // The old primary comes back fenced (as a supervisor starts it) and is told to rejoin.
    a.restart_with(&["--wait-for-supervisor"]);
    assert_eq!(a.status().await["role"], "demoted");
    a.rejoin(&b).await;
    let want = hex_tid(&new_tid);
    a.wait_status("following B", |s| s["connected"] == true && s["applied_tid"].as_str() == Some(&want)).await;
    let log = a.log();
    assert!(log.contains("rewound to the last transaction shared with the primary"), "{log}");
    let side: Vec<_> = std::fs::read_dir(&a.dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains(".diverged-"))
        .filter(|p| p.extension().is_some_and(|e| e == "fs"))
        .collect();
    assert_eq!(side.len(), 1, "one side file: {side:?}");
    // The side file is a FileStorage holding exactly the transaction B never received.
    let fs = zeo_server::storage::FileStorage::open(
        &side[0],
        zeo_server::storage::OpenOptions { read_only: true, ..Default::default() },
    )
    .unwrap();
    let txns: Vec<_> = fs.iterator(None, None).unwrap().map(|t| t.unwrap()).collect();
    assert_eq!(txns.len(), 1);
    assert_eq!(txns[0].tid, extra_tid);
    assert_eq!(txns[0].records[0].oid, extra_oid);
    // A now holds B's history exactly: never a merge of the two.
    assert_eq!(std::fs::read(a.data()).unwrap(), std::fs::read(b.data()).unwrap());
    let ra = client(&a.zeo, true).await;
    assert_eq!(&ra.load(shared_oid).await.unwrap().0[..], b"shared");
    assert_eq!(&ra.load(new_oid).await.unwrap().0[..], b"only-on-b");
    // B may have handed out the same oid since; the diverged data itself is gone.
    if let Ok((data, _)) = ra.load(extra_oid).await {
        assert_ne!(&data[..], b"only-on-a", "the diverged transaction is gone from A");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_epoch_is_refused_and_the_stale_primary_fences_itself() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &[]);
    let b = Node::start(&d.path().join("b"), "b", &[]);
    // B was promoted at epoch 3 elsewhere; A still believes it is the primary at epoch 0.
    b.promote(3).await;
    // Promotions never go backwards, and repeating one is harmless.
    let (code, body) = b.post("/promote", "{\"epoch\": 2}").await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = b.post("/promote", "{\"epoch\": 3}").await;
    assert_eq!((code, body["changed"].as_bool()), (200, Some(false)));
    // B told to follow A: A sees a higher epoch, refuses it and demotes itself.
    b.rejoin(&a).await;
    a.wait_status("demoted", |s| s["role"] == "demoted").await;
    assert!(a.log().contains("a newer primary exists"), "{}", a.log());
    b.wait_status("refused", |s| s["last_error"].as_str().is_some_and(|e| e.contains("epoch"))).await;
    // A demoted server refuses writes.
    let err = client_err(&a.zeo).await;
    assert!(!err.contains("committed"), "{err}");
    // Auth: no token, wrong token.
    let (code, _) = harness::http(&a.admin, "POST", "/demote", "", None).await;
    assert_eq!(code, 401);
    let (code, _) = harness::http(&a.admin, "POST", "/demote", "", Some("wrong-token-wrong-token")).await;
    assert_eq!(code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_sync_blocks_while_the_standby_is_stopped() {
    // The one test on a plain-TCP link (--replication-insecure): the lab mode keeps working, and
    // the server says at every start what it exposes.
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1", "--replication-insecure"]);
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl, "--replication-insecure"]);
    assert!(a.log().contains("replication link is plain TCP"), "{}", a.log());
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"warm").await.unwrap();
    b.wait_status("in sync", |s| s["in_sync"] == true).await;
    b.signal("-STOP");
    let pending = {
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut o = zeo_client::ClientOptions::new([ca.server_addr().unwrap().to_string()]);
            o.call_timeout = Duration::from_secs(60);
            let c = Client::connect(o).await.unwrap();
            commit_new(&c, b"waits").await
        })
    };
    // A window to prove a negative: the commit does not complete while the standby is stopped.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pending.is_finished(), "a strict sync commit completed without the standby");
    let s = a.status().await;
    assert_eq!(s["sync_state"], "blocked", "{s}");
    b.signal("-CONT");
    let (oid, tid) = pending.await.unwrap().unwrap();
    b.wait_applied(&hex_tid(&tid)).await;
    assert_eq!(&client(&b.zeo, true).await.load(oid).await.unwrap().0[..], b"waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degrade_mode_resumes_after_the_timeout_and_marks_the_standby_out_of_sync() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1", "--sync-timeout", "500ms"]);
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"warm").await.unwrap();
    b.signal("-STOP");
    let (_, tid) = commit_new(&ca, b"after-timeout").await.unwrap();
    let s = a.status().await;
    assert_eq!(s["sync_state"], "degraded", "{s}");
    assert_eq!(s["standbys"][0]["out_of_sync"], true, "{s}");
    let state = std::fs::read_to_string(d.path().join("a/Data.fs.rsrepl")).unwrap();
    assert!(state.contains("\"b\""), "the mark is durable: {state}");
    // The standby learns it too (durably) once it runs again, then catches up and is cleared.
    b.signal("-CONT");
    b.wait_applied(&hex_tid(&tid)).await;
    commit_new(&ca, b"in-sync-again").await.unwrap();
    a.wait_status("sync resumed", |s| s["sync_state"] == "sync" && s["standbys"][0]["out_of_sync"] == false).await;
    b.wait_status("cleared", |s| s["out_of_sync"] == false).await;
    assert!(b.log().contains("marks this standby out of sync"), "{}", b.log());
    // With no commit after the one that cleared it, the standby is promotable again all the same.
    b.wait_status("in sync (promotable) again", |s| s["in_sync"] == true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_sync_standby_is_not_promoted_unless_forced() {
    let d = tmp();
    let mut a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1", "--sync-timeout", "300ms"]);
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"warm").await.unwrap();
    b.signal("-STOP");
    commit_new(&ca, b"without-b").await.unwrap();
    // The mark is on its way to B (in B's socket buffer); the primary dies before B can catch up.
    a.wait_status("told B", |s| s["standbys"][0]["told_out_of_sync"] == true).await;
    a.kill();
    b.signal("-CONT");
    b.wait_status("told it is out of sync", |s| s["out_of_sync"] == true).await;
    let (code, body) = b.post("/promote", "{\"epoch\": 1}").await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = b.post("/promote", "{\"epoch\": 1, \"force\": true}").await;
    assert_eq!(code, 200, "{body}");
}

/// The link's certificate files are parsed before anything binds: a file that is not PEM stops the
/// server with exit status 64 and its path; no link TLS at all names the settings to give.
#[test]
fn bad_link_tls_files_and_missing_link_tls_exit_64_before_binding() {
    let d = tmp();
    let garbage = d.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let mut args = harness::link_args("a", &[]);
    let cert = args.iter().position(|a| a == "--replication-tls-cert").unwrap() + 1;
    args[cert] = garbage.display().to_string();
    let run = |extra: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_zeo-server"))
            .args(["--listen", "127.0.0.1:0", "--replication-listen", "127.0.0.1:0", "--path"])
            .arg(d.path().join("Data.fs"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--replication-tls-cert") && stderr.contains("garbage.pem"), "{stderr}");
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--replication-tls-cert") && stderr.contains("--replication-insecure"), "{stderr}");
    assert!(!d.path().join("Data.fs").exists(), "nothing was opened");
}

/// A standby whose promotion fails (in the field a full disk; here its state file cannot be
/// replaced) stays a standby that follows: a strict primary that gets the lease back after the
/// failed promotion must not wait for it forever (issue 12, found by the disk-full scenario).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_promotion_fails_goes_on_following() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1"]);
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let ca = client(&a.zeo, false).await;
    commit_new(&ca, b"warm").await.unwrap();
    b.wait_status("in sync", |s| s["in_sync"] == true).await;
    // The state file is replaced through a temporary file beside it: a directory in its place
    // fails that write (EISDIR), as root too.
    let blocker = d.path().join("b/Data.fs.rsrepl.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let (code, body) = b.post("/promote", "{\"epoch\": 100}").await;
    assert_eq!(code, 500, "{body}");
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(b.status().await["role"], "standby");
    // Room for the standby to reconnect on a busy machine; without it following, this times out.
    let mut o = zeo_client::ClientOptions::new([ca.server_addr().unwrap().to_string()]);
    o.call_timeout = Duration::from_secs(60);
    let c = Client::connect(o).await.unwrap();
    let (_, tid) = commit_new(&c, b"after-the-failed-promotion").await.expect("the standby follows again");
    b.wait_applied(&hex_tid(&tid)).await;
}

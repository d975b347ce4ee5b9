//! Attacks on the replication link (issue 13), against real processes with mutual TLS on: each is
//! refused and logged, nothing is served, no state changes (role, epoch, data, also after a
//! restart), the server stays up, a real client keeps committing, and RSS stays bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeo_server::config::LinkTlsFiles;
use zeo_server::replication::wire::{self, Hello, Msg};
use zeo_server::tls::link::LinkTls;
use zeo_testkit::certs::LinkPki;

use crate::harness::{Node, PEERS, client, commit_new, pki};

/// Well under the chart's 1 GiB memory limit.
const RSS_BOUND: u64 = 512 << 20;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A Hello asking for a copy of everything, from an empty standby named `name`.
fn snapshot_hello(name: &str) -> Msg {
    Msg::Hello(Hello {
        version: wire::VERSION,
        name: name.into(),
        storage: "1".into(),
        last_tid: "0000000000000000".into(),
        digest: "0".repeat(64),
        want_snapshot: true,
    })
}

/// Reads until the peer closes (or the connection fails); what was received.
async fn drain<R: AsyncReadExt + Unpin>(rd: &mut R) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), rd.read(&mut buf))
            .await
            .expect("the server closes the connection");
        match n {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits until `cond` holds (async), or fails with `what`.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < Duration::from_secs(60), "never {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A link client with `cert` (a member certificate, maybe from another CA) that trusts the test CA
/// and accepts the primary "a".
fn dialer(cert: &zeo_testkit::certs::MemberCert) -> LinkTls {
    let files =
        LinkTlsFiles { cert: cert.cert.clone(), key: cert.key.clone(), ca: pki().ca(), peers: vec!["a".into()] };
    LinkTls::load(&files).unwrap()
}

/// The primary's listener refusals (before authentication): counted per reason, log rate-limited.
fn refused(reason: &str) -> String {
    format!("zeo_listener_refused_total{{listener=\"replication\",reason=\"{reason}\"}}")
}

/// The link's rule breaks: authenticated sessions closed (`frame`, `ack`), primaries a standby refused.
fn broke(reason: &str) -> String {
    format!("zeo_replication_link_refused_total{{reason=\"{reason}\"}}")
}

/// The role, epoch and last tid, from /status.
async fn fingerprint(n: &Node) -> (String, u64, String) {
    let s = n.status().await;
    (s["role"].as_str().unwrap().to_owned(), s["epoch"].as_u64().unwrap(), s["last_tid"].as_str().unwrap().to_owned())
}

/// The server still works: a real client commits, and it is small.
async fn still_serving(a: &Node) {
    let c = client(&a.zeo, false).await;
    commit_new(&c, b"after the attack").await.unwrap();
    let rss = a.rss_bytes();
    assert!(rss < RSS_BOUND, "RSS {rss} bytes");
}

/// A primary with data, and its state before the attack.
async fn primary(dir: &Path, args: &[&str]) -> Node {
    let a = Node::start(&dir.join("a"), "a", args);
    let c = client(&a.zeo, false).await;
    commit_new(&c, b"the secret").await.unwrap();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_snapshot_hello_gets_nothing() {
    let d = tmp();
    let a = primary(d.path(), &[]).await;
    let before = fingerprint(&a).await;
    let mut s = TcpStream::connect(&a.repl).await.unwrap();
    s.write_all(&wire::encode(&snapshot_hello("b"), 0)).await.unwrap();
    let got = drain(&mut s).await;
    // At most a TLS alert: never a frame, never a byte of the file.
    assert!(!got.windows(10).any(|w| w == b"the secret"), "data leaked");
    assert!(got.len() < 64, "{} bytes came back", got.len());
    wait_for("the refusal counted", || async { a.metric(&refused("tls")).await >= 1.0 }).await;
    assert!(a.log().contains("replication peer refused"), "{}", a.log());
    assert_eq!(fingerprint(&a).await, before);
    still_serving(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_auth_epoch_hello_changes_nothing_even_after_a_restart() {
    let d = tmp();
    let mut a = primary(d.path(), &[]).await;
    let (role, epoch, _) = fingerprint(&a).await;
    for _ in 0..3 {
        let mut s = TcpStream::connect(&a.repl).await.unwrap();
        s.write_all(&wire::encode(&snapshot_hello("b"), u64::MAX)).await.unwrap();
        drain(&mut s).await;
    }
    wait_for("the refusals counted", || async { a.metric(&refused("tls")).await >= 3.0 }).await;
    // A refusal writes only the listener's rate-limited line, never a per-connection one.
    assert!(!a.log().contains("replication session ended"), "{}", a.log());
    let s = a.status().await;
    assert_eq!((s["role"].as_str().unwrap(), s["epoch"].as_u64().unwrap()), (role.as_str(), epoch), "{s}");
    assert!(!a.log().contains("demoting"), "{}", a.log());
    a.restart_with(&[]);
    let s = a.status().await;
    assert_eq!((s["role"].as_str().unwrap(), s["epoch"].as_u64().unwrap()), ("primary", epoch), "after a restart: {s}");
    still_serving(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let d = tmp();
    let a = primary(d.path(), &[]).await;
    let before = fingerprint(&a).await;
    let other = LinkPki::new(&d.path().join("other-ca"), "attacker");
    // Its identity is even a listed one: the chain is what fails.
    let tls = dialer(&other.member("b"));
    let tcp = TcpStream::connect(&a.repl).await.unwrap();
    // TLS 1.3: the client finishes first; the server's verdict arrives as an alert on the next read.
    if let Ok((mut s, _)) = tls.connect(tcp).await {
        let _ = s.write_all(&wire::encode(&snapshot_hello("b"), 0)).await;
        assert_eq!(drain(&mut s).await, b"", "nothing is sent to an unauthenticated peer");
    }
    wait_for("the refusal counted", || async { a.metric(&refused("tls")).await >= 1.0 }).await;
    assert!(a.log().contains("replication peer refused"), "{}", a.log());
    let s = a.status().await;
    assert!(s["replication"]["standbys"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(fingerprint(&a).await, before);
    still_serving(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_with_an_unlisted_identity_is_refused() {
    let d = tmp();
    let a = primary(d.path(), &[]).await;
    let before = fingerprint(&a).await;
    let tls = dialer(&pki().member("mallory"));
    let tcp = TcpStream::connect(&a.repl).await.unwrap();
    let (mut s, primary_identity) = tls.connect(tcp).await.expect("the chain is good: the handshake completes");
    assert_eq!(primary_identity, "a");
    let _ = s.write_all(&wire::encode(&snapshot_hello("b"), 0)).await;
    assert_eq!(drain(&mut s).await, b"", "nothing is sent to an unlisted identity");
    wait_for("the refusal counted", || async { a.metric(&refused("identity")).await >= 1.0 }).await;
    assert!(a.log().contains("names no identity in --replication-peers"), "{}", a.log());
    assert!(a.log().contains("mallory"), "{}", a.log());
    let s = a.status().await;
    assert!(s["replication"]["standbys"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(fingerprint(&a).await, before);
    still_serving(&a).await;
}

/// An authenticated session as standby "b" on an empty primary, welcomed; returns its stream.
async fn fake_standby(a: &Node, hello_name: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tls = dialer(&pki().member("b"));
    let (mut s, _) = tls.connect(TcpStream::connect(&a.repl).await.unwrap()).await.unwrap();
    s.write_all(&wire::encode(&snapshot_hello(hello_name), 0)).await.unwrap();
    loop {
        match wire::read(&mut s).await.unwrap().1 {
            Msg::Welcome(_) => return s,
            Msg::SnapshotBegin { .. } | Msg::SnapshotData(_) | Msg::SnapshotEnd { .. } | Msg::Blob { .. } => {}
            other => panic!("unexpected {other:?} before the welcome"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_ack_closes_the_session_and_the_strict_gate_stays_shut() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1"]);
    // The Hello's name is not the certificate's: the primary knows it by its certificate.
    let mut s = fake_standby(&a, "someone-else").await;
    a.wait_status("b connected", |s| s["replication"]["standbys"][0]["name"] == "b").await;
    assert!(a.log().contains("known by its certificate identity"), "{}", a.log());
    s.write_all(&wire::encode(&Msg::Ack { tid: [0xff; 8] }, 0)).await.unwrap();
    drain(&mut s).await;
    wait_for("the bad ack counted", || async { a.metric(&broke("ack")).await >= 1.0 }).await;
    assert!(a.log().contains("never sent"), "{}", a.log());
    a.wait_status("b disconnected", |s| s["replication"]["standbys"][0]["connected"] == false).await;
    // A commit now waits for a standby: the fake ack opened nothing.
    let zeo = a.zeo.clone();
    let pending = tokio::spawn(async move {
        let c = client(&zeo, false).await;
        let mut o = zeo_client::ClientOptions::new([zeo.clone()]);
        o.call_timeout = Duration::from_secs(120);
        drop(c);
        let c = zeo_client::Client::connect(o).await.unwrap();
        commit_new(&c, b"waits for a real standby").await
    });
    a.wait_status("the commit blocked", |s| s["sync_state"] == "blocked").await;
    assert!(!pending.is_finished(), "a strict commit completed with no standby holding it");
    // The real standby releases it.
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let (_, tid) = pending.await.unwrap().unwrap();
    b.wait_applied(&hex::encode(tid)).await;
    assert!(a.rss_bytes() < RSS_BOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_from_a_session_that_ended_does_not_count() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &["--sync-standbys", "1"]);
    let mut s = fake_standby(&a, "b").await;
    // A commit is shipped to the session, which acknowledges exactly it (a legitimate ack) and
    // goes away.
    let zeo = a.zeo.clone();
    let first = tokio::spawn(async move { commit_new(&client(&zeo, false).await, b"first").await });
    let tid = loop {
        match wire::read(&mut s).await.unwrap().1 {
            Msg::Txn(t) => break t.tid,
            Msg::Status(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    s.write_all(&wire::encode(&Msg::Ack { tid }, 0)).await.unwrap();
    first.await.unwrap().unwrap();
    drop(s);
    a.wait_status("b disconnected", |s| s["replication"]["standbys"][0]["connected"] == false).await;
    // The next commit waits: the ended session's acknowledgement counts for nothing more.
    let zeo = a.zeo.clone();
    let pending = tokio::spawn(async move { commit_new(&client(&zeo, false).await, b"second").await });
    a.wait_status("the commit blocked", |s| s["sync_state"] == "blocked").await;
    assert!(!pending.is_finished(), "a strict commit completed with no connected standby");
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let (_, tid) = pending.await.unwrap().unwrap();
    b.wait_applied(&hex::encode(tid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_closed_before_and_after_authentication() {
    let d = tmp();
    let a = primary(d.path(), &[]).await;
    let before = fingerprint(&a).await;
    // Before authentication: 64 MiB of junk on plain TCP (the TLS layer refuses the first record).
    let mut s = TcpStream::connect(&a.repl).await.unwrap();
    let mut junk = (1u32 << 30).to_be_bytes().to_vec();
    junk.resize(64 << 20, 0x41);
    let _ = s.write_all(&junk).await;
    drain(&mut s).await;
    // Authenticated, a frame announcing 1 GiB: refused on its length, nothing buffered.
    let tls = dialer(&pki().member("b"));
    let (mut s, _) = tls.connect(TcpStream::connect(&a.repl).await.unwrap()).await.unwrap();
    s.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let _ = s.write_all(&vec![0u8; 1 << 20]).await;
    assert_eq!(drain(&mut s).await, b"");
    wait_for("the oversized frame counted", || async { a.metric(&broke("frame")).await >= 1.0 }).await;
    assert_eq!(fingerprint(&a).await, before);
    still_serving(&a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_primary_with_its_own_ca_is_refused_by_the_standby() {
    let d = tmp();
    let a = Node::start(&d.path().join("a"), "a", &[]);
    let (oid, _) = commit_new(&client(&a.zeo, false).await, b"the real data").await.unwrap();
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    let last = a.status().await["last_tid"].as_str().unwrap().to_owned();
    b.wait_applied(&last).await;
    let before = fingerprint(&b).await;
    // The rogue has the primary's name, a CA of its own, other data and a far higher epoch.
    let rogue_pki = LinkPki::new(&d.path().join("rogue-ca"), "rogue");
    let rogue_args = rogue_pki.server_args("a", PEERS);
    let rogue_refs: Vec<&str> = rogue_args.iter().map(String::as_str).collect();
    let rogue = Node::start(&d.path().join("rogue"), "a", &rogue_refs);
    let c = client(&rogue.zeo, false).await;
    for _ in 0..3 {
        commit_new(&c, b"forged").await.unwrap();
    }
    rogue.promote(1000).await;
    // The standby is pointed at it (a hijacked name or address).
    b.rejoin(&rogue).await;
    b.wait_status("the rogue refused", |s| s["last_error"].as_str().is_some_and(|e| e.contains("not authenticated")))
        .await;
    assert!(b.log().contains("the primary was not authenticated"), "{}", b.log());
    assert!(b.metric(&broke("tls")).await >= 1.0);
    let after = fingerprint(&b).await;
    assert_eq!((after.1, &after.2), (before.1, &before.2), "the standby keeps its epoch and data");
    let side_files = std::fs::read_dir(&b.dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("diverged"));
    assert_eq!(side_files.count(), 0, "nothing was rewound");
    // Its readers still see the real data.
    let r = client(&b.zeo, true).await;
    assert_eq!(&r.load(oid).await.unwrap().0[..], b"the real data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_replication_allow_list_is_closed_before_tls() {
    let d = tmp();
    // The members' network is elsewhere (a documentation range): loopback is not in it.
    let a = primary(d.path(), &["--replication-allow", "198.51.100.0/24"]).await;
    let before = fingerprint(&a).await;
    // Even a member's valid certificate gets nothing from outside the allowed networks.
    let tls = dialer(&pki().member("b"));
    let tcp = TcpStream::connect(&a.repl).await.unwrap();
    assert!(tls.connect(tcp).await.is_err(), "a TLS session from outside the allow list");
    wait_for("the refusal counted", || async { a.metric(&refused("address")).await >= 1.0 }).await;
    assert_eq!(a.metric(&refused("tls")).await, 0.0, "the refusal came before the TLS handshake");
    assert_eq!(fingerprint(&a).await, before);
    still_serving(&a).await;
    // And a standby on loopback never gets a copy.
    let b = Node::start(&d.path().join("b"), "b", &["--standby-of", &a.repl]);
    wait_for("b's attempts refused", || async { a.metric(&refused("address")).await >= 2.0 }).await;
    assert_eq!(b.status().await["connected"], false);
}

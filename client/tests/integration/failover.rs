//! Server restarts, a server behind the cache, a stopped server, and a connection lost during
//! `tpc_finish`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zeo_client::{Client, ClientError, Z64};

use crate::common::{Cut, Proxy, Server, bounded, client_options, data_dir, eventually};

/// Commits one new object and returns `(oid, tid)`.
async fn create(client: &Client, data: &[u8]) -> (zeo_client::Oid, zeo_client::Tid) {
    let oid = client.new_oid().await.expect("oid");
    let t = client.begin();
    t.store(oid, Z64, data.to_vec()).expect("store");
    (oid, t.commit().await.expect("commit").expect("tid"))
}

/// Overwrites `oid` with `data` (read-modify-write through `transact`) and returns the tid.
async fn update(client: &Client, oid: zeo_client::Oid, data: &[u8]) -> zeo_client::Tid {
    client
        .transact(|txn| async move {
            let (_, serial) = txn.load(oid).await?;
            txn.store(oid, serial, data.to_vec())
        })
        .await
        .expect("update");
    client.last_tid().expect("tid")
}

/// The server is killed and restarted on the same port; meanwhile another server process on
/// the same file commits a change. The client reconnects by itself, its cache is verified
/// (the changed object is not served stale), a transaction begun before the outage keeps its
/// snapshot, and a load issued while the server was down completes once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconnects_and_verifies_the_cache() {
    bounded(async {
        let (_dir, data) = data_dir();
        let mut server = Server::start(&data, 0, &[]).await;
        let port = server.port;
        let client = Client::connect(client_options(&server.addr)).await.expect("connect");
        let (x, t1) = create(&client, b"x1").await;
        let (y, _) = create(&client, b"y1").await;
        assert_eq!(client.load(x).await.expect("load").0, Bytes::from_static(b"x1"));
        let before = client.begin();

        server.kill();
        eventually("the client notices the dead server", Duration::from_secs(5), || !client.is_connected()).await;

        // Another server process changes x while our client cannot see it.
        {
            let other = Server::start(&data, 0, &[]).await;
            let c = Client::connect(client_options(&other.addr)).await.expect("connect other");
            update(&c, x, b"x2").await;
        }

        // A load issued now waits for the server to come back.
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { client.load(y).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _server = Server::start(&data, port, &[]).await;
        client.wait_connected(Duration::from_secs(10)).await.expect("reconnected");
        assert_eq!(waiting.await.expect("join").expect("load").0, Bytes::from_static(b"y1"));
        assert!(client.metrics().reconnects >= 1, "{:?}", client.metrics());

        assert_eq!(client.load(x).await.expect("load").0, Bytes::from_static(b"x2"), "cache verified, not stale");
        assert_eq!(before.load(x).await.expect("old snapshot"), (Bytes::from_static(b"x1"), t1));
        update(&client, x, b"x3").await;
        assert_eq!(client.load(x).await.expect("load").0, Bytes::from_static(b"x3"));
    })
    .await;
}

/// A server restarted on an older copy of its data is behind the client's cache: refused
/// ("server behind client"), until the real one is back. A client told to drop its cache in
/// that case accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_behind_client_is_refused() {
    bounded(async {
        let (_dir, data) = data_dir();
        let mut server = Server::start(&data, 0, &[]).await;
        let port = server.port;
        let client = Client::connect(client_options(&server.addr)).await.expect("connect");
        let mut o = client_options(&server.addr);
        o.drop_cache_if_server_behind = true;
        let lenient = Client::connect(o).await.expect("connect");
        let (x, t1) = create(&client, b"x1").await;

        let (_old_dir, old_data) = data_dir();
        std::fs::copy(&data, &old_data).expect("copy Data.fs");
        let t2 = update(&client, x, b"x2").await;
        lenient.sync().await.expect("sync");
        assert_eq!(lenient.last_tid(), Some(t2));

        server.kill();
        let mut old = Server::start(&old_data, port, &[]).await;
        eventually("server behind client", Duration::from_secs(10), || {
            matches!(client.last_error(), Some(ClientError::ServerBehind { .. }))
        })
        .await;
        assert_eq!(client.last_error(), Some(ClientError::ServerBehind { cache_tid: t2, server_tid: t1 }));
        assert!(!client.is_connected());
        // Calls wait for a connection within their deadline and then fail, naming the cause.
        let err = client.wait_connected(Duration::from_millis(500)).await;
        assert!(
            matches!(&err, Err(ClientError::Disconnected { reason }) if reason.contains("server behind client")),
            "{err:?}"
        );

        lenient.wait_connected(Duration::from_secs(10)).await.expect("lenient client accepts it");
        assert_eq!(lenient.last_tid(), Some(t1));
        assert_eq!(lenient.load(x).await.expect("load").0, Bytes::from_static(b"x1"));

        old.kill();
        let _server = Server::start(&data, port, &[]).await;
        client.wait_connected(Duration::from_secs(10)).await.expect("reconnected to the real server");
        assert_eq!(client.last_tid(), Some(t2));
        assert_eq!(client.load(x).await.expect("load"), (Bytes::from_static(b"x2"), t2));
    })
    .await;
}

/// A stopped (SIGSTOP) server keeps its sockets open, so only the heartbeat's read deadline
/// can tell. The client notices within heartbeat_interval + heartbeat_timeout, calls fail
/// within their deadline instead of hanging, and after SIGCONT it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_notices_a_stopped_server() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let mut o = client_options(&server.addr);
        o.heartbeat_interval = Duration::from_millis(200);
        o.heartbeat_timeout = Duration::from_millis(600);
        o.call_timeout = Duration::from_secs(2);
        o.connect_timeout = Duration::from_millis(500);
        let client = Client::connect(o).await.expect("connect");
        let (x, _) = create(&client, b"x").await;
        let (y, _) = create(&client, b"y").await;
        let fresh = Client::connect(client_options(&server.addr)).await.expect("connect");

        server.signal("STOP");
        let stopped = Instant::now();
        let load = {
            let c = fresh.clone();
            tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), c.load(y)).await })
        };
        eventually("the client notices the stopped server", Duration::from_secs(3), || !client.is_connected()).await;
        let noticed = stopped.elapsed();
        assert!(noticed < Duration::from_secs(2), "noticed after {noticed:?}");
        // A call now fails within its deadline.
        let t = Instant::now();
        let r = client.begin().load(zeo_client::p64(0xbeef)).await;
        assert!(matches!(r, Err(ClientError::Disconnected { .. } | ClientError::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(4), "failed after {:?}", t.elapsed());

        server.signal("CONT");
        client.wait_connected(Duration::from_secs(10)).await.expect("reconnected");
        assert_eq!(client.load(x).await.expect("load").0, Bytes::from_static(b"x"));
        // The other client's load was in flight across the stop; it completes either way.
        let r = load.await.expect("join").expect("bounded");
        assert!(matches!(&r, Ok((d, _)) if d == &Bytes::from_static(b"y")) || r.is_err(), "{r:?}");
        assert!(client.metrics().reconnects >= 1);
    })
    .await;
}

/// The connection dies right after `tpc_finish` reaches the server (the reply never comes
/// back): the client looks the outcome up and reports the commit with its real tid. When the
/// `tpc_finish` never reaches the server, it reports that nothing was committed. Either way the
/// answer matches what a fresh client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_tpc_finish_is_resolved_not_guessed() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let proxy = Proxy::start(server.addr.clone()).await;
        let client = Client::connect(client_options(&proxy.addr)).await.expect("connect");
        let (x, t1) = create(&client, b"x1").await;
        let check = Client::connect(client_options(&server.addr)).await.expect("connect");

        // tpc_finish delivered, reply lost.
        proxy.arm(Cut::AfterFinish);
        let t = client.begin();
        t.store(x, t1, b"x2".to_vec()).expect("store");
        let tid = t.commit().await.expect("resolved as committed").expect("tid");
        assert!(!proxy.armed(), "the cut happened");
        assert_eq!(client.metrics().commit_resolutions, 1);
        check.sync().await.expect("sync");
        assert_eq!(check.load(x).await.expect("load"), (Bytes::from_static(b"x2"), tid));
        assert_eq!(client.load(x).await.expect("load"), (Bytes::from_static(b"x2"), tid), "cache consistent");

        // tpc_finish never delivered: nothing committed, reported as a retryable disconnect.
        proxy.arm(Cut::InsteadOfFinish);
        let t = client.begin();
        t.store(x, tid, b"x3".to_vec()).expect("store");
        let r = t.commit().await;
        assert!(matches!(r, Err(ClientError::Disconnected { .. })), "{r:?}");
        assert!(r.as_ref().is_err_and(ClientError::is_retryable));
        assert_eq!(client.metrics().commit_resolutions, 2);
        check.sync().await.expect("sync");
        assert_eq!(check.load(x).await.expect("load").0, Bytes::from_static(b"x2"));
        assert_eq!(client.load(x).await.expect("load").0, Bytes::from_static(b"x2"));

        // transact retries such a disconnect to success.
        proxy.arm(Cut::InsteadOfFinish);
        let tid4 = client
            .transact(|txn| async move {
                let (_, s) = txn.load(x).await?;
                txn.store(x, s, b"x4".to_vec())
            })
            .await
            .map(|()| client.last_tid());
        assert!(tid4.is_ok(), "{tid4:?}");
        check.sync().await.expect("sync");
        assert_eq!(check.load(x).await.expect("load").0, Bytes::from_static(b"x4"));
        assert!(client.metrics().retries >= 1);
        assert_eq!(client.metrics().commits, 3);
    })
    .await;
}

/// A persistent cache file: a restarted client process starts warm (unchanged objects are
/// served from the file without a round trip), objects changed while it was away are not
/// served stale, and a server that is behind the saved cache is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_cache_file_survives_restarts_and_is_verified() {
    bounded(async {
        let (dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let file = dir.path().join("client.zec");
        let with_file = || {
            let mut o = client_options(&server.addr);
            o.cache_file = Some(file.clone());
            o
        };
        let c = Client::connect(with_file()).await.expect("connect");
        let (kept, _) = create(&c, b"unchanged").await;
        let (changed, _) = create(&c, b"before").await;
        assert_eq!(&c.load(kept).await.unwrap().0[..], b"unchanged");
        c.close();
        assert!(file.exists(), "close saves the cache file");

        // Another client changes one object while the first is gone.
        let other = Client::connect(client_options(&server.addr)).await.expect("connect");
        update(&other, changed, b"after").await;

        let c = Client::connect(with_file()).await.expect("reconnect");
        let before = c.metrics();
        assert_eq!(&c.load(kept).await.unwrap().0[..], b"unchanged");
        assert_eq!(c.metrics().cache_hits, before.cache_hits + 1, "served from the file");
        assert_eq!(&c.load(changed).await.unwrap().0[..], b"after", "never stale");
        let last = update(&c, changed, b"newest").await;
        c.close();
        drop(server);

        // The same address, an older copy of the data: the saved cache is ahead of it.
        let (_old_dir, old_data) = data_dir();
        let old = Server::start(&old_data, 0, &[]).await;
        let mut o = client_options(&old.addr);
        o.cache_file = Some(file.clone());
        o.wait_timeout = Duration::from_secs(2);
        match Client::connect(o).await {
            Err(ClientError::ServerBehind { cache_tid, .. }) => assert_eq!(cache_tid, last),
            other => panic!("expected ServerBehind, got {:?}", other.map(|_| ())),
        }
    })
    .await;
}

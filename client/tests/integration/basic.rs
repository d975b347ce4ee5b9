//! Connect, commit, load, invalidations between clients, conflicts, `transact`, read-only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use zeo_client::{Client, ClientError, Z64};
use zeo_proto::message::Encoding;

use crate::common::{Server, bounded, client_options, data_dir, eventually, free_port};

/// Register (both encodings), allocate an oid, commit, load back from the cache and from a
/// second client; a missing object is a POSKeyError.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_commit_and_load() {
    bounded(async {
        for (flags, encoding) in [(&[][..], Encoding::Pickle), (&["--msgpack"][..], Encoding::Msgpack)] {
            let (_dir, data) = data_dir();
            let server = Server::start(&data, 0, flags).await;
            let client = Client::connect(client_options(&server.addr)).await.expect("connect");
            assert!(client.is_connected());
            assert!(!client.is_read_only());
            assert_eq!(client.encoding(), Some(encoding));
            assert_eq!(client.last_tid(), Some(Z64), "empty storage");

            let oid = client.new_oid().await.expect("new_oid");
            let oid2 = client.new_oid().await.expect("new_oid");
            assert_ne!(oid, oid2);
            let txn = client.begin();
            txn.set_user("/ tester");
            txn.note("first commit");
            txn.store(oid, Z64, b"hello".to_vec()).expect("store");
            let tid = txn.commit().await.expect("commit").expect("a tid");
            assert!(matches!(txn.commit().await, Err(ClientError::TransactionFinished)));
            assert_eq!(client.last_tid(), Some(tid));

            // Served from the cache: the client knows its own commit.
            assert_eq!(client.load(oid).await.expect("load"), (Bytes::from_static(b"hello"), tid));
            let m = client.metrics();
            assert_eq!((m.commits, m.loads, m.cache_hits, m.cache_misses), (1, 1, 1, 0), "{m:?}");

            // Another client loads it from the server, then from its cache.
            let other = Client::connect(client_options(&server.addr)).await.expect("connect");
            assert_eq!(other.last_tid(), Some(tid));
            assert_eq!(other.load(oid).await.expect("load"), (Bytes::from_static(b"hello"), tid));
            assert_eq!(other.load(oid).await.expect("load"), (Bytes::from_static(b"hello"), tid));
            let m = other.metrics();
            assert_eq!((m.cache_hits, m.cache_misses), (1, 1), "{m:?}");

            assert_eq!(other.load(oid2).await, Err(ClientError::PosKey { oid: oid2 }));
            // Nothing to commit: no round trip, no tid.
            assert_eq!(client.begin().commit().await, Ok(None));
            client.close();
            assert_eq!(client.load(oid).await, Err(ClientError::Closed));
            assert_eq!(client.sync().await, Err(ClientError::Closed));
        }
    })
    .await;
}

/// Two clients see each other's commits through invalidations, and a transaction keeps
/// reading its snapshot: data it had read (now an old revision in the cache) and data it had
/// not read yet (loaded with loadBefore from the server) both come from before the other
/// client's commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_and_snapshots() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let a = Client::connect(client_options(&server.addr)).await.expect("connect a");
        let b = Client::connect(client_options(&server.addr)).await.expect("connect b");

        let (x, y) = (a.new_oid().await.expect("oid"), a.new_oid().await.expect("oid"));
        let t = a.begin();
        t.store(x, Z64, b"x1".to_vec()).expect("store");
        t.store(y, Z64, b"y1".to_vec()).expect("store");
        let t1 = t.commit().await.expect("commit").expect("tid");

        assert_eq!(b.sync().await, Ok(t1), "b got the invalidation");
        let old = b.begin();
        assert_eq!(old.snapshot(), Some(t1));
        assert_eq!(old.load(x).await.expect("load x"), (Bytes::from_static(b"x1"), t1));

        let t = a.begin();
        let (_, sx) = t.load(x).await.expect("load");
        let (_, sy) = t.load(y).await.expect("load");
        t.store(x, sx, b"x2".to_vec()).expect("store");
        t.store(y, sy, b"y2".to_vec()).expect("store");
        let t2 = t.commit().await.expect("commit").expect("tid");
        assert!(t2 > t1);

        assert_eq!(b.sync().await, Ok(t2));
        assert!(b.metrics().invalidations >= 2, "{:?}", b.metrics());
        // The old transaction still sees its snapshot: x from the cache's old revision...
        let misses = b.metrics().cache_misses;
        assert_eq!(old.load(x).await.expect("load x"), (Bytes::from_static(b"x1"), t1));
        assert_eq!(b.metrics().cache_misses, misses, "served from the cache");
        // ...and y, never loaded by b, from the server's history.
        assert_eq!(old.load(y).await.expect("load y"), (Bytes::from_static(b"y1"), t1));
        assert_eq!(b.metrics().cache_misses, misses + 1);
        assert_eq!(old.load(y).await.expect("load y"), (Bytes::from_static(b"y1"), t1), "now cached");
        // A new transaction sees the new data.
        let new = b.begin();
        assert_eq!(new.snapshot(), Some(t2));
        assert_eq!(new.load(x).await.expect("load"), (Bytes::from_static(b"x2"), t2));
        assert_eq!(new.load(y).await.expect("load"), (Bytes::from_static(b"y2"), t2));
        // Objects created after a snapshot are a read conflict for it.
        let z = a.new_oid().await.expect("oid");
        let t = a.begin();
        t.store(z, Z64, b"z".to_vec()).expect("store");
        t.commit().await.expect("commit");
        b.sync().await.expect("sync");
        assert!(matches!(new.load(z).await, Err(ClientError::ReadConflict { oid: Some(o), .. }) if o == z));
        assert_eq!(b.metrics().read_conflicts, 1);
    })
    .await;
}

/// A stale store is a typed Conflict; `transact` retries it (and read conflicts) to success,
/// and gives up after its attempts or on errors that are not retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_transact() {
    bounded(async {
        let (_dir, data) = data_dir();
        let server = Server::start(&data, 0, &[]).await;
        let a = Client::connect(client_options(&server.addr)).await.expect("connect a");
        let b = Client::connect(client_options(&server.addr)).await.expect("connect b");
        let x = a.new_oid().await.expect("oid");
        let t = a.begin();
        t.store(x, Z64, b"0".to_vec()).expect("store");
        let t0 = t.commit().await.expect("commit").expect("tid");
        b.sync().await.expect("sync");

        // Write conflict.
        let ta = a.begin();
        let tb = b.begin();
        let (_, s) = ta.load(x).await.expect("load");
        let (_, s2) = tb.load(x).await.expect("load");
        assert_eq!((s, s2), (t0, t0));
        ta.store(x, s, b"a".to_vec()).expect("store");
        let t1 = ta.commit().await.expect("commit").expect("tid");
        tb.store(x, s2, b"b".to_vec()).expect("store");
        assert_eq!(tb.commit().await, Err(ClientError::Conflict { oid: Some(x), serials: Some((t1, t0)) }));
        assert_eq!(b.metrics().conflicts, 1);
        // The server released its commit lock: both clients can commit again.
        let n = Arc::new(AtomicU32::new(0));

        // transact: the first attempt is made to conflict by a commit from `a` in between.
        let value = b
            .transact(|txn| {
                let (a, n) = (a.clone(), n.clone());
                async move {
                    let (data, serial) = txn.load(x).await?;
                    if n.fetch_add(1, Ordering::SeqCst) == 0 {
                        let t = a.begin();
                        let (_, s) = t.load(x).await?;
                        t.store(x, s, b"a2".to_vec())?;
                        t.commit().await?;
                    }
                    let new = [&data[..], b"+b"].concat();
                    txn.store(x, serial, new.clone())?;
                    Ok(new)
                }
            })
            .await
            .expect("transact");
        assert_eq!(value, b"a2+b");
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert_eq!(b.metrics().retries, 1);
        assert_eq!(a.sync().await.map(|_| ()), Ok(()));
        assert_eq!(a.load(x).await.expect("load").0, Bytes::from_static(b"a2+b"));

        // Read conflict through check_current, retried too; it always conflicts here, so
        // transact gives up after 3 attempts with the typed error.
        let y = a.new_oid().await.expect("oid");
        let attempts = Arc::new(AtomicU32::new(0));
        let r = b
            .transact(|txn| {
                let (a, attempts) = (a.clone(), attempts.clone());
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    let (_, serial) = txn.load(x).await?;
                    txn.check_current(x, serial)?;
                    txn.store(y, Z64, b"y".to_vec())?;
                    let t = a.begin();
                    let (d, s) = t.load(x).await?;
                    t.store(x, s, d.to_vec())?;
                    t.commit().await?;
                    Ok(())
                }
            })
            .await;
        assert!(matches!(r, Err(ClientError::ReadConflict { oid: Some(o), .. }) if o == x), "{r:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        assert_eq!(b.metrics().retries, 3);
        assert_eq!(a.load(y).await, Err(ClientError::PosKey { oid: y }), "nothing of it was committed");

        // Not retryable: returned at once.
        let attempts = Arc::new(AtomicU32::new(0));
        let missing = zeo_client::p64(0xdead);
        let r: Result<(), _> = b
            .transact(|txn| {
                let attempts = attempts.clone();
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    txn.load(missing).await.map(|_| ())
                }
            })
            .await;
        assert_eq!(r, Err(ClientError::PosKey { oid: missing }));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    })
    .await;
}

/// Read-only: a read-only client refuses writes locally; a read-only server refuses writable
/// clients; a fallback client takes it read-only and moves to a writable server once one
/// appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refusal_and_fallback() {
    bounded(async {
        let (dir, data) = data_dir();
        let mut writable = Server::start(&data, 0, &[]).await;
        let w = Client::connect(client_options(&writable.addr)).await.expect("connect");
        let x = w.new_oid().await.expect("oid");
        let t = w.begin();
        t.store(x, Z64, b"v1".to_vec()).expect("store");
        let t1 = t.commit().await.expect("commit").expect("tid");

        // A read-only client on a writable server.
        let mut o = client_options(&writable.addr);
        o.read_only = true;
        let ro = Client::connect(o).await.expect("connect read-only");
        assert!(ro.is_read_only());
        assert_eq!(ro.load(x).await.expect("load").0, Bytes::from_static(b"v1"));
        assert_eq!(ro.new_oid().await, Err(ClientError::ReadOnly));
        let t = ro.begin();
        t.store(x, t1, b"nope".to_vec()).expect("buffered");
        assert_eq!(t.commit().await, Err(ClientError::ReadOnly));
        drop(w);
        writable.kill();

        // A read-only server, on a copy of the same data (same history).
        let ro_dir = tempfile::tempdir().expect("tempdir");
        let ro_data = ro_dir.path().join("Data.fs");
        std::fs::copy(&data, &ro_data).expect("copy Data.fs");
        let ro_server = Server::start(&ro_data, 0, &["--read-only"]).await;
        let mut o = client_options(&ro_server.addr);
        o.wait_timeout = Duration::from_secs(1);
        assert_eq!(Client::connect(o).await.err(), Some(ClientError::ReadOnly), "writable registration refused");

        // Fallback: read-only now, writable later. The writable server will listen on `port`.
        let port = free_port().await;
        let mut o = client_options(&ro_server.addr);
        o.addrs.push(format!("127.0.0.1:{port}"));
        o.read_only_fallback = true;
        let fb = Client::connect(o).await.expect("connect with fallback");
        assert!(fb.is_read_only());
        assert_eq!(fb.server_addr().map(|a| a.to_string()), Some(ro_server.addr.clone()));
        assert_eq!(fb.load(x).await.expect("load"), (Bytes::from_static(b"v1"), t1));
        assert_eq!(fb.new_oid().await, Err(ClientError::ReadOnly));
        let t = fb.begin();
        t.store(x, t1, b"v2".to_vec()).expect("buffered");
        assert_eq!(t.commit().await, Err(ClientError::ReadOnly));

        let _rw = Server::start(&data, port, &[]).await;
        eventually("upgrade to the writable server", Duration::from_secs(10), || !fb.is_read_only()).await;
        assert_eq!(fb.server_addr().map(|a| a.port()), Some(port));
        let t = fb.begin();
        let (_, s) = t.load(x).await.expect("load");
        t.store(x, s, b"v2".to_vec()).expect("store");
        let t2 = t.commit().await.expect("commit after upgrade").expect("tid");
        assert_eq!(fb.load(x).await.expect("load"), (Bytes::from_static(b"v2"), t2));
        assert!(fb.metrics().reconnects >= 1);
        drop(dir);
    })
    .await;
}

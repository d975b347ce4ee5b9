//! The same client against the reference server: Python's `runzeo` (ZEO 6), pickle and
//! msgpack. Python is `$ZEORS_PYTHON` (set by `scripts/test`), else `.venv/bin/python` at the
//! repository root, with `runzeo` beside it; like the server's interop tests, these fail rather
//! than skip when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeo_client::{Client, ClientError, Z64};
use zeo_proto::message::Encoding;

use crate::common::{Cut, Proxy, bounded, client_options, eventually, free_port, python};

pub fn runzeo() -> PathBuf {
    let runzeo = python().with_file_name("runzeo");
    assert!(runzeo.exists(), "no runzeo at {} (run scripts/setup-venv or set ZEORS_PYTHON)", runzeo.display());
    runzeo
}

/// A `runzeo` process serving `data` on `127.0.0.1:port`; killed on drop.
struct PyServer(Child);

impl PyServer {
    async fn start(data: &Path, port: u16, msgpack: bool) -> PyServer {
        let mut cmd = Command::new(runzeo());
        cmd.args(["-a", &format!("127.0.0.1:{port}"), "-f"]).arg(data).stdout(Stdio::null()).stderr(Stdio::null());
        if msgpack {
            cmd.env("ZEO_MSGPACK", "1");
        }
        let server = PyServer(cmd.spawn().expect("spawn runzeo"));
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "runzeo did not start listening");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Commit, load, invalidation, a write conflict (an error reply from the Python server, which
/// resolves conflicts itself), a lost `tpc_finish` both ways, and a restart with cache
/// verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_python_server() {
    bounded(async {
        for (msgpack, encoding) in [(false, Encoding::Pickle), (true, Encoding::Msgpack)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let data = dir.path().join("Data.fs");
            let port = free_port().await;
            let addr = format!("127.0.0.1:{port}");
            let server = PyServer::start(&data, port, msgpack).await;
            let proxy = Proxy::start(addr.clone()).await;
            let a = Client::connect(client_options(&proxy.addr)).await.expect("connect a");
            let b = Client::connect(client_options(&addr)).await.expect("connect b");
            assert_eq!(a.encoding(), Some(encoding));

            let x = a.new_oid().await.expect("oid");
            let t = a.begin();
            t.store(x, Z64, b"x1".to_vec()).expect("store");
            let t1 = t.commit().await.expect("commit").expect("tid");
            b.sync().await.expect("sync");
            assert_eq!(b.load(x).await.expect("load"), (Bytes::from_static(b"x1"), t1));

            let (ta, tb) = (a.begin(), b.begin());
            let (_, s) = ta.load(x).await.expect("load");
            let (_, s2) = tb.load(x).await.expect("load");
            ta.store(x, s, b"a".to_vec()).expect("store");
            let t2 = ta.commit().await.expect("commit").expect("tid");
            tb.store(x, s2, b"b".to_vec()).expect("store");
            assert_eq!(tb.commit().await, Err(ClientError::Conflict { oid: Some(x), serials: Some((t2, t1)) }));
            b.sync().await.expect("sync");
            assert_eq!(b.load(x).await.expect("load"), (Bytes::from_static(b"a"), t2));

            proxy.arm(Cut::AfterFinish);
            let t = a.begin();
            t.store(x, t2, b"x3".to_vec()).expect("store");
            let t3 = t.commit().await.expect("resolved as committed").expect("tid");
            assert!(!proxy.armed());
            b.sync().await.expect("sync");
            assert_eq!(b.load(x).await.expect("load"), (Bytes::from_static(b"x3"), t3));

            proxy.arm(Cut::InsteadOfFinish);
            let t = a.begin();
            t.store(x, t3, b"x4".to_vec()).expect("store");
            let r = t.commit().await;
            assert!(matches!(r, Err(ClientError::Disconnected { .. })), "{r:?}");
            b.sync().await.expect("sync");
            assert_eq!(b.load(x).await.expect("load").0, Bytes::from_static(b"x3"));
            assert_eq!(a.metrics().commit_resolutions, 2);

            // Restart; b changes x while a is away; a must not serve its cached x3.
            assert_eq!(a.load(x).await.expect("load").0, Bytes::from_static(b"x3"));
            drop(server);
            eventually("a notices", Duration::from_secs(10), || !a.is_connected()).await;
            let _server = PyServer::start(&data, port, msgpack).await;
            b.wait_connected(Duration::from_secs(20)).await.expect("b reconnects");
            b.transact(|txn| async move {
                let (_, s) = txn.load(x).await?;
                txn.store(x, s, b"x5".to_vec())
            })
            .await
            .expect("b commits");
            a.wait_connected(Duration::from_secs(20)).await.expect("a reconnects");
            a.sync().await.expect("sync");
            assert_eq!(a.load(x).await.expect("load").0, Bytes::from_static(b"x5"));
        }
    })
    .await;
}

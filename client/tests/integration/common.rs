//! Test harness: the real `zeo-server` binary on 127.0.0.1 (found by `zeo_testkit::bin`),
//! client options with short deadlines (`zeo_testkit::client_options`), and a frame-aware TCP
//! proxy that can cut a connection at `tpc_finish`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use zeo_proto::message::{self, Encoding, Message};
pub use zeo_testkit::client_options;

/// Every test body runs under this bound, so a hang fails instead of blocking CI.
pub const TEST_BOUND: Duration = Duration::from_secs(90);

/// Runs a test body with [`TEST_BOUND`].
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_BOUND, body).await.expect("test exceeded its time bound");
}

/// The Python interpreter with ZODB and ZEO: `$ZEORS_PYTHON` (set by `scripts/test`), else
/// `.venv/bin/python` at the repository root (made by `scripts/setup-venv`).
pub fn python() -> PathBuf {
    std::env::var_os("ZEORS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

static STARTS: AtomicUsize = AtomicUsize::new(0);

/// A running `zeo-server`; killed on drop.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Serves the FileStorage `data` on `127.0.0.1:port` (0 = any free port), with `extra`
    /// flags. Retries for a few seconds if the port is still taken.
    pub async fn start(data: &Path, port: u16, extra: &[&str]) -> Server {
        let started = Instant::now();
        loop {
            let n = STARTS.fetch_add(1, Ordering::Relaxed);
            let dir = data.parent().expect("data file has a directory");
            let ready = dir.join(format!("ready-{n}.json"));
            let log = dir.join(format!("server-{n}.log"));
            let child = Command::new(zeo_testkit::bin("zeo-server"))
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--path")
                .arg(data)
                .arg("--ready-file")
                .arg(&ready)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("spawn zeo-server");
            let mut server = Server { child, addr: String::new(), port, log };
            loop {
                if ready.exists() {
                    let doc: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&ready).expect("ready file")).expect("json");
                    server.addr = doc["listen"].as_str().expect("listen").to_owned();
                    server.port = server.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
                    return server;
                }
                if let Ok(Some(status)) = server.child.try_wait() {
                    let log = server.log_text();
                    assert!(
                        started.elapsed() < Duration::from_secs(10) && log.contains("in use"),
                        "zeo-server exited ({status}): {log}"
                    );
                    break; // port still busy: try again
                }
                assert!(started.elapsed() < Duration::from_secs(20), "zeo-server did not start: {}", server.log_text());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh temp dir and the path of a `Data.fs` inside it.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("Data.fs");
    (dir, data)
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago (for servers started later on a known port).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

/// What the proxy does with the next `tpc_finish` it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cut {
    /// Forward everything.
    Pass = 0,
    /// Forward the `tpc_finish`, then cut the connection before its reply can come back.
    AfterFinish = 1,
    /// Cut the connection instead of forwarding the `tpc_finish`.
    InsteadOfFinish = 2,
}

/// A TCP proxy that understands ZEO frames well enough to cut a connection at `tpc_finish`.
/// The cut is one-shot: the mode returns to [`Cut::Pass`] when it fires.
pub struct Proxy {
    pub addr: String,
    mode: Arc<AtomicU8>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(Cut::Pass as u8));
        let stop = CancellationToken::new();
        let (m, s) = (mode.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = s.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                tokio::spawn(relay(client, server, m.clone(), s.child_token()));
            }
        });
        Proxy { addr, mode, stop }
    }

    pub fn arm(&self, cut: Cut) {
        self.mode.store(cut as u8, Ordering::SeqCst);
    }

    pub fn armed(&self) -> bool {
        self.mode.load(Ordering::SeqCst) != Cut::Pass as u8
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn relay(client: TcpStream, server: TcpStream, mode: Arc<AtomicU8>, cut: CancellationToken) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let down_cut = cut.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                () = down_cut.cancelled() => return,
                r = sr.read(&mut buf) => match r { Ok(0) | Err(_) => { down_cut.cancel(); return } Ok(n) => n },
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                down_cut.cancel();
                return;
            }
        }
    });
    // Upstream: frame by frame, so that tpc_finish can be recognised. The first frame is the
    // client's echo of the hello, which names the encoding.
    let mut encoding: Option<Encoding> = None;
    loop {
        let frame = tokio::select! {
            () = cut.cancelled() => break,
            f = read_raw_frame(&mut cr) => match f { Some(f) => f, None => break },
        };
        let is_finish = match encoding {
            None => {
                encoding = Encoding::from_hello(&frame[4..]);
                false
            }
            Some(enc) => matches!(message::decode(&frame[4..], enc),
                Ok(Message::Call { ref method, .. }) if method == "tpc_finish"),
        };
        if is_finish {
            let m = mode.swap(Cut::Pass as u8, Ordering::SeqCst);
            if m == Cut::InsteadOfFinish as u8 {
                break;
            }
            if m == Cut::AfterFinish as u8 {
                let _ = sw.write_all(&frame).await;
                let _ = sw.flush().await;
                break;
            }
        }
        if sw.write_all(&frame).await.is_err() {
            break;
        }
    }
    cut.cancel();
    let _ = down.await;
}

/// One frame, header included; None at EOF.
async fn read_raw_frame(r: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

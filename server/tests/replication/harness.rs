//! Real zeo-server processes on loopback for the replication tests: start, kill, pause, restart
//! on the same ports, the admin API, and a client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeo_client::{Client, ClientOptions};

pub const TOKEN: &str = "replication-test-token-0123456789";

/// The identities on the test link: every node is named one of these, and accepts the others.
pub const PEERS: &[&str] = &["a", "b"];

/// The test process's link CA (one for all the nodes a test starts), in a directory kept until the
/// process exits.
pub fn pki() -> &'static zeo_testkit::certs::LinkPki {
    static PKI: std::sync::OnceLock<(tempfile::TempDir, zeo_testkit::certs::LinkPki)> = std::sync::OnceLock::new();
    &PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = zeo_testkit::certs::LinkPki::new(dir.path(), "replication tests");
        (dir, pki)
    })
    .1
}

/// The link flags of node `name`: mutual TLS with the test CA, unless its own arguments ask for
/// `--replication-insecure`.
/// A test that gives its own link TLS flags (a rogue member with another CA) keeps them.
pub fn link_args(name: &str, args: &[String]) -> Vec<String> {
    let own = args.iter().any(|a| a == "--replication-insecure" || a == "--replication-tls-cert");
    if own { Vec::new() } else { pki().server_args(name, PEERS) }
}

/// One server process and the addresses it listens on.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    child: Option<Child>,
    pub zeo: String,
    pub admin: String,
    pub repl: String,
    args: Vec<String>,
}

impl Node {
    /// Starts a server in `dir` (created) with `args` added; ports are chosen by the OS.
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("token"), TOKEN).unwrap();
        let mut n = Node {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            child: None,
            zeo: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            repl: "127.0.0.1:0".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let ready = self.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zeo-server"))
            .args(["--listen", &self.zeo, "--admin", &self.admin, "--replication-listen", &self.repl])
            .arg("--path")
            .arg(self.dir.join("Data.fs"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--admin-token-file")
            .arg(self.dir.join("token"))
            .args(["--standby-name", &self.name])
            .args(link_args(&self.name, &self.args))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}: {}", self.name, self.log());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{} did not start: {}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        self.zeo = doc["listen"].as_str().unwrap().to_owned();
        self.admin = doc["admin"].as_str().unwrap().to_owned();
        self.repl = doc["replication"].as_str().unwrap().to_owned();
    }

    /// Restarts on the same ports and data, with new extra arguments.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// The process id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The resident set size, from /proc/PID/status (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    /// A counter or gauge from /metrics: the sample whose name and labels are exactly `sample`
    /// (0 when absent: counters with labels appear at their first increment).
    pub async fn metric(&self, sample: &str) -> f64 {
        let (code, body) = http(&self.admin, "GET", "/metrics", "", None).await;
        assert_eq!(code, 200);
        let text = body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("Data.fs")
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = http(&self.admin, "GET", "/status", "", None).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// An authenticated POST to the admin API.
    pub async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        http(&self.admin, "POST", path, body, Some(TOKEN)).await
    }

    pub async fn promote(&self, epoch: u64) {
        let (code, body) = self.post("/promote", &format!("{{\"epoch\": {epoch}}}")).await;
        assert_eq!(code, 200, "promote {}: {body}", self.name);
    }

    pub async fn rejoin(&self, primary: &Node) {
        let (code, body) = self.post("/rejoin", &format!("{{\"primary\": \"{}\"}}", primary.repl)).await;
        assert_eq!(code, 200, "rejoin {}: {body}", self.name);
    }

    /// Waits until `f(status)` holds.
    pub async fn wait_status(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{}: never {what}: {s}\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until this standby has applied everything up to `tid` (hex).
    pub async fn wait_applied(&self, tid: &str) {
        self.wait_status(&format!("applied {tid}"), |s| s["last_tid"].as_str() >= Some(tid)).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request; returns the status code and the JSON body.
pub async fn http(addr: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned())))
}

/// A client with short deadlines, so a dead server shows up as an error quickly.
pub async fn client(addr: &str, read_only: bool) -> Client {
    let mut o = ClientOptions::new([addr]);
    o.read_only = read_only;
    o.call_timeout = Duration::from_secs(3);
    o.connect_timeout = Duration::from_secs(2);
    o.wait_timeout = Duration::from_secs(10);
    o.commit_resolve_timeout = Duration::from_secs(2);
    o.heartbeat_interval = Duration::from_secs(1);
    o.heartbeat_timeout = Duration::from_secs(2);
    Client::connect(o).await.unwrap()
}

/// Commits one new object holding `data`; returns its oid and the tid.
pub async fn commit_new(c: &Client, data: &[u8]) -> zeo_client::Result<([u8; 8], [u8; 8])> {
    let oid = c.new_oid().await?;
    let t = c.begin();
    t.store(oid, zeo_client::Z64, data.to_vec())?;
    let tid = t.commit().await?.expect("a store commits a transaction");
    Ok((oid, tid))
}

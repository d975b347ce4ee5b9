//! Child processes: [`Server`] (`zeo-server`) and [`App`] (`zeo-app`), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a process may take to write its ready file.
const START_LIMIT: Duration = Duration::from_secs(30);

static STARTS: AtomicUsize = AtomicUsize::new(0);

/// The binary `name` of this workspace: `$ZEORS_<NAME>_BIN` without the `zeo-` (so
/// `ZEORS_SERVER_BIN`, as the client's tests use, and `ZEORS_APP_BIN`), else `debug/<name>`
/// under `$CARGO_TARGET_DIR` or the workspace's `target/`.
///
/// # Panics
///
/// If it does not exist, saying how to build it.
pub fn bin(name: &str) -> PathBuf {
    let short = name.strip_prefix("zeo-").unwrap_or(name);
    let var = format!("ZEORS_{}_BIN", short.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{name} not found at {}: build it first (`cargo build -p {name}`; `cargo test --workspace` does), or set {var}",
        path.display()
    );
    path
}

/// Starts `cmd` with `--ready-file` in `dir`, stderr to a log there, and waits for the ready
/// file. Returns the child, the `listen` address it reported and the log path; `None` if it
/// exited first (the caller decides whether to retry).
async fn start_with_ready_file(mut cmd: Command, dir: &Path, tag: &str) -> (Child, Option<String>, PathBuf) {
    let n = STARTS.fetch_add(1, Ordering::Relaxed);
    let ready = dir.join(format!("{tag}-ready-{n}.json"));
    let log = dir.join(format!("{tag}-{n}.log"));
    let child = cmd
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {tag}: {e}"));
    let mut child = child;
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let doc: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
            let addr = doc["listen"].as_str().expect("listen").to_owned();
            return (child, Some(addr), log);
        }
        if let Ok(Some(_)) = child.try_wait() {
            return (child, None, log);
        }
        assert!(
            start.elapsed() < START_LIMIT,
            "{tag} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `zeo-server` on a FileStorage.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The data file, kept across restarts.
    pub data: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Serves `dir/Data.fs` on a free port of 127.0.0.1.
    pub async fn start(dir: &Path) -> Server {
        Server::start_on(dir, dir.join("Data.fs"), 0).await
    }

    async fn start_on(dir: &Path, data: PathBuf, port: u16) -> Server {
        let started = Instant::now();
        loop {
            let mut cmd = Command::new(bin("zeo-server"));
            cmd.arg("--listen").arg(format!("127.0.0.1:{port}")).arg("--path").arg(&data);
            let (child, addr, log) = start_with_ready_file(cmd, dir, "server").await;
            if let Some(addr) = addr {
                return Server { child, addr, data, dir: dir.to_owned(), log };
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // The port of a killed server can stay busy for a moment: try again.
            assert!(
                port != 0 && text.contains("in use") && started.elapsed() < START_LIMIT,
                "zeo-server exited: {text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap: no shutdown, no final fsync.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port and data file (after [`Server::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        let port: u16 = self.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let fresh = Server::start_on(&self.dir, self.data.clone(), port).await;
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `zeo-app`.
pub struct App {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
}

impl App {
    /// Runs the `zeo-app` binary `exe` against `storage`, listening on a free port, with
    /// `extra` flags, and waits until it listens (not until it is ready: see `/readyz`).
    ///
    /// # Panics
    ///
    /// If it exits or does not start in time.
    pub async fn start(exe: &Path, dir: &Path, storage: &str, extra: &[&str]) -> App {
        let mut cmd = Command::new(exe);
        cmd.args(["--listen", "127.0.0.1:0", "--storage", storage, "--log-format", "json"]).args(extra);
        let (child, addr, log) = start_with_ready_file(cmd, dir, "app").await;
        let addr =
            addr.unwrap_or_else(|| panic!("zeo-app exited: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        App { child, url: format!("http://{addr}"), log }
    }

    /// The app's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

//! A real local pair for the end-to-end test and the failover benchmark: two zeo-servers, each
//! started by its own zeo-supervisor (exec mode), one file lease, one local service address.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A sibling binary of the running one (examples live in target/PROFILE/examples/).
fn beside_me(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)].into_iter().find(|p| p.exists())
}

/// The zeo-supervisor binary: Cargo's for tests, the sibling for examples.
pub fn supervisor_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_zeo-supervisor") {
        Some(p) => PathBuf::from(p),
        None => beside_me("zeo-supervisor").expect("zeo-supervisor beside this binary"),
    }
}

/// The zeo-server binary of this workspace's build (as the client's tests find it).
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ZEORS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = beside_me("zeo-server") {
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/zeo-server");
    assert!(bin.exists(), "{} not found: build the workspace first (cargo build -p zeo-server)", bin.display());
    bin
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Member {
    pub name: &'static str,
    pub data: PathBuf,
    pub admin: String,
    /// The supervisor's admin URL.
    pub supervisor_url: String,
    pub supervisor: Child,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
        if let Some(pid) = server_pid(&self.data) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// The pid of the zeo-server serving `data`, found in /proc.
pub fn server_pid(data: &Path) -> Option<u32> {
    let needle = data.to_str()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_server = args.first().is_some_and(|a| a.ends_with(b"zeo-server"));
        if is_server && args.contains(&needle.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

pub struct Ports {
    pub zeo: u16,
    pub admin: u16,
    pub repl: u16,
    pub sup: u16,
}

/// A member's supervisor with everything but its mode: the caller adds the address mover and the
/// server command (exec mode), or nothing (sidecar mode).
pub fn supervisor_command(dir: &Path, name: &str, me: &Ports, peer_name: &str, peer: &Ports) -> Command {
    let mut c = Command::new(supervisor_bin());
    c.args(["--identity", name])
        .args(["--server-admin", &format!("http://127.0.0.1:{}", me.admin)])
        .args(["--server-zeo", &format!("127.0.0.1:{}", me.zeo)])
        .args(["--replication-addr", &format!("127.0.0.1:{}", me.repl)])
        .arg("--token-file")
        .arg(dir.join("token"))
        .args(["--peer", &format!("{peer_name}=http://127.0.0.1:{}=127.0.0.1:{}", peer.admin, peer.repl)])
        .args(["--listen", &format!("127.0.0.1:{}", me.sup)])
        .args(["--lease-backend", "file", "--lease-file"])
        .arg(dir.join("lease.json"))
        .args(["--min-failover-interval", "1s", "--stable-for", "500ms", "--max-transitions", "200"])
        .args(["--log-format", "json"]);
    c
}

/// The pair's link CA (one per process, for both members), in a directory kept until it exits.
fn link_pki() -> &'static zeo_testkit::certs::LinkPki {
    static PKI: std::sync::OnceLock<(tempfile::TempDir, zeo_testkit::certs::LinkPki)> = std::sync::OnceLock::new();
    &PKI.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pki = zeo_testkit::certs::LinkPki::new(dir.path(), "pair");
        (dir, pki)
    })
    .1
}

/// A member's zeo-server arguments (mutual TLS on the replication link, identities "a" and "b"): its data in `dir/NAME/Data.fs`, strict sync, fenced until its
/// supervisor promotes it and grants it the write lease.
pub fn server_args(dir: &Path, name: &str, me: &Ports) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["--path".into(), dir.join(name).join("Data.fs").into()];
    for (flag, port) in [("--listen", me.zeo), ("--admin", me.admin), ("--replication-listen", me.repl)] {
        a.extend([flag.into(), format!("127.0.0.1:{port}").into()]);
    }
    a.extend(["--admin-token-file".into(), dir.join("token").into()]);
    a.extend(link_pki().server_args(name, &["a", "b"]).into_iter().map(Into::into));
    for arg in ["--standby-name", name, "--sync-standbys", "1", "--wait-for-supervisor", "--require-write-lease"] {
        a.push(arg.into());
    }
    a
}

#[allow(clippy::too_many_arguments)]
pub fn start(dir: &Path, name: &'static str, me: &Ports, peer_name: &str, peer: &Ports, service: &str) -> Member {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let data = d.join("Data.fs");
    let log = std::fs::File::create(d.join("supervisor.log")).unwrap();
    let supervisor = supervisor_command(dir, name, me, peer_name, peer)
        .args(["--address", "local", "--service-address", service])
        .arg("--")
        .arg(server_bin())
        .args(server_args(dir, name, me))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Member {
        name,
        data,
        admin: format!("127.0.0.1:{}", me.admin),
        supervisor_url: format!("http://127.0.0.1:{}", me.sup),
        supervisor,
    }
}

/// `(role, writable)` from a server's /status, or None when it does not answer.
pub fn role(admin: &str) -> Option<(String, bool)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin.parse().ok()?, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("GET /status HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let body = raw.split_once("\r\n\r\n")?.1;
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    Some((doc["role"].as_str()?.to_owned(), doc["writable"].as_bool()?))
}

pub fn primary(members: &[Member]) -> Option<&Member> {
    members.iter().find(|m| role(&m.admin).is_some_and(|(r, w)| r == "primary" && w))
}

/// The supervisors' decisions (reason changes) and warnings, for failure messages.
pub fn decisions(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["a", "b"] {
        out += &format!("== {name}\n");
        let text = std::fs::read_to_string(dir.join(name).join("supervisor.log")).unwrap_or_default();
        let mut last = String::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let f = &v["fields"];
            let reason = f["reason"].as_str().unwrap_or_default().to_owned();
            let warn = v["level"] == "WARN" || v["level"] == "ERROR";
            if (!reason.is_empty() && reason != last) || warn {
                out += &format!("{} {} {} {} {}\n", v["timestamp"], v["level"], f["message"], reason, f["detail"]);
                if !reason.is_empty() {
                    last = reason;
                }
            }
        }
    }
    out
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An acknowledged write: when, which object, what data.
pub type Ack = (Instant, [u8; 8], Vec<u8>);

/// Writes new objects through `client` without pause while `writing` is set; failed writes (a
/// failover in progress) are retried after a short pause. Returns every acknowledged write.
pub fn spawn_writer(
    client: zeo_client::Client,
    writing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Ack>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0u64;
        while writing.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            let data = format!("write {i}").into_bytes();
            let result = async {
                let oid = client.new_oid().await?;
                let t = client.begin();
                t.store(oid, zeo_client::Z64, data.clone())?;
                t.commit().await.map(|_| oid)
            }
            .await;
            match result {
                Ok(oid) => acked.push((Instant::now(), oid, data)),
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        acked
    })
}

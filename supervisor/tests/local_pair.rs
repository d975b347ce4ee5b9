//! End to end with real processes: two zeo-servers (sync replication), each started by its own
//! zeo-supervisor (exec mode), one file lease, one local service address. A client writes through
//! the service address while the primary's server is SIGKILLed, three times in a row. Every
//! acknowledged write must be readable afterwards, and at no moment may two servers be writable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeo_client::{Client, ClientOptions, Z64};

/// The zeo-server binary of this workspace's build (as the client's tests find it).
fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ZEORS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/zeo-server");
    assert!(bin.exists(), "{} not found: build the workspace first (cargo build -p zeo-server)", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Member {
    name: &'static str,
    data: PathBuf,
    admin: String,
    supervisor: Child,
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
fn server_pid(data: &Path) -> Option<u32> {
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

struct Ports {
    zeo: u16,
    admin: u16,
    repl: u16,
    sup: u16,
}

#[allow(clippy::too_many_arguments)]
fn start(dir: &Path, name: &'static str, me: &Ports, peer_name: &str, peer: &Ports, service: &str) -> Member {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let data = d.join("Data.fs");
    let log = std::fs::File::create(d.join("supervisor.log")).unwrap();
    let supervisor = Command::new(env!("CARGO_BIN_EXE_zeo-supervisor"))
        .args(["--identity", name])
        .args(["--server-admin", &format!("http://127.0.0.1:{}", me.admin)])
        .args(["--server-zeo", &format!("127.0.0.1:{}", me.zeo)])
        .args(["--replication-addr", &format!("127.0.0.1:{}", me.repl)])
        .arg("--token-file")
        .arg(dir.join("token"))
        .args(["--peer", &format!("{peer_name}=http://127.0.0.1:{}=127.0.0.1:{}", peer.admin, peer.repl)])
        .args(["--listen", &format!("127.0.0.1:{}", me.sup)])
        .args(["--lease-backend", "file", "--lease-file"])
        .arg(dir.join("lease.json"))
        .args(["--address", "local", "--service-address", service])
        .args(["--min-failover-interval", "1s", "--stable-for", "500ms", "--log-format", "json"])
        .arg("--")
        .arg(server_bin())
        .arg("--path")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{}", me.zeo)])
        .args(["--admin", &format!("127.0.0.1:{}", me.admin)])
        .args(["--replication-listen", &format!("127.0.0.1:{}", me.repl)])
        .arg("--admin-token-file")
        .arg(dir.join("token"))
        .args(["--standby-name", name, "--sync-standbys", "1", "--wait-for-supervisor"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Member { name, data, admin: format!("127.0.0.1:{}", me.admin), supervisor }
}

/// `(role, writable)` from a server's /status, or None when it does not answer.
fn role(admin: &str) -> Option<(String, bool)> {
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

fn primary(members: &[Member]) -> Option<&Member> {
    members.iter().find(|m| role(&m.admin).is_some_and(|(r, w)| r == "primary" && w))
}

/// The supervisors' decisions (reason changes) and warnings, for failure messages.
fn decisions(dir: &Path) -> String {
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

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_primary_three_times_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "local-pair-test-token-0123456789").unwrap();
    let ports = |_| Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(0), ports(1));
    let service = format!("127.0.0.1:{}", free_port());
    let members =
        vec![start(dir.path(), "a", &pa, "b", &pb, &service), start(dir.path(), "b", &pb, "a", &pa, &service)];
    let members = Arc::new(members);
    wait_until("a primary", Duration::from_secs(60), || primary(&members).is_some());

    // Never two writable servers: sampled all along by a watcher.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (members, stop) = (members.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let writable = members.iter().filter(|m| role(&m.admin).is_some_and(|(_, w)| w)).count();
                assert!(writable <= 1, "two writable servers at once");
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let mut o = ClientOptions::new([service.as_str()]);
    o.call_timeout = Duration::from_secs(5);
    o.commit_resolve_timeout = Duration::from_secs(5);
    o.reconnect_max = Duration::from_millis(300);
    let client = Client::connect(o).await.unwrap();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (client, writing) = (client.clone(), writing.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while writing.load(Ordering::SeqCst) {
                i += 1;
                let data = format!("write {i}").into_bytes();
                let result = async {
                    let oid = client.new_oid().await?;
                    let t = client.begin();
                    t.store(oid, Z64, data.clone())?;
                    t.commit().await.map(|_| oid)
                }
                .await;
                match result {
                    Ok(oid) => acked.push((oid, data)),
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                }
            }
            acked
        })
    };
    for round in 0..3 {
        // Past the stability and failover-interval guards, and with a standby in sync.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let victim = primary(&members).expect("a primary before the kill");
        let pid = server_pid(&victim.data).expect("the primary's server process");
        let killed = Instant::now();
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
        let name = victim.name;
        let took_over = (0..600).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            primary(&members).is_some_and(|m| m.name != name)
        });
        assert!(took_over, "no new primary after round {round}:\n{}", decisions(dir.path()));
        println!("round {round}: {name} killed, new primary after {:?}", killed.elapsed());
        if client.metrics().commits == 0 {
            for n in ["a", "b"] {
                let t = std::fs::read_to_string(dir.path().join(n).join("supervisor.log")).unwrap_or_default();
                for l in t.lines().filter(|l| l.contains("zeo_server")).take(40) {
                    eprintln!("{n}: {}", &l[..l.len().min(300)]);
                }
            }
        }
        assert!(client.metrics().commits > 0, "writes went through before round {round}");
        // The killed server comes back (exec mode) and rejoins as a standby.
        wait_until("the old primary back as a standby", Duration::from_secs(30), || {
            members.iter().find(|m| m.name == name).and_then(|m| role(&m.admin)).is_some_and(|(r, _)| r == "standby")
        });
    }
    writing.store(false, Ordering::SeqCst);
    let acked = writer.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().unwrap();
    assert!(samples > 50, "the watcher ran");
    assert!(acked.len() > 10, "writes went through: {}", acked.len());
    let mut lost = 0;
    for (oid, data) in &acked {
        match client.load(*oid).await {
            Ok((got, _)) => assert_eq!(&got[..], &data[..]),
            Err(_) => lost += 1,
        }
    }
    println!("{} acknowledged writes across 3 failovers, {lost} lost", acked.len());
    assert_eq!(lost, 0);
}

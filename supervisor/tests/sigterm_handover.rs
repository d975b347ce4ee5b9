//! SIGTERM of the holding supervisor of a real local pair (exec mode, file lease): it demotes its
//! server, names the in-sync standby in the lease as it releases it, stops its server and exits
//! 0; the standby takes the handed-over lease at once (the planned path, no waiting out the lease).

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

mod pair;

use pair::{Ports, decisions, free_port, primary, server_args, server_bin, start, supervisor_command, wait_until};

#[test]
fn sigterm_of_the_holder_hands_over_to_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "local-pair-test-token-0123456789").unwrap();
    let ports = |_| Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(0), ports(1));
    let service = format!("127.0.0.1:{}", free_port());
    let mut members =
        vec![start(dir.path(), "a", &pa, "b", &pb, &service), start(dir.path(), "b", &pb, "a", &pa, &service)];
    wait_until("a primary", Duration::from_secs(60), || primary(&members).is_some());
    let holder = primary(&members).unwrap().name;
    let standby = if holder == "a" { "b" } else { "a" };
    // The standby in sync, so the holder can name it.
    wait_until("the standby in sync", Duration::from_secs(60), || {
        let s = members.iter().find(|m| m.name == standby).unwrap();
        status(&s.admin).is_some_and(|d| d["role"] == "standby" && d["replication"]["in_sync"] == true)
    });
    // The file lease: {"version": n, "record": {...}}.
    let lease = |dir: &std::path::Path| -> serde_json::Value {
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("lease.json")).unwrap()).unwrap();
        stored["record"].clone()
    };
    let epoch = lease(dir.path())["transitions"].as_u64().unwrap();

    let victim = members.iter_mut().find(|m| m.name == holder).unwrap();
    let pid = victim.supervisor.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let code = victim.supervisor.wait().unwrap();
    assert!(code.success(), "the supervisor exits 0 after the handover: {code:?}\n{}", decisions(dir.path()));

    wait_until("the standby primary", Duration::from_secs(30), || primary(&members).is_some_and(|m| m.name == standby));
    let log = std::fs::read_to_string(dir.path().join(holder).join("supervisor.log")).unwrap();
    let released = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "lease released")
        .unwrap_or_else(|| panic!("no lease release at shutdown:\n{}", decisions(dir.path())));
    assert_eq!(released["fields"]["successor"], format!("Some(\"{standby}\")"), "the standby was named");
    let after = lease(dir.path());
    assert_eq!(after["holder"], standby);
    assert_eq!(after["transitions"].as_u64().unwrap(), epoch + 1, "one transition: the handover");
}

/// A server's /status document, or None when it does not answer.
fn status(admin: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&admin.parse().ok()?, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("GET /status HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()
}

/// Sidecar mode: a server and its supervisor as two processes, as the two containers of a pod.
struct Sidecar {
    name: &'static str,
    admin: String,
    supervisor_url: String,
    server: Child,
    supervisor: Child,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        for child in [&mut self.supervisor, &mut self.server] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sidecar(dir: &Path, name: &'static str, me: &Ports, peer_name: &str, peer: &Ports) -> Sidecar {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let log = |f: &str| std::fs::File::create(d.join(f)).unwrap();
    let server = Command::new(server_bin())
        .args(server_args(dir, name, me))
        .stdout(log("server.log"))
        .stderr(log("server.err"))
        .spawn()
        .unwrap();
    let supervisor = supervisor_command(dir, name, me, peer_name, peer)
        .stdout(log("supervisor.log"))
        .stderr(log("supervisor.err"))
        .spawn()
        .unwrap();
    Sidecar {
        name,
        admin: format!("127.0.0.1:{}", me.admin),
        supervisor_url: format!("http://127.0.0.1:{}", me.sup),
        server,
        supervisor,
    }
}

/// The status code of the supervisor's GET /handover, or None when its port does not answer.
fn handover(supervisor_url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = supervisor_url.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("GET /handover HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.split_whitespace().nth(1)?.parse().ok()
}

/// The pod-deletion order of the chart: the supervisor gets SIGTERM, the server's preStop hook
/// waits for GET /handover = 200, then the server is stopped. At 200 the server is no longer
/// writable and the standby has the lease; the supervisor stays up until its server is gone,
/// then exits 0.
#[test]
fn sidecar_handover_is_announced_on_get_handover() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "local-pair-test-token-0123456789").unwrap();
    let ports = |_| Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(0), ports(1));
    let mut members = [sidecar(dir.path(), "a", &pa, "b", &pb), sidecar(dir.path(), "b", &pb, "a", &pa)];
    let writable = |m: &Sidecar| status(&m.admin).is_some_and(|d| d["role"] == "primary" && d["writable"] == true);
    wait_until("a primary", Duration::from_secs(60), || members.iter().any(writable));
    let holder = members.iter().position(writable).unwrap();
    let standby = 1 - holder;
    wait_until("the standby in sync", Duration::from_secs(60), || {
        status(&members[standby].admin).is_some_and(|d| d["role"] == "standby" && d["replication"]["in_sync"] == true)
    });
    assert_eq!(handover(&members[holder].supervisor_url), Some(503), "no handover before the SIGTERM");

    let pid = members[holder].supervisor.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // The preStop hook's loop.
    wait_until("GET /handover = 200", Duration::from_secs(30), || {
        handover(&members[holder].supervisor_url) == Some(200)
    });
    assert!(!writable(&members[holder]), "the old primary's server was demoted before the 200");
    wait_until("the standby primary", Duration::from_secs(30), || writable(&members[standby]));
    assert!(members[holder].supervisor.try_wait().unwrap().is_none(), "the supervisor waits for its server to go");

    // The kubelet stops the server once its preStop hook returned.
    let old = &mut members[holder];
    old.server.kill().unwrap();
    old.server.wait().unwrap();
    let code = old.supervisor.wait().unwrap();
    assert!(code.success(), "{} exits 0 once its server is gone: {code:?}", old.name);
}

//! SIGTERM of the holding supervisor of a real local pair (exec mode, file lease): it demotes its
//! server, names the in-sync standby in the lease as it releases it, stops its server and exits
//! 0; the standby takes the handed-over lease at once (the planned path, no waiting out the lease).

use std::time::Duration;

mod pair;

use pair::{Ports, decisions, free_port, primary, start, wait_until};

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

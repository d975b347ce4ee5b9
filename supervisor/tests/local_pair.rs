//! End to end with real processes: two zeo-servers (sync replication), each started by its own
//! zeo-supervisor (exec mode), one file lease, one local service address. A client writes through
//! the service address while the primary's server is SIGKILLed, three times in a row. Every
//! acknowledged write must be readable afterwards, and at no moment may two servers be writable.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeo_client::{Client, ClientOptions};

mod pair;

use pair::{Ports, decisions, free_port, primary, role, server_pid, start, wait_until};

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
    let writer = pair::spawn_writer(client.clone(), writing.clone());
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
    for (_, oid, data) in &acked {
        match client.load(*oid).await {
            Ok((got, _)) => assert_eq!(&got[..], &data[..]),
            Err(_) => lost += 1,
        }
    }
    println!("{} acknowledged writes across 3 failovers, {lost} lost", acked.len());
    assert_eq!(lost, 0);
}

/// Exec mode: a supervisor killed outright takes its server with it (PR_SET_PDEATHSIG), so no
/// orphan keeps the storage lock from the server of the supervisor that replaces it.
#[test]
fn a_sigkilled_supervisor_leaves_no_orphan_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "local-pair-test-token-0123456789").unwrap();
    let ports = |_| Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(0), ports(1));
    let service = format!("127.0.0.1:{}", free_port());
    let mut a = start(dir.path(), "a", &pa, "b", &pb, &service);
    wait_until("a's server", Duration::from_secs(60), || role(&a.admin).is_some());
    let pid = server_pid(&a.data).expect("server pid");
    a.supervisor.kill().unwrap();
    a.supervisor.wait().unwrap();
    wait_until("the orphan gone", Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
    });
}

/// The primary's supervisor is SIGSTOPped for longer than the lease (exec mode: its server runs
/// on). Nothing tells that server to stop, yet it fences itself when its write lease ends, the
/// standby takes over, and at no moment are two servers writable. After SIGCONT the old
/// supervisor finds the lease gone and its server rejoins as a standby.
#[test]
fn sigstop_of_the_primary_supervisor_past_the_lease_never_leaves_two_writers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "local-pair-test-token-0123456789").unwrap();
    let ports = |_| Ports { zeo: free_port(), admin: free_port(), repl: free_port(), sup: free_port() };
    let (pa, pb) = (ports(0), ports(1));
    let service = format!("127.0.0.1:{}", free_port());
    let members = Arc::new(vec![
        start(dir.path(), "a", &pa, "b", &pb, &service),
        start(dir.path(), "b", &pb, "a", &pa, &service),
    ]);
    wait_until("a primary", Duration::from_secs(60), || primary(&members).is_some());
    let victim = primary(&members).unwrap().name;
    let (v, o) = if victim == "a" { (0, 1) } else { (1, 0) };
    wait_until("the other server a standby", Duration::from_secs(60), || {
        role(&members[o].admin).is_some_and(|(r, _)| r == "standby")
    });
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
    let pid = members[v].supervisor.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    wait_until("the victim's server fenced by its own write lease", Duration::from_secs(30), || {
        role(&members[v].admin).is_some_and(|(_, w)| !w)
    });
    wait_until("the other server writable primary", Duration::from_secs(60), || {
        role(&members[o].admin).is_some_and(|(r, w)| r == "primary" && w)
    });
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    wait_until("the old primary back as a standby", Duration::from_secs(60), || {
        role(&members[v].admin).is_some_and(|(r, _)| r == "standby")
    });
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().unwrap();
    assert!(samples > 50, "the watcher ran: {samples}\n{}", decisions(dir.path()));
}

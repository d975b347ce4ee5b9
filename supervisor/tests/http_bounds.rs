//! The supervisor's admin port bounded (issue 13 part 4), against the real binary: slow request
//! heads are closed past `--head-timeout` while the port keeps answering, connections over
//! `--max-connections` are closed at once, sources outside `--allow` get nothing (not even
//! `/livez` or `/metrics`), big bodies are refused, and bad values exit 64.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zeo_testkit::net::connect_from;

/// Generous: only a broken supervisor makes a test wait this long.
const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A supervisor whose server is nowhere (its loop just fails its probes): only its admin port matters.
struct Supervisor {
    child: Child,
    addr: SocketAddr,
}

impl Supervisor {
    fn args(listen: &str, extra: &[&str]) -> Vec<String> {
        let base = ["--identity", "a", "--replication-addr", "127.0.0.1:9", "--server-admin", "http://127.0.0.1:9"];
        let base = [&base[..], &["--server-zeo", "127.0.0.1:9", "--listen", listen]].concat();
        base.iter().chain(extra).map(|s| (*s).to_owned()).collect()
    }

    fn start(extra: &[&str]) -> Supervisor {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zeo-supervisor"))
            .args(Supervisor::args(&addr.to_string(), extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut s = Supervisor { child, addr };
        wait_until("the admin port answers", || {
            assert!(s.child.try_wait().unwrap().is_none(), "the supervisor exited");
            TcpStream::connect(s.addr).is_ok()
        });
        s
    }

    /// `zeo_supervisor_listener_refused_total{listener="http",reason}`.
    fn refused(&self, reason: &str) -> u64 {
        let (code, body) = request(None, self.addr, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 200, "{body}");
        let prefix = format!("zeo_supervisor_listener_refused_total{{listener=\"http\",reason=\"{reason}\"}} ");
        body.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds; fails the test after `DEADLINE`.
fn wait_until(what: &str, done: impl FnMut() -> bool) {
    zeo_testkit::net::poll_until(what, DEADLINE, done);
}

/// What the server sends until it closes the connection; fails if it stays open.
fn read_until_closed(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the supervisor left the connection open")
            }
            Err(_) => break, // reset: closed
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `raw` from `source`; (status, body), status 0 when nothing came back.
fn request(source: Option<&str>, addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = connect_from(source, addr);
    // A refused connection may be closed before the request is written.
    let _ = s.write_all(raw.as_bytes());
    let out = read_until_closed(&mut s);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn get(source: Option<&str>, addr: SocketAddr, path: &str) -> (u16, String) {
    request(source, addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
}

#[test]
fn slow_heads_are_closed_past_the_deadline_and_the_port_keeps_answering() {
    // The deadline leaves room for a busy machine: the 20 held heads must still be open when the
    // last 10 arrive, or those would be accepted (and time out) instead of refused by the cap.
    let sup = Supervisor::start(&["--head-timeout", "10s", "--max-connections", "20"]);
    // 30 half-sent heads: 20 fill the cap until the deadline, 10 are closed at once.
    let mut slow: Vec<TcpStream> = (0..30)
        .map(|_| {
            let mut s = TcpStream::connect(sup.addr).unwrap();
            let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n");
            s
        })
        .collect();
    for s in &mut slow {
        assert_eq!(read_until_closed(s), "", "an unfinished head is never answered");
    }
    assert_eq!(get(None, sup.addr, "/livez"), (200, "ok".to_owned()));
    wait_until("every slow head is counted", || sup.refused("head_timeout") + sup.refused("max_connections") == 30);
    // Never more than the cap held to the deadline, and some refused by it. Not exactly 20: the
    // start-up probe's connection may still hold a slot when the first heads arrive.
    let (held, capped) = (sup.refused("head_timeout"), sup.refused("max_connections"));
    assert!((1..=20).contains(&held) && capped >= 10, "held to the deadline {held}, refused by the cap {capped}");
}

#[test]
fn sources_outside_the_allow_list_get_nothing() {
    let sup = Supervisor::start(&["--allow", "127.0.0.1/32"]);
    for path in ["/livez", "/metrics", "/readyz"] {
        assert_eq!(get(Some("127.0.0.2"), sup.addr, path), (0, String::new()), "{path} from 127.0.0.2");
    }
    assert_eq!(get(Some("127.0.0.1"), sup.addr, "/livez"), (200, "ok".to_owned()));
    assert_eq!(sup.refused("address"), 3);
}

#[test]
fn bodies_over_the_limit_are_refused_before_the_handler() {
    let sup = Supervisor::start(&[]);
    let body = "x".repeat(100_000);
    let raw = format!(
        "POST /switchover HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(request(None, sup.addr, &raw).0, 413);
    assert_eq!(get(None, sup.addr, "/livez").0, 200);
}

#[test]
fn invalid_bounds_exit_64_naming_the_flag() {
    for (extra, flag) in [
        (&["--allow", "not-a-network"][..], "--allow"),
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--head-timeout", "0s"][..], "--head-timeout"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zeo-supervisor"))
            .args(Supervisor::args("127.0.0.1:0", extra))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {stderr}");
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
    }
}

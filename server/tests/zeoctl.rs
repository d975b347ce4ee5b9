//! `zeoctl` as a user runs it: the real binary on a Data.fs written by Python's ZODB.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn zeoctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zeoctl")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn python_fixture(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = std::env::var_os("ZEORS_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo.join(".venv/bin/python"));
    let path = dir.join("Data.fs");
    let out = Command::new(python).arg(repo.join("tests/python/make_fixture.py")).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    path
}

#[test]
fn verify_dump_info_and_pack() {
    let dir = tempfile::tempdir().unwrap();
    let path = python_fixture(dir.path());
    let p = path.to_str().unwrap();

    let v = zeoctl(&["verify", p]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(text(&v).contains("109 transactions") && text(&v).contains("OK"), "{}", text(&v));

    let d = zeoctl(&["dump", p]);
    assert!(d.status.success());
    let dump = text(&d);
    assert!(dump.contains("Trans #00108"), "{dump}");
    assert!(dump.contains("class=persistent.mapping.PersistentMapping"), "{dump}");
    assert!(dump.contains("class=BTrees.OOBTree.OOBTree"), "{dump}");
    let j = zeoctl(&["dump", "--json", p]);
    let first: serde_json::Value = serde_json::from_str(text(&j).lines().next().unwrap()).unwrap();
    assert_eq!(first["records"][0]["oid"], "0000000000000000");

    let i = zeoctl(&["info", p]);
    let info = text(&i);
    assert!(info.contains("transactions: 109") && info.contains("objects:      37"), "{info}");
    assert!(info.contains("last tid:     03f58e007eeeeeee"), "{info}");

    let before = std::fs::metadata(&path).unwrap().len();
    let pk = zeoctl(&["pack", p, "--days", "0"]);
    assert!(pk.status.success(), "{}", text(&pk));
    assert!(text(&pk).contains("records removed"), "{}", text(&pk));
    assert!(std::fs::metadata(&path).unwrap().len() < before);
    assert!(zeoctl(&["verify", p]).status.success());
}

#[test]
fn verify_reports_damage_with_the_offset_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = python_fixture(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // The first data record's tloc (transaction back pointer) at 4 + 23 + user/desc/ext + 24.
    let ulen = u16::from_be_bytes([bytes[4 + 17], bytes[4 + 18]]) as usize;
    let dlen = u16::from_be_bytes([bytes[4 + 19], bytes[4 + 20]]) as usize;
    let elen = u16::from_be_bytes([bytes[4 + 21], bytes[4 + 22]]) as usize;
    let rec = 4 + 23 + ulen + dlen + elen;
    bytes[rec + 24 + 7] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let v = zeoctl(&["verify", path.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(text(&v).contains(&format!("DAMAGE at byte offset {rec}")), "{}", text(&v));
    // Not a Data.fs at all.
    std::fs::write(&path, b"hello").unwrap();
    let v = zeoctl(&["verify", path.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(1));
    assert!(text(&v).contains("bad magic"), "{}", text(&v));
    let i = zeoctl(&["info", path.to_str().unwrap()]);
    assert!(!i.status.success() && text(&i).contains("not a FileStorage"), "{}", text(&i));
}

#[test]
fn health_checks_an_http_endpoint() {
    // A one-shot HTTP server on loopback: first a 200, then a 503.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for answer in ["200 OK", "503 Service Unavailable"] {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /readyz HTTP/1.0"));
            write!(s, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").unwrap();
        }
    });
    assert!(zeoctl(&["health", &url]).status.success());
    let o = zeoctl(&["health", &url]);
    assert!(!o.status.success());
    assert!(text(&o).contains("503"), "{}", text(&o));
    server.join().unwrap();
    let refused = zeoctl(&["health", "http://127.0.0.1:1/livez", "--timeout", "1"]);
    assert!(!refused.status.success());
}

#[test]
fn health_wait_asks_again_until_a_2xx_answer() {
    // As a preStop hook waits on a supervisor's /handover: 503, 503, then 200.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/handover", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for answer in ["503 Service Unavailable", "503 Service Unavailable", "200 OK"] {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /handover HTTP/1.0"));
            write!(s, "HTTP/1.1 {answer}\r\nContent-Length: 0\r\n\r\n").unwrap();
        }
        listener
    });
    let o = zeoctl(&["health", &url, "--wait", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().collect::<Vec<_>>(), ["503", "503", "200"]);
    // No answer that is a 2xx within the bound: it gives up, with a failure.
    let listener = server.join().unwrap();
    drop(listener);
    let o = zeoctl(&["health", &url, "--wait", "0.5", "--timeout", "0.2"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no 2xx answer"), "{}", text(&o));
}

//! zeo-server as a process, driven by a raw ZEO 5 client over TCP: the handshake and golden reply
//! bytes, bad input (each closes only its own connection), limits (connections, frame size, slow
//! readers), the commit lock when its holder disconnects, and SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zeo_proto::message::{self, Encoding, Message};
use zeo_proto::pickle::Value;

struct ServerProc {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl ServerProc {
    fn start(dir: &Path, extra: &[&str]) -> ServerProc {
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_zeo-server"))
            .args(["--listen", "127.0.0.1:0", "--path"])
            .arg(dir.join("Data.fs"))
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ready.exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "server did not start: {}", Self::log_of(dir));
            std::thread::sleep(Duration::from_millis(20));
        }
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        ServerProc { child, addr: doc["listen"].as_str().unwrap().to_string(), dir: dir.to_path_buf() }
    }

    fn log_of(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        Self::log_of(&self.dir)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal synchronous ZEO client.
struct Client {
    s: TcpStream,
    next: i64,
}

impl Client {
    fn raw(addr: &str) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { s, next: 1 }
    }

    fn connect(addr: &str, read_only: bool) -> (Client, Value) {
        let mut c = Client::raw(addr);
        assert_eq!(c.read_frame().unwrap(), b"Z5");
        c.write_frame(b"Z5");
        let last = c.call("register", vec![Value::Str("1".into()), Value::Bool(read_only)]);
        (c, last.expect("register"))
    }

    fn write_frame(&mut self, payload: &[u8]) {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        self.s.write_all(&f).unwrap();
    }

    /// None when the server closed the connection.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut buf).ok()?;
        Some(buf)
    }

    fn send(&mut self, msg: &Message) {
        let payload = message::encode(msg, Encoding::Pickle).unwrap();
        self.write_frame(&payload);
    }

    fn call_async(&mut self, method: &str, args: Vec<Value>) {
        self.send(&Message::Call { msgid: Value::Int(0), is_async: true, method: method.into(), args });
    }

    /// The reply to a sync call, skipping async messages; Err((class, payload)) for an error reply.
    fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value, (String, Value)> {
        let id = self.next;
        self.next += 1;
        self.send(&Message::Call { msgid: Value::Int(id), is_async: false, method: method.into(), args });
        self.reply(Value::Int(id))
    }

    fn reply(&mut self, msgid: Value) -> Result<Value, (String, Value)> {
        loop {
            let frame = self.read_frame().expect("connection closed while waiting for a reply");
            match message::decode(&frame, Encoding::Pickle).unwrap() {
                Message::Reply { msgid: m, value } if m == msgid => return Ok(value),
                Message::Error { msgid: m, class, payload } if m == msgid => return Err((class, payload)),
                _ => continue,
            }
        }
    }

    fn is_closed(&mut self) -> bool {
        self.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue, // drain whatever was queued before the close
                // Still open after the timeout: not closed.
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true, // reset
            }
        }
    }
}

fn oid(n: u64) -> Value {
    Value::Bytes(n.to_be_bytes().to_vec())
}

/// `tpc_begin` of transaction `txn` (async, as clients send it).
fn begin(c: &mut Client, txn: i64) {
    let empty = || Value::Bytes(Vec::new());
    c.call_async(
        "tpc_begin",
        vec![Value::Int(txn), empty(), empty(), Value::Dict(vec![]), Value::None, Value::Str(" ".into())],
    );
}

/// Commits one store through the raw protocol; returns the tid.
fn commit(c: &mut Client, txn: i64, o: u64, serial: [u8; 8], data: &[u8]) -> Value {
    begin(c, txn);
    c.call_async("storea", vec![oid(o), Value::Bytes(serial.to_vec()), Value::Bytes(data.to_vec()), Value::Int(txn)]);
    c.call("vote", vec![Value::Int(txn)]).unwrap();
    c.call("tpc_finish", vec![Value::Int(txn)]).unwrap()
}

#[test]
fn handshake_register_and_golden_poskey_reply() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &[]);
    let mut c = Client::raw(&server.addr);
    assert_eq!(c.read_frame().unwrap(), b"Z5");
    c.write_frame(b"Z5");
    // (1, False, 'register', ('1', False)) as in the spec's test vectors.
    c.write_frame(&hex::decode("8003284b0189580800000072656769737465725801000000318986742e").unwrap());
    // (1, 0, '.reply', z64): an empty storage's last tid.
    assert_eq!(hex::encode(c.read_frame().unwrap()), "8003284b014b0058060000002e7265706c7943080000000000000000742e");
    // loadBefore(z64, tid) with a tuple msgid: a POSKeyError reply echoing the tuple.
    let tid = [0x04, 0x0d, 0x2a, 0x90, 0x43, 0xad, 0x29, 0x11];
    let msgid = Value::Tuple(vec![Value::Bytes(vec![0; 8]), Value::Bytes(tid.to_vec())]);
    c.send(&Message::Call {
        msgid: msgid.clone(),
        is_async: false,
        method: "loadBefore".into(),
        args: vec![Value::Bytes(vec![0; 8]), Value::Bytes(tid.to_vec())],
    });
    let got = hex::encode(c.read_frame().unwrap());
    let want = format!(
        "800328430800000000000000004308{}864b025806000000 2e7265706c79581d000000{}430800000000000000008586742e",
        hex::encode(tid),
        hex::encode("ZODB.POSException.POSKeyError")
    )
    .replace(' ', "");
    assert_eq!(got, want);
    // ruok on a fresh connection.
    let mut probe = Client::raw(&server.addr);
    probe.read_frame().unwrap();
    probe.write_frame(b"ruok");
    let status: serde_json::Value = serde_json::from_slice(&probe.read_frame().unwrap()).unwrap();
    assert_eq!(status["1"]["connections"], 1);
}

#[test]
fn bad_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--max-frame-bytes", "4096"]);
    let (mut good, _) = Client::connect(&server.addr, false);
    let tid = commit(&mut good, 1, 1, [0; 8], b"kept");

    // Garbage after the handshake.
    let (mut c, _) = Client::connect(&server.addr, false);
    c.write_frame(b"\x80\x03garbage");
    assert!(c.is_closed());
    // A forbidden global (os.system).
    let (mut c, _) = Client::connect(&server.addr, false);
    c.write_frame(b"\x80\x03(K\x01\x89X\x04\x00\x00\x00pingcos\nsystem\n)t.");
    assert!(c.is_closed());
    // An unknown method.
    let (mut c, _) = Client::connect(&server.addr, false);
    c.send(&Message::Call { msgid: Value::Int(1), is_async: false, method: "rm_rf".into(), args: vec![] });
    assert!(c.is_closed());
    // A frame over --max-frame-bytes is refused from its header.
    let (mut c, _) = Client::connect(&server.addr, false);
    c.s.write_all(&100_000u32.to_be_bytes()).unwrap();
    assert!(c.is_closed());
    // A bad handshake.
    let mut c = Client::raw(&server.addr);
    c.read_frame().unwrap();
    c.write_frame(b"Z4");
    assert!(c.is_closed());
    // A method before register.
    let mut c = Client::raw(&server.addr);
    c.read_frame().unwrap();
    c.write_frame(b"Z5");
    c.send(&Message::Call { msgid: Value::Int(1), is_async: false, method: "new_oids".into(), args: vec![] });
    assert!(c.is_closed());
    // An async call that fails (storea without a transaction) closes too.
    let (mut c, _) = Client::connect(&server.addr, false);
    c.call_async("storea", vec![oid(9), Value::Bytes(vec![0; 8]), Value::Bytes(b"x".to_vec()), Value::Int(7)]);
    assert!(c.is_closed());

    // Everyone else is still served, and nothing committed was lost.
    let got = good
        .call("loadBefore", vec![oid(1), Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])])
        .unwrap();
    assert_eq!(got.as_tuple().unwrap()[0], Value::Bytes(b"kept".to_vec()));
    assert_eq!(got.as_tuple().unwrap()[1], tid);
    let log = server.log();
    for reason in
        ["undecodable message", "bad frame", "unknown method", "bad handshake", "before register", "async storea"]
    {
        assert!(log.contains(reason), "no log line for {reason:?}:\n{log}");
    }
}

#[test]
fn connection_limit_and_slow_readers() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--max-connections", "2", "--output-buffer-bytes", "65536"]);
    let (mut a, _) = Client::connect(&server.addr, false);
    commit(&mut a, 1, 1, [0; 8], &vec![b'x'; 30_000]);
    let (mut slow, _) = Client::connect(&server.addr, false);
    // A third connection is refused while two are open.
    let mut third = Client::raw(&server.addr);
    assert!(third.is_closed());
    // A client that sends requests and never reads is cut off once its replies exceed the bound.
    let maxtid = Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    // The server may cut the connection while we are still writing: that is the behaviour under test.
    for i in 0..200 {
        let call = Message::Call {
            msgid: Value::Int(i + 10),
            is_async: false,
            method: "loadBefore".into(),
            args: vec![oid(1), maxtid.clone()],
        };
        let payload = message::encode(&call, Encoding::Pickle).unwrap();
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        if slow.s.write_all(&frame).is_err() {
            break;
        }
    }
    let start = Instant::now();
    while !server.log().contains("client is not reading") {
        assert!(start.elapsed() < Duration::from_secs(10), "slow reader not cut off:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The well-behaved client is unaffected.
    assert!(a.call("lastTransaction", vec![]).is_ok());
}

#[test]
fn disconnect_while_holding_the_commit_lock_lets_the_next_voter_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &[]);
    let (mut a, _) = Client::connect(&server.addr, false);
    let (mut b, _) = Client::connect(&server.addr, false);
    begin(&mut a, 1);
    a.call_async("storea", vec![oid(5), Value::Bytes(vec![0; 8]), Value::Bytes(b"from a".to_vec()), Value::Int(1)]);
    a.call("vote", vec![Value::Int(1)]).unwrap();
    // b votes while a holds the lock: its reply waits, but b is still served meanwhile.
    begin(&mut b, 2);
    b.call_async("storea", vec![oid(6), Value::Bytes(vec![0; 8]), Value::Bytes(b"from b".to_vec()), Value::Int(2)]);
    b.send(&Message::Call {
        msgid: Value::Int(100),
        is_async: false,
        method: "vote".into(),
        args: vec![Value::Int(2)],
    });
    assert!(b.call("ping", vec![]).is_ok());
    drop(a); // disconnect while holding the lock: its transaction is aborted
    assert!(b.reply(Value::Int(100)).is_ok());
    b.call("tpc_finish", vec![Value::Int(2)]).unwrap();
    let maxtid = Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let err = b.call("loadBefore", vec![oid(5), maxtid.clone()]).unwrap_err();
    assert_eq!(err.0, "ZODB.POSException.POSKeyError", "a's object must not exist");
    assert!(b.call("loadBefore", vec![oid(6), maxtid]).is_ok());
}

#[test]
fn transaction_timeout_disconnects_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--transaction-timeout", "1s"]);
    let (mut a, _) = Client::connect(&server.addr, false);
    begin(&mut a, 1);
    a.call_async("storea", vec![oid(5), Value::Bytes(vec![0; 8]), Value::Bytes(b"x".to_vec()), Value::Int(1)]);
    a.call("vote", vec![Value::Int(1)]).unwrap();
    assert!(a.is_closed());
    assert!(server.log().contains("Transaction timeout after 1 seconds"), "{}", server.log());
    let (mut b, _) = Client::connect(&server.addr, false);
    commit(&mut b, 2, 6, [0; 8], b"after");
}

#[test]
fn read_only_server_refuses_writable_registration() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = ServerProc::start(dir.path(), &[]);
        let (mut c, _) = Client::connect(&server.addr, false);
        commit(&mut c, 1, 1, [0; 8], b"x");
    }
    let server = ServerProc::start(dir.path(), &["--read-only"]);
    let mut c = Client::raw(&server.addr);
    c.read_frame().unwrap();
    c.write_frame(b"Z5");
    let err = c.call("register", vec![Value::Str("1".into()), Value::Bool(false)]).unwrap_err();
    assert_eq!(err.0, "ZODB.POSException.ReadOnlyError");
    // A fallback client re-registers read-only on the same connection.
    assert!(c.call("register", vec![Value::Str("1".into()), Value::Bool(true)]).is_ok());
    assert_eq!(c.call("new_oids", vec![]).unwrap_err().0, "ZODB.POSException.ReadOnlyError");
    // tpc_begin on a read-only connection closes it, as in ZEO.
    begin(&mut c, 1);
    assert!(c.is_closed());
    let (mut r, _) = Client::connect(&server.addr, true);
    assert!(
        r.call("loadBefore", vec![oid(1), Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]).is_ok()
    );
}

#[test]
fn sigterm_finishes_in_flight_commits_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--shutdown-grace", "5s"]);
    let (mut c, _) = Client::connect(&server.addr, false);
    let mut serial = [0u8; 8];
    for i in 0..20 {
        let tid = commit(&mut c, i, 1, serial, format!("rev {i}").as_bytes());
        serial = tid.as_id().unwrap();
    }
    // A client mid-transaction when SIGTERM arrives can still finish within the grace period.
    begin(&mut c, 99);
    c.call_async("storea", vec![oid(1), Value::Bytes(serial.to_vec()), Value::Bytes(b"last".to_vec()), Value::Int(99)]);
    c.call("vote", vec![Value::Int(99)]).unwrap();
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    // Finish only once the server is shutting down (it logs that when it handles the signal).
    let start = Instant::now();
    while !server.log().contains("shutting down") {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGTERM not handled:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let last = c.call("tpc_finish", vec![Value::Int(99)]).unwrap();
    drop(c);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    // Everything is there, and the index snapshot was saved.
    assert!(dir.path().join("Data.fs.rsindex").exists());
    let fs = zeo_server::storage::FileStorage::open(dir.path().join("Data.fs"), Default::default()).unwrap();
    assert_eq!(fs.load(&1u64.to_be_bytes()).unwrap(), (b"last".to_vec(), last.as_id().unwrap()));
}

/// A tiny HTTP/1.1 GET against the admin port.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn named_storages_admin_endpoints_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.fs");
    let server =
        ServerProc::start(dir.path(), &["--storage", &format!("two={}", second.display()), "--admin", "127.0.0.1:0"]);
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ready.json")).unwrap()).unwrap();
    let admin = ready["admin"].as_str().unwrap().to_string();
    let (mut one, _) = Client::connect(&server.addr, false);
    commit(&mut one, 1, 1, [0; 8], b"in one");
    // Storage "two" is separate: its own file, its own history.
    let mut two = Client::raw(&server.addr);
    two.read_frame().unwrap();
    two.write_frame(b"Z5");
    assert_eq!(
        two.call("register", vec![Value::Str("two".into()), Value::Bool(false)]).unwrap(),
        Value::Bytes(vec![0; 8])
    );
    commit(&mut two, 1, 1, [0; 8], b"in two");
    let maxtid = Value::Bytes(vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let a = one.call("loadBefore", vec![oid(1), maxtid.clone()]).unwrap();
    let b = two.call("loadBefore", vec![oid(1), maxtid]).unwrap();
    assert_eq!(a.as_tuple().unwrap()[0], Value::Bytes(b"in one".to_vec()));
    assert_eq!(b.as_tuple().unwrap()[0], Value::Bytes(b"in two".to_vec()));
    assert!(second.exists());
    // An unknown storage is a ValueError (the client retries), not a crash.
    let mut three = Client::raw(&server.addr);
    three.read_frame().unwrap();
    three.write_frame(b"Z5");
    assert_eq!(
        three.call("register", vec![Value::Str("nope".into()), Value::Bool(false)]).unwrap_err().0,
        "builtins.ValueError"
    );

    assert_eq!(http_get(&admin, "/livez"), (200, "ok".to_string()));
    assert_eq!(http_get(&admin, "/readyz").0, 200);
    let (code, status) = http_get(&admin, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["storages"]["1"]["objects"], 1);
    assert_eq!(status["storages"]["two"]["connections"], 1);
    let (code, metrics) = http_get(&admin, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "zeo_commits_total{storage=\"1\"} 1",
        "zeo_commits_total{storage=\"two\"} 1",
        "zeo_loads_total{storage=\"1\"} 1",
        "zeo_connections 3",
        "zeo_fsync_seconds_count",
        "zeo_storage_objects{storage=\"1\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in:\n{metrics}");
    }
    assert_eq!(http_get(&admin, "/nope").0, 404);
}

#[test]
fn msgpack_mode_and_the_address_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--msgpack"]);
    let mut c = Client::raw(&server.addr);
    assert_eq!(c.read_frame().unwrap(), b"M5");
    c.write_frame(b"M5");
    // The spec's msgpack register vector: (1, False, 'register', ('1', False)).
    c.write_frame(&hex::decode("9401c2a8726567697374657292a131c2").unwrap());
    let reply = message::decode(&c.read_frame().unwrap(), Encoding::Msgpack).unwrap();
    assert_eq!(reply, Message::Reply { msgid: Value::Int(1), value: Value::Bytes(vec![0; 8]) });
    drop(server);

    // Only 192.0.2.0/24 may connect: a loopback client is refused before the handshake, with a log line.
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), &["--allow", "192.0.2.0/24"]);
    let mut c = Client::raw(&server.addr);
    assert!(c.read_frame().is_none(), "a refused client must not get the handshake");
    let start = Instant::now();
    while !server.log().contains("refusing connection") {
        assert!(start.elapsed() < Duration::from_secs(5), "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.log().contains("not in the allowed networks") || server.log().contains("127.0.0.1"),
        "{}",
        server.log()
    );
}

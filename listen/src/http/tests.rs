use std::net::SocketAddr;

use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::allow::AllowList;
use crate::refusals::RefusalMetrics;

/// Generous: only a broken server makes a test wait this long.
const DEADLINE: Duration = Duration::from_secs(30);

struct Served {
    addr: SocketAddr,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(allow: &[&str], max_connections: usize, limits: HttpLimits) -> Served {
    let router = Router::new()
        .route("/status", get(|| async { "status" }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
    let allow = AllowList::new(allow.iter().map(|n| n.parse().unwrap()).collect());
    let gate = Arc::new(Gate::new("admin", allow, max_connections, &RefusalMetrics::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_http(listener, gate.clone(), router, limits, shutdown.clone()));
    Served { addr, gate, shutdown, task }
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `raw` and reads until the server closes: what the peer got back.
async fn exchange(stream: &mut TcpStream, raw: &[u8]) -> String {
    stream.write_all(raw).await.unwrap();
    read_to_close(stream).await
}

/// Everything the server sends until it closes (a reset counts as closed).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// Waits (without sleeping) until `done` holds: the server records some outcomes in the connection's
/// task just after the peer saw the close.
async fn eventually(done: impl Fn() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition reached");
}

async fn get_status(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    exchange(&mut s, b"GET /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await
}

#[tokio::test]
async fn serves_the_router() {
    let served = serve(&[], 10, HttpLimits::default()).await;
    let reply = get_status(served.addr).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("status"), "{reply}");
    served.shutdown.cancel();
    tokio::time::timeout(DEADLINE, served.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_source_outside_the_allow_list_gets_nothing() {
    let served = serve(&["127.0.0.1/32"], 10, HttpLimits::default()).await;
    let mut s = connect_from("127.0.0.2", served.addr).await;
    let reply = exchange(&mut s, b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(reply, "", "no byte for a refused address");
    assert_eq!(served.gate.metrics().count("admin", Reason::Address), 1);
    assert!(get_status(served.addr).await.starts_with("HTTP/1.1 200"), "allowed sources still served");
}

#[tokio::test]
async fn a_slow_head_is_closed_past_the_deadline_and_the_port_keeps_answering() {
    let limits = HttpLimits { head_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let served = serve(&[], 10, limits).await;
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    let reply = exchange(&mut slow, b"GET /status HTTP/1.1\r\nHost: t\r\n").await;
    assert!(!reply.contains("200"), "an unfinished head is never answered: {reply}");
    assert!(get_status(served.addr).await.starts_with("HTTP/1.1 200"));
    eventually(|| served.gate.metrics().count("admin", Reason::HeadTimeout) == 1).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_without_counting_a_refusal() {
    let limits = HttpLimits { head_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let served = serve(&[], 10, limits).await;
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let reply = exchange(&mut s, b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    eventually(|| served.gate.open_connections() == 0).await;
    assert_eq!(served.gate.metrics().count("admin", Reason::HeadTimeout), 0, "a served connection going idle");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let served = serve(&[], 2, HttpLimits::default()).await;
    let held = [TcpStream::connect(served.addr).await.unwrap(), TcpStream::connect(served.addr).await.unwrap()];
    // The two are admitted once the gate counts them; the third is then over the cap.
    eventually(|| served.gate.open_connections() == 2).await;
    let mut third = TcpStream::connect(served.addr).await.unwrap();
    let reply = exchange(&mut third, b"GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(reply, "");
    assert_eq!(served.gate.metrics().count("admin", Reason::Capacity), 1);
    drop(held);
    eventually(|| served.gate.open_connections() == 0).await;
    assert!(get_status(served.addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let limits = HttpLimits { max_body_bytes: 1000, ..HttpLimits::default() };
    let served = serve(&[], 10, limits).await;
    let post = |body: &[u8], chunked: bool| {
        let head = if chunked {
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                body.len()
            )
        } else {
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len())
        };
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        if chunked {
            raw.extend_from_slice(b"\r\n0\r\n\r\n");
        }
        raw
    };
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let ok = exchange(&mut s, &post(&[b'a'; 1000], false)).await;
    assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("1000"), "{ok}");
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let declared = exchange(&mut s, &post(&[b'a'; 1001], false)).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    let streamed = exchange(&mut s, &post(&[b'a'; 5000], true)).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "an undeclared length is cut at the limit too: {streamed}");
}

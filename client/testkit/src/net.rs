//! Blocking helpers for tests that drive a listener with raw sockets (listener bounds, allow-lists).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Polls `done` every 20 ms until it holds.
///
/// # Panics
///
/// With `what` after `limit`.
pub fn poll_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP connection to `to` from `source` (another loopback address, e.g. 127.0.0.2, to stand
/// for a host outside an allow-list), or from the default source.
///
/// # Panics
///
/// When the connection cannot be made.
pub fn connect_from(source: Option<&str>, to: SocketAddr) -> TcpStream {
    let Some(source) = source else { return TcpStream::connect(to).unwrap() };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

//! A service address on one host, for supervisors running side by side as local processes (the
//! loopback HA pair of the README): the supervisor whose server is primary listens on the service
//! address and forwards every connection to its server. Moving the address is closing the
//! listener on one side and binding it on the other, which the kernel makes exclusive: two
//! supervisors can never both hold it. Releasing also closes the connections forwarded so far,
//! so clients of a demoted server reconnect at once instead of waiting for a timeout.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::net::{TcpListener, TcpStream};

use super::{AddressMover, MoveError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The service address and where it forwards to.
#[derive(Debug)]
pub struct LocalProxy {
    service: SocketAddr,
    target: String,
    running: Mutex<Option<CancellationToken>>,
    connections: TaskTracker,
}

impl LocalProxy {
    /// A proxy for `service` forwarding to `target` (`host:port`, resolved at each connection).
    pub fn new(service: SocketAddr, target: impl Into<String>) -> Self {
        LocalProxy { service, target: target.into(), running: Mutex::new(None), connections: TaskTracker::new() }
    }

    pub fn service(&self) -> SocketAddr {
        self.service
    }

    /// Whether this process holds the address now.
    pub fn is_claimed(&self) -> bool {
        self.running.lock().expect("proxy lock poisoned").is_some()
    }

    /// Binds the service address (idempotent). Fails with `AddrInUse` while another process
    /// holds it.
    ///
    /// # Errors
    /// The bind error.
    pub async fn claim(&self) -> std::io::Result<()> {
        if self.is_claimed() {
            return Ok(());
        }
        let socket = tokio::net::TcpSocket::new_v4()?;
        // Connections of the previous holder in TIME_WAIT must not keep us from binding.
        socket.set_reuseaddr(true)?;
        socket.bind(self.service)?;
        let listener = socket.listen(1024)?;
        let token = CancellationToken::new();
        *self.running.lock().expect("proxy lock poisoned") = Some(token.clone());
        tokio::spawn(accept_loop(listener, self.target.clone(), token, self.connections.clone()));
        tracing::info!(service = %self.service, target = %self.target, "service address claimed");
        Ok(())
    }

    /// Closes the listener and every forwarded connection (idempotent).
    pub async fn release(&self) {
        let token = self.running.lock().expect("proxy lock poisoned").take();
        if let Some(t) = token {
            t.cancel();
            tracing::info!(service = %self.service, "service address released");
        }
    }
}

#[async_trait]
impl AddressMover for LocalProxy {
    async fn claim(&self) -> Result<(), MoveError> {
        LocalProxy::claim(self).await.map_err(|e| MoveError::Backend { backend: "local", source: Box::new(e) })
    }

    async fn release(&self) -> Result<(), MoveError> {
        LocalProxy::release(self).await;
        Ok(())
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        if let Some(t) = self.running.lock().expect("proxy lock poisoned").take() {
            t.cancel();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: String, token: CancellationToken, tracker: TaskTracker) {
    loop {
        let (client, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "service address accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = token.cancelled() => return,
        };
        let (target, token) = (target.clone(), token.clone());
        tracker.spawn(async move {
            let upstream = match TcpStream::connect(&target).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(%peer, %target, error = %e, "cannot reach the server behind the service address");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (mut client, mut upstream) = (client, upstream);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                () = token.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_moves_and_cuts_connections_on_release() {
        let (a, b) = (echo_server().await, echo_server().await);
        let service = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let pa = LocalProxy::new(service, a.to_string());
        let pb = LocalProxy::new(service, b.to_string());
        LocalProxy::claim(&pa).await.unwrap();
        assert!(LocalProxy::claim(&pb).await.is_err(), "only one holder at a time");
        let mut c = TcpStream::connect(service).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Moving: the old holder releases (its forwarded connections close), the new one binds.
        LocalProxy::release(&pa).await;
        let mut rest = Vec::new();
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut rest)).await.unwrap().unwrap(),
            0
        );
        AddressMover::claim(&pb).await.unwrap();
        assert!(pb.is_claimed() && !pa.is_claimed());
        let mut c = TcpStream::connect(service).await.unwrap();
        c.write_all(b"pong").await.unwrap();
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}

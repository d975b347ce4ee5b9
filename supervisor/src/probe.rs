//! A real ZEO round trip against our own server: hello, `register(storage, read_only=True)`,
//! `lastTransaction()`. A TCP connect alone would pass for a server that accepts connections
//! but no longer answers (a stalled writer thread, SIGSTOP).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeo_proto::Tid;
use zeo_proto::frame::{FrameDecoder, encode_frame};
use zeo_proto::message::{self, Encoding, Message};
use zeo_proto::pickle::Value;

/// Replies of a probe are tiny; anything bigger is not a ZEO server talking to us.
const MAX_FRAME: usize = 1 << 20;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe of {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("probe of {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("probe of {addr}: {what}")]
    Protocol { addr: String, what: String },
}

/// Probes the ZEO server at `addr`, returning its last transaction id.
///
/// # Errors
/// No complete exchange within `timeout`.
pub async fn probe(addr: &str, storage: &str, timeout: Duration) -> Result<Tid, ProbeError> {
    match tokio::time::timeout(timeout, exchange(addr, storage)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout { addr: addr.into(), after: timeout }),
    }
}

struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: FrameDecoder,
    addr: String,
}

impl Wire {
    fn protocol(&self, what: impl Into<String>) -> ProbeError {
        ProbeError::Protocol { addr: self.addr.clone(), what: what.into() }
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>, ProbeError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf).map_err(|e| self.protocol(e.to_string()))? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|source| ProbeError::Io { addr: self.addr.clone(), source })?;
            if n == 0 {
                return Err(self.protocol("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), ProbeError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        encode_frame(payload, &mut out).map_err(|e| self.protocol(e.to_string()))?;
        self.stream.write_all(&out).await.map_err(|source| ProbeError::Io { addr: self.addr.clone(), source })
    }

    /// Sends a call and returns its reply value, skipping server-initiated messages.
    async fn call(&mut self, enc: Encoding, msgid: i64, method: &str, args: Vec<Value>) -> Result<Value, ProbeError> {
        let payload =
            message::encode(&Message::call(msgid, method, args), enc).map_err(|e| self.protocol(e.to_string()))?;
        self.write_frame(&payload).await?;
        loop {
            let frame = self.read_frame().await?;
            match message::decode(&frame, enc).map_err(|e| self.protocol(e.to_string()))? {
                Message::Reply { msgid: Value::Int(id), value } if id == msgid => return Ok(value),
                Message::Error { msgid: Value::Int(id), class, .. } if id == msgid => {
                    return Err(self.protocol(format!("{method} failed: {class}")));
                }
                _ => continue,
            }
        }
    }
}

async fn exchange(addr: &str, storage: &str) -> Result<Tid, ProbeError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| ProbeError::Io { addr: addr.into(), source })?;
    let _ = stream.set_nodelay(true);
    let mut wire = Wire { stream, buf: Vec::new(), decoder: FrameDecoder::new(MAX_FRAME), addr: addr.into() };
    let hello = wire.read_frame().await?;
    let enc = Encoding::from_hello(&hello)
        .ok_or_else(|| wire.protocol(format!("announced {:?}, not Z5/M5", String::from_utf8_lossy(&hello))))?;
    // The client echoes the server's choice of encoding.
    wire.write_frame(enc.hello()).await?;
    wire.call(enc, 1, "register", vec![Value::Str(storage.into()), Value::Bool(true)]).await?;
    let tid = wire.call(enc, 2, "lastTransaction", Vec::new()).await?;
    tid.as_id().ok_or_else(|| wire.protocol(format!("lastTransaction returned {tid:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::admin_fake::{FakeServer, primary_status};

    #[tokio::test]
    async fn answers_with_the_last_tid() {
        let fake = FakeServer::start(primary_status(1)).await;
        let tid = probe(&fake.zeo_addr, "1", Duration::from_secs(5)).await.unwrap();
        assert_eq!(u64::from_be_bytes(tid), 100);
    }

    #[tokio::test]
    async fn a_stalled_server_fails_although_it_accepts_connections() {
        let fake = FakeServer::start(primary_status(1)).await;
        fake.set_stalled(true);
        let err = probe(&fake.zeo_addr, "1", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_fails() {
        let addr = format!("127.0.0.1:{}", crate::testkit::free_port());
        assert!(matches!(probe(&addr, "1", Duration::from_secs(2)).await, Err(ProbeError::Io { .. })));
    }
}

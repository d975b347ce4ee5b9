//! A connection's outgoing queue. Anything may enqueue a frame without waiting (the invalidation
//! fan-out holds a lock while it does); the connection's writer task drains it. The queue is bounded
//! in bytes: a client that stops reading is disconnected rather than allowed to grow server memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeo_proto::message::{self, Encoding, Message};
use zeo_proto::pickle::Value;

/// Handle to one connection's outgoing queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    /// Cancelling it closes the connection.
    pub close: CancellationToken,
    pub encoding: Encoding,
    pub peer: Arc<str>,
}

/// The receiving end, owned by the writer task.
#[derive(Debug)]
pub struct OutboxReceiver {
    pub rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pub queued: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(limit: usize, close: CancellationToken, encoding: Encoding, peer: Arc<str>) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        (Outbox { tx, queued: queued.clone(), limit, close, encoding, peer }, OutboxReceiver { rx, queued })
    }

    /// Queues one payload (the 4-byte length is added here). Returns false, and closes the
    /// connection, when the client is too far behind or already gone.
    pub fn send_payload(&self, payload: &[u8]) -> bool {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        if let Err(e) = zeo_proto::frame::encode_frame(payload, &mut frame) {
            tracing::error!(peer = %self.peer, error = %e, "reply too large to frame; closing the connection");
            self.close.cancel();
            return false;
        }
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::SeqCst);
        if before + len > self.limit && before > 0 {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            tracing::warn!(peer = %self.peer, queued = before, limit = self.limit, "client is not reading; closing the connection");
            self.close.cancel();
            return false;
        }
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Queues the reply to call `msgid`: its value, or an error reply (ZODB exception class, payload).
    pub fn reply(&self, msgid: Value, result: Result<Value, crate::zeo::errors::ErrorReply>) -> bool {
        let msg = match result {
            Ok(value) => Message::Reply { msgid, value },
            Err((class, payload)) => {
                tracing::debug!(peer = %self.peer, %class, "error reply");
                Message::Error { msgid, class, payload }
            }
        };
        self.send(&msg)
    }

    /// Encodes and queues a message in this connection's encoding.
    pub fn send(&self, msg: &Message) -> bool {
        match message::encode(msg, self.encoding) {
            Ok(payload) => self.send_payload(&payload),
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "cannot encode a message; closing the connection");
                self.close.cancel();
                false
            }
        }
    }
}

//! One client connection: handshake, the read loop, and the dispatch table that maps every ZEO 5
//! method (protocol spec section 3) to its handler. One task per connection, plus a writer task
//! draining its outbox; handlers that must wait (vote, finish, blob streaming, pack) start tasks of
//! their own so the connection keeps being served meanwhile.
//!
//! The handlers are `impl Conn` blocks beside the state they need: `methods/` (one file per group
//! of methods) and `blobs` (blob transfer). Adding a method is one line in `dispatch` and its
//! handler in one of those files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zeo_listen::{PreAuth, PreAuthError, Reason};
use zeo_proto::frame::{FrameDecoder, FrameError};
use zeo_proto::message::{self, Message};
use zeo_proto::pickle::Value;

use super::Server;
use super::commit::TxnSlot;
use super::errors::{ErrorReply, exception};
use super::host::{ConnId, StorageHost};
use super::methods::iter::Iterators;
use super::outbox::{Outbox, OutboxReceiver};

/// Why a connection is closed by the server.
#[derive(Debug)]
enum Close {
    /// Something the client did or that failed (logged; before `register`, as a refusal).
    Error(String),
    /// A pre-register bound: the register deadline, the pre-register frame cap or the input budget.
    Refused(PreAuthError),
    /// The client's protocol greeting is not the one the server announced.
    Handshake(String),
}

/// How much one read may add to a pre-register connection's buffer: its budget reservation grows
/// by this much ahead of each read, so the budget covers every byte buffered.
const PREAUTH_READ_CHUNK: usize = 8 << 10;
/// The read buffer once registered (big frames are expected then).
const READ_BUFFER: usize = 64 << 10;

/// How the read loop ended without an error.
enum Ended {
    /// The client went away (or the server forced the close): abandon everything now.
    Gone,
    /// Graceful shutdown, and no transaction is in progress: finish the tasks in flight, then close.
    Drained,
}

/// State of one connection. The handlers in `methods/` and `blobs` work on it.
pub(super) struct Conn {
    pub(super) id: ConnId,
    pub(super) server: Arc<Server>,
    pub(super) outbox: Outbox,
    /// The access policy made this client read-only (certificate identity).
    pub(super) access_read_only: bool,
    /// The storage this connection registered with; `None` until `register`.
    pub(super) host: Option<Arc<StorageHost>>,
    pub(super) read_only: bool,
    pub(super) slot: TxnSlot,
    pub(super) iterators: Iterators,
    /// The blob upload in progress (`storeBlobStart` to `storeBlobEnd`): staging path and file.
    pub(super) upload: Option<(std::path::PathBuf, std::fs::File)>,
    /// Vote and finish tasks of this connection; waited for before a graceful close.
    pub(super) tasks: tokio_util::task::TaskTracker,
}

/// How a method is answered, with its handler.
#[derive(Clone, Copy)]
enum Reply {
    /// The handler's result is the reply, sent at once.
    Immediate(fn(&mut Conn, &[Value]) -> Result<Value, ErrorReply>),
    /// The handler answers `msgid` itself: from a task it starts (commit lock, fsync, blob
    /// streaming, pack), or under a lock it takes (`loadBefore`, ordered with invalidations).
    Deferred(fn(&mut Conn, Value, &[Value])),
    /// No reply: clients send these async. A failure closes the connection, since it cannot be
    /// reported.
    Async(fn(&mut Conn, &[Value]) -> Result<(), ErrorReply>),
}

/// The method is also accepted the other way round (ZEO dispatches both ways, and clients do call
/// these both ways): an async method called synchronously is answered None (or its error), a
/// deferred one sent async runs unanswered.
const BOTH_WAYS: bool = true;
/// The method is accepted only as its `Reply` says; the other way closes the connection.
const ONE_WAY: bool = false;

/// Every ZEO method the server answers: its handler, how its reply is sent, and whether it may
/// also be called the other way round. `None`: an unknown method (the connection is closed).
fn dispatch(method: &str) -> Option<(Reply, bool)> {
    use Reply::{Async, Deferred, Immediate};
    Some(match method {
        // methods/session.rs
        "register" => (Immediate(Conn::register), ONE_WAY),
        "get_info" => (Immediate(Conn::get_info), ONE_WAY),
        "lastTransaction" => (Immediate(Conn::last_transaction), ONE_WAY),
        "getInvalidations" => (Immediate(Conn::get_invalidations), ONE_WAY),
        "server_status" => (Immediate(Conn::server_status), ONE_WAY),
        "ping" => (Immediate(Conn::ping), ONE_WAY),
        "set_client_label" => (Async(Conn::set_client_label), BOTH_WAYS),
        // methods/load.rs
        "loadBefore" => (Deferred(Conn::load_before), ONE_WAY),
        "loadSerial" => (Immediate(Conn::load_serial), ONE_WAY),
        "getTid" => (Immediate(Conn::get_tid), ONE_WAY),
        // methods/history.rs
        "history" => (Immediate(Conn::history), ONE_WAY),
        "undoLog" => (Immediate(Conn::undo_log), ONE_WAY),
        "undoInfo" => (Immediate(Conn::undo_info), ONE_WAY),
        // methods/txn.rs
        "new_oids" => (Immediate(Conn::new_oids), ONE_WAY),
        "new_oid" => (Immediate(Conn::new_oid), ONE_WAY),
        "tpc_begin" => (Async(Conn::tpc_begin), BOTH_WAYS),
        "storea" => (Async(Conn::storea), BOTH_WAYS),
        "checkCurrentSerialInTransaction" => (Async(Conn::check_current_serial), BOTH_WAYS),
        "deleteObject" => (Async(Conn::delete_object), BOTH_WAYS),
        "restorea" => (Async(Conn::restorea), BOTH_WAYS),
        "undoa" => (Async(Conn::undoa), BOTH_WAYS),
        "vote" => (Deferred(Conn::vote), ONE_WAY),
        "tpc_finish" => (Deferred(Conn::tpc_finish), ONE_WAY),
        "tpc_abort" => (Immediate(Conn::tpc_abort), ONE_WAY),
        // methods/iter.rs
        "iterator_start" => (Immediate(Conn::iterator_start), ONE_WAY),
        "iterator_next" => (Immediate(Conn::iterator_next), ONE_WAY),
        "iterator_record_start" => (Immediate(Conn::iterator_record_start), ONE_WAY),
        "iterator_record_next" => (Immediate(Conn::iterator_record_next), ONE_WAY),
        "iterator_gc" => (Async(Conn::iterator_gc), BOTH_WAYS),
        "record_iternext" => (Immediate(Conn::record_iternext), ONE_WAY),
        // methods/pack.rs
        "pack" => (Deferred(Conn::pack), BOTH_WAYS),
        // blobs.rs
        "sendBlob" => (Deferred(Conn::send_blob), ONE_WAY),
        "storeBlobStart" => (Async(Conn::store_blob_start), BOTH_WAYS),
        "storeBlobChunk" => (Async(Conn::store_blob_chunk), BOTH_WAYS),
        "storeBlobEnd" => (Async(Conn::store_blob_end), BOTH_WAYS),
        "storeBlobShared" => (Async(Conn::store_blob_shared), ONE_WAY),
        _ => return None,
    })
}

/// Serves one accepted (and, with TLS, handshaken) connection. `preauth` bounds it until
/// `register`: the deadline counts from accept, frames are capped small and buffered input draws
/// from the server's pre-auth budget.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
pub async fn serve<S>(
    stream: S,
    addr: SocketAddr,
    preauth: PreAuth,
    access_read_only: bool,
    server: Arc<Server>,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer: Arc<str> = Arc::from(addr.to_string());
    let (mut rd, wr) = tokio::io::split(stream);
    let close = force.child_token();
    let encoding = server.opts.encoding;
    let (outbox, rx) = Outbox::new(server.opts.output_limit, close.clone(), encoding, peer.clone());
    let writer = tokio::spawn(write_loop(wr, rx, close.clone(), server.clone()));
    outbox.send_payload(encoding.hello());
    let id = server.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        id,
        server: server.clone(),
        outbox,
        access_read_only,
        host: None,
        read_only: false,
        slot: Arc::new(std::sync::Mutex::new(None)),
        iterators: Iterators::new(),
        upload: None,
        tasks: tokio_util::task::TaskTracker::new(),
    };
    server.metrics.connections.inc();
    server.metrics.connections_accepted.inc();
    let result = conn.read_loop(&mut rd, preauth, &close, &shutdown).await;
    conn.tasks.close();
    match &result {
        Ok(Ended::Drained) => {
            tracing::debug!(%peer, "closing connection for shutdown");
            // The last commit's finish may still be waiting for its fsync: let it answer.
            tokio::select! {
                _ = conn.tasks.wait() => {}
                _ = close.cancelled() => {}
            }
        }
        Ok(Ended::Gone) => {
            tracing::debug!(%peer, "connection closed");
            close.cancel();
        }
        // Before register nobody is authenticated: such closes are refusals, logged rate-limited so
        // a flood of junk connections cannot flood the log.
        Err(Close::Refused(why)) => {
            server.gate.refuse(addr, why.reason(), &why);
            close.cancel();
        }
        Err(Close::Handshake(why)) => {
            server.gate.refuse(addr, Reason::Handshake, &why);
            close.cancel();
        }
        Err(Close::Error(why)) if conn.host.is_none() => {
            server.gate.refuse(addr, Reason::Protocol, &why);
            close.cancel();
        }
        Err(Close::Error(why)) => {
            tracing::warn!(%peer, reason = %why, "closing connection");
            close.cancel();
        }
    }
    // Tear down: leave the fan-out, abandon the transaction (aborting a voted one and releasing
    // the commit lock), let the writer flush what is queued.
    if let Some(h) = &conn.host {
        h.unregister(conn.id);
    }
    conn.slot.lock().expect("transaction slot poisoned").take();
    if let Some((path, _)) = conn.upload.take() {
        let _ = std::fs::remove_file(path);
    }
    drop(conn);
    close.cancel();
    let _ = writer.await;
    server.metrics.connections.dec();
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: OutboxReceiver,
    close: CancellationToken,
    server: Arc<Server>,
) {
    let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
    loop {
        let frame = tokio::select! {
            f = rx.rx.recv() => f,
            _ = close.cancelled() => {
                // Best effort: flush replies already queued (e.g. the answer to ruok), briefly.
                let drain = async {
                    while let Ok(f) = rx.rx.try_recv() {
                        wr.write_all(&f).await?;
                    }
                    wr.flush().await
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                break;
            }
        };
        let Some(frame) = frame else { break };
        let len = frame.len();
        if wr.write_all(&frame).await.is_err() {
            close.cancel();
            break;
        }
        rx.queued.fetch_sub(len, Ordering::SeqCst);
        server.metrics.bytes_sent.inc_by(len as u64);
        if rx.rx.is_empty() && wr.flush().await.is_err() {
            close.cancel();
            break;
        }
    }
    let _ = wr.shutdown().await;
}

impl Conn {
    /// No transaction in progress on this connection.
    fn idle(&self) -> bool {
        self.slot.lock().expect("transaction slot poisoned").is_none()
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        preauth: PreAuth,
        close: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<Ended, Close> {
        let mut decoder = FrameDecoder::new(preauth.limits().max_frame);
        // `Some` until register: the connection is not authenticated yet.
        let mut preauth = Some(preauth);
        let mut buf = Vec::with_capacity(PREAUTH_READ_CHUNK);
        let mut handshaken = false;
        let mut draining = false;
        loop {
            while let Some(frame) = decoder.decode(&mut buf).map_err(|e| frame_error(e, preauth.is_some()))? {
                self.server.metrics.bytes_received.inc_by(frame.len() as u64 + 4);
                if !handshaken {
                    if frame == b"ruok" {
                        self.outbox.send_payload(self.server.ruok_json().as_bytes());
                        return Ok(Ended::Drained);
                    }
                    if message::Encoding::from_hello(&frame) != Some(self.server.opts.encoding) {
                        return Err(Close::Handshake(format!("bad handshake {:?}", String::from_utf8_lossy(&frame))));
                    }
                    handshaken = true;
                    continue;
                }
                let msg = message::decode(&frame, self.server.opts.encoding)
                    .map_err(|e| Close::Error(format!("undecodable message: {e}")))?;
                self.handle(msg)?;
                if self.host.is_some()
                    && let Some(registered) = preauth.take()
                {
                    // Registered: the pre-auth bounds end, its budget goes back, full frames allowed.
                    registered.authenticated();
                    decoder = FrameDecoder::new(self.server.opts.max_frame);
                    buf.reserve(READ_BUFFER);
                }
            }
            if draining && self.idle() {
                return Ok(Ended::Drained);
            }
            let n = match &mut preauth {
                Some(pre) => {
                    pre.reserve(buf.len() + PREAUTH_READ_CHUNK).map_err(Close::Refused)?;
                    buf.reserve(PREAUTH_READ_CHUNK);
                    let mut chunk = (&mut *rd).take(PREAUTH_READ_CHUNK as u64);
                    tokio::select! {
                        // A peer that resets before registering just went away: nothing to report.
                        r = chunk.read_buf(&mut buf) => match r {
                            Ok(n) => n,
                            Err(_) => return Ok(Ended::Gone),
                        },
                        why = pre.expired("register") => return Err(Close::Refused(why)),
                        _ = close.cancelled() => return Ok(Ended::Gone),
                        _ = shutdown.cancelled(), if !draining => {
                            draining = true;
                            continue;
                        }
                    }
                }
                None => tokio::select! {
                    r = rd.read_buf(&mut buf) => r.map_err(|e| Close::Error(format!("read: {e}")))?,
                    _ = close.cancelled() => return Ok(Ended::Gone),
                    _ = shutdown.cancelled(), if !draining => {
                        draining = true;
                        continue;
                    }
                },
            };
            if n == 0 {
                return Ok(Ended::Gone);
            }
        }
    }

    pub(super) fn reply(&self, msgid: Value, result: Result<Value, ErrorReply>) {
        self.outbox.reply(msgid, result);
    }

    /// Runs one message through the dispatch table.
    fn handle(&mut self, msg: Message) -> Result<(), Close> {
        let Message::Call { msgid, is_async, method, args } = msg else {
            // Heartbeats, and replies (which clients never send us), are ignored.
            return Ok(());
        };
        if self.host.is_none() && method != "register" {
            return Err(Close::Error(format!("{method}() before register")));
        }
        let Some((reply, both_ways)) = dispatch(&method) else { return Err(unknown(&method, is_async)) };
        match (reply, is_async) {
            (Reply::Immediate(handler), false) => {
                let result = handler(self, &args);
                self.reply(msgid, result);
            }
            (Reply::Deferred(handler), false) => handler(self, msgid, &args),
            (Reply::Async(handler), true) => handler(self, &args).map_err(|e| async_failed(&method, e))?,
            (Reply::Async(handler), false) if both_ways => {
                let result = handler(self, &args).map(|()| Value::None);
                self.reply(msgid, result);
            }
            // Msgid 0: nobody waits for an answer.
            (Reply::Deferred(handler), true) if both_ways => handler(self, Value::Int(0), &args),
            _ => return Err(unknown(&method, is_async)),
        }
        Ok(())
    }

    pub(super) fn host(&self) -> &Arc<StorageHost> {
        self.host.as_ref().expect("checked: every call but register needs a registered storage")
    }
}

/// The close for a frame the decoder refuses: before register, the pre-register cap.
fn frame_error(e: FrameError, before_register: bool) -> Close {
    match e {
        FrameError::TooLarge { len, max } if before_register => {
            Close::Refused(PreAuthError::FrameTooLarge { len, max })
        }
        e => Close::Error(format!("bad frame: {e}")),
    }
}

/// The close for a method the table does not have (or not called that way).
fn unknown(method: &str, is_async: bool) -> Close {
    if is_async {
        let why = exception("builtins.AttributeError", vec![Value::Str(format!("unknown async method {method}"))]);
        async_failed(method, why)
    } else {
        Close::Error(format!("unknown method {method:?}"))
    }
}

/// The close for a failed async call: there is no reply to carry the error.
fn async_failed(method: &str, (class, payload): ErrorReply) -> Close {
    Close::Error(format!("async {method}() failed: {class} {payload:?}"))
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).field("peer", &self.outbox.peer).finish()
    }
}

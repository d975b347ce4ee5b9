//! One client connection: handshake, the read loop, and the dispatch of every ZEO 5 method
//! (protocol spec section 3). One task per connection, plus a writer task draining its outbox;
//! vote and finish run as tasks of their own so the connection keeps being served meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zeo_proto::frame::FrameDecoder;
use zeo_proto::message::{self, Message};
use zeo_proto::pickle::Value;

use super::convert::{
    WireError, bytes_arg, exception, history_dict, id_arg, key_error, matches_spec, read_only, storage_error,
    transaction_error, undo_dict, value_error,
};
use super::host::{ConnId, StorageHost};
use super::outbox::{Outbox, OutboxReceiver};
use super::txn::{self, Phase, ServerTxn, TaskCtx, TxnSlot};
use super::{Server, blobs};
use crate::storage::{Op, StorageError, Transaction, TransactionIterator, TransactionRecord, TxnMeta, parse_undo_id};

/// Blob data goes to clients in chunks of this size, as ZEO sends them.
const BLOB_CHUNK: usize = 59_000;

/// Why a connection is closed by the server (logged).
#[derive(Debug)]
struct Close(String);

/// How the read loop ended without an error.
enum Ended {
    /// The client went away (or the server forced the close): abandon everything now.
    Gone,
    /// Graceful shutdown, and no transaction is in progress: finish the tasks in flight, then close.
    Drained,
}

struct IterState {
    inner: TransactionIterator,
    last: Option<TransactionRecord>,
}

enum Iter {
    Txns(Box<IterState>),
    Records(std::vec::IntoIter<crate::storage::DataRecord>),
}

/// State of one connection.
struct Conn {
    id: ConnId,
    server: Arc<Server>,
    outbox: Outbox,
    /// The access policy made this client read-only (certificate identity).
    role_read_only: bool,
    host: Option<Arc<StorageHost>>,
    read_only: bool,
    slot: TxnSlot,
    iterators: HashMap<i64, Iter>,
    next_iid: i64,
    upload: Option<(std::path::PathBuf, std::fs::File)>,
    /// Vote and finish tasks of this connection; waited for before a graceful close.
    tasks: tokio_util::task::TaskTracker,
}

/// Serves one accepted (and, with TLS, authenticated) connection until the client leaves. On
/// `shutdown` an idle connection closes at once and one in a transaction is served until that
/// transaction ends; `force` closes it regardless (end of the grace period).
pub async fn serve<S>(
    stream: S,
    peer: Arc<str>,
    role_read_only: bool,
    server: Arc<Server>,
    shutdown: CancellationToken,
    force: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
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
        role_read_only,
        host: None,
        read_only: false,
        slot: Arc::new(std::sync::Mutex::new(None)),
        iterators: HashMap::new(),
        next_iid: 1,
        upload: None,
        tasks: tokio_util::task::TaskTracker::new(),
    };
    server.metrics.connections.inc();
    server.metrics.connections_accepted.inc();
    let result = conn.read_loop(&mut rd, &close, &shutdown).await;
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
        Err(Close(why)) => {
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

fn arg(args: &[Value], i: usize) -> Option<&Value> {
    args.get(i).filter(|v| !v.is_none())
}

fn int_arg(args: &[Value], i: usize, default: i64) -> i64 {
    arg(args, i).and_then(Value::as_int).unwrap_or(default)
}

/// A serial: 8 bytes, or None for "a new object" (ZODB passes None), which is z64.
fn serial_arg(v: Option<&Value>) -> Result<[u8; 8], WireError> {
    match v {
        None | Some(Value::None) => Ok([0; 8]),
        Some(v) => id_arg(Some(v), "serial"),
    }
}

fn bytes_list(oids: impl IntoIterator<Item = [u8; 8]>) -> Value {
    Value::List(oids.into_iter().map(|o| Value::Bytes(o.to_vec())).collect())
}

impl Conn {
    /// No transaction in progress on this connection.
    fn idle(&self) -> bool {
        self.slot.lock().expect("transaction slot poisoned").is_none()
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        close: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<Ended, Close> {
        let mut decoder = FrameDecoder::new(self.server.opts.max_frame);
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut handshaken = false;
        let mut draining = false;
        loop {
            while let Some(frame) = decoder.decode(&mut buf).map_err(|e| Close(format!("bad frame: {e}")))? {
                self.server.metrics.bytes_received.inc_by(frame.len() as u64 + 4);
                if !handshaken {
                    if frame == b"ruok" {
                        self.outbox.send_payload(self.server.ruok_json().as_bytes());
                        return Ok(Ended::Drained);
                    }
                    if message::Encoding::from_hello(&frame) != Some(self.server.opts.encoding) {
                        return Err(Close(format!("bad handshake {:?}", String::from_utf8_lossy(&frame))));
                    }
                    handshaken = true;
                    continue;
                }
                let msg = message::decode(&frame, self.server.opts.encoding)
                    .map_err(|e| Close(format!("undecodable message: {e}")))?;
                self.handle(msg)?;
            }
            if draining && self.idle() {
                return Ok(Ended::Drained);
            }
            let n = tokio::select! {
                r = rd.read_buf(&mut buf) => r.map_err(|e| Close(format!("read: {e}")))?,
                _ = close.cancelled() => return Ok(Ended::Gone),
                _ = shutdown.cancelled(), if !draining => {
                    draining = true;
                    continue;
                }
            };
            if n == 0 {
                return Ok(Ended::Gone);
            }
        }
    }

    fn reply(&self, msgid: Value, result: Result<Value, WireError>) {
        self.outbox.reply(msgid, result);
    }

    fn handle(&mut self, msg: Message) -> Result<(), Close> {
        let Message::Call { msgid, is_async, method, args } = msg else {
            // Heartbeats, and replies (which clients never send us), are ignored.
            return Ok(());
        };
        if self.host.is_none() && method != "register" {
            return Err(Close(format!("{method}() before register")));
        }
        if is_async {
            return self
                .handle_async(&method, &args)
                .map_err(|(class, payload)| Close(format!("async {method}() failed: {class} {payload:?}")));
        }
        match method.as_str() {
            "loadBefore" => {
                self.load_before(msgid, &args);
                Ok(())
            }
            "vote" => {
                self.vote(msgid, &args);
                Ok(())
            }
            "tpc_finish" => {
                self.tpc_finish(msgid, &args);
                Ok(())
            }
            "sendBlob" => {
                self.send_blob(msgid, &args);
                Ok(())
            }
            "pack" => {
                self.pack(msgid, &args);
                Ok(())
            }
            _ => {
                let result = self.call(&method, &args)?;
                self.reply(msgid, result);
                Ok(())
            }
        }
    }

    fn host(&self) -> &Arc<StorageHost> {
        self.host.as_ref().expect("checked: every call but register needs a registered storage")
    }

    /// Synchronous methods answered on the spot. `Err(Close)` for protocol violations that end the
    /// connection (an unknown method).
    fn call(&mut self, method: &str, args: &[Value]) -> Result<Result<Value, WireError>, Close> {
        let r = match method {
            "register" => self.register(args),
            "get_info" => Ok(self.get_info()),
            "lastTransaction" => Ok(Value::Bytes(self.host().last_tid().to_vec())),
            "getInvalidations" => id_arg(arg(args, 0), "tid").map(|tid| match self.host().get_invalidations(&tid) {
                Some((t, oids)) => Value::Tuple(vec![Value::Bytes(t.to_vec()), bytes_list(oids)]),
                None => Value::None,
            }),
            "loadSerial" => self.with_oid_tid(args, |h, oid, tid| h.fs.load_serial(oid, tid).map(Value::Bytes)),
            "getTid" => id_arg(arg(args, 0), "oid").and_then(|oid| {
                self.host().fs.get_tid(&oid).map(|t| Value::Bytes(t.to_vec())).map_err(|e| storage_error(&e))
            }),
            "history" => id_arg(arg(args, 0), "oid").and_then(|oid| {
                let size = usize::try_from(int_arg(args, 1, 1).max(1)).unwrap_or(1);
                self.host()
                    .fs
                    .history(&oid, size)
                    .map(|h| Value::List(h.iter().map(history_dict).collect()))
                    .map_err(|e| storage_error(&e))
            }),
            "new_oids" => self.new_oids(int_arg(args, 0, 100).clamp(1, 100)),
            "new_oid" => self.new_oids(1).map(|v| match v {
                Value::List(mut l) => l.pop().unwrap_or(Value::None),
                other => other,
            }),
            "tpc_abort" => Ok(self.tpc_abort(args)),
            "undoLog" => self.undo_info(int_arg(args, 0, 0), int_arg(args, 1, -20), None),
            "undoInfo" => {
                let spec = match arg(args, 2) {
                    Some(Value::Dict(d)) => Some(d.clone()),
                    _ => None,
                };
                self.undo_info(int_arg(args, 0, 0), int_arg(args, 1, -20), spec)
            }
            "iterator_start" => self.iterator_start(args),
            "iterator_next" => self.iterator_next(args),
            "iterator_record_start" => self.iterator_record_start(args),
            "iterator_record_next" => self.iterator_record_next(args),
            "record_iternext" => self.record_iternext(args),
            "server_status" => Ok(self.server.status_value(self.host())),
            "ping" => Ok(Value::None),
            // Methods clients normally send async, called synchronously (ZEO dispatches both ways).
            "set_client_label"
            | "iterator_gc"
            | "tpc_begin"
            | "storea"
            | "checkCurrentSerialInTransaction"
            | "deleteObject"
            | "restorea"
            | "undoa"
            | "storeBlobStart"
            | "storeBlobChunk"
            | "storeBlobEnd" => self.handle_async(method, args).map(|()| Value::None),
            other => return Err(Close(format!("unknown method {other:?}"))),
        };
        Ok(r)
    }

    fn with_oid_tid(
        &self,
        args: &[Value],
        f: impl FnOnce(&StorageHost, &[u8; 8], &[u8; 8]) -> Result<Value, StorageError>,
    ) -> Result<Value, WireError> {
        let oid = id_arg(arg(args, 0), "oid")?;
        let tid = id_arg(arg(args, 1), "tid")?;
        f(self.host(), &oid, &tid).map_err(|e| storage_error(&e))
    }

    fn register(&mut self, args: &[Value]) -> Result<Value, WireError> {
        if self.host.is_some() {
            return Err(value_error("duplicate register() call"));
        }
        let name = match arg(args, 0) {
            Some(Value::Str(s)) => s.clone(),
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => "1".to_string(),
        };
        let Some(host) = self.server.hosts.get(&name).cloned() else {
            tracing::warn!(peer = %self.outbox.peer, storage = %name, "register for an unknown storage");
            return Err(value_error(&format!("unknown storage: {name}")));
        };
        let wants_read_only = arg(args, 1).is_some_and(Value::is_truthy);
        if !wants_read_only && (self.server.opts.read_only || host.is_read_only() || self.role_read_only) {
            return Err(read_only());
        }
        self.read_only = wants_read_only || self.server.opts.read_only || host.is_read_only() || self.role_read_only;
        let last = host.register(self.id, self.outbox.clone());
        tracing::debug!(peer = %self.outbox.peer, storage = %name, read_only = self.read_only, "registered");
        self.host = Some(host);
        Ok(Value::Bytes(last.to_vec()))
    }

    fn get_info(&self) -> Value {
        let h = self.host();
        let mut interfaces = Vec::new();
        let iface = |name: &str| Value::Tuple(vec![Value::Str("ZODB.interfaces".into()), Value::Str(name.into())]);
        if h.blobs.is_some() {
            interfaces.push(iface("IBlobStorageRestoreable"));
            interfaces.push(iface("IBlobStorage"));
        }
        for name in [
            "IStorageRestoreable",
            "IStorageIteration",
            "IStorageUndoable",
            "IStorageCurrentRecordIteration",
            "IExternalGC",
            "IStorage",
        ] {
            interfaces.push(iface(name));
        }
        interfaces.push(Value::Tuple(vec![Value::Str("zope.interface".into()), Value::Str("Interface".into())]));
        let s = |k: &str| Value::Str(k.into());
        Value::Dict(vec![
            (s("length"), Value::Int(i64::try_from(h.fs.len()).unwrap_or(i64::MAX))),
            (s("size"), Value::Int(i64::try_from(h.fs.size()).unwrap_or(i64::MAX))),
            (s("name"), Value::Str(h.fs.path().display().to_string())),
            (s("supportsUndo"), Value::Bool(true)),
            (s("supports_record_iternext"), Value::Bool(true)),
            (s("interfaces"), Value::Tuple(interfaces)),
        ])
    }

    fn load_before(&self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        h.stats.loads.fetch_add(1, Ordering::Relaxed);
        h.metrics.loads.inc();
        let (oid, tid) = match (id_arg(arg(args, 0), "oid"), id_arg(arg(args, 1), "tid")) {
            (Ok(o), Ok(t)) => (o, t),
            (Err(e), _) | (_, Err(e)) => return self.reply(msgid, Err(e)),
        };
        // Compute and queue the reply under the publication read lock: a reply computed before a
        // commit is queued before that commit's invalidation (see host.rs).
        let _ordered = h.read();
        let result = match h.fs.load_before(&oid, &tid) {
            Ok(Some(lb)) => Ok(Value::Tuple(vec![
                Value::Bytes(lb.data),
                Value::Bytes(lb.start.to_vec()),
                lb.end.map_or(Value::None, |e| Value::Bytes(e.to_vec())),
            ])),
            Ok(None) => Ok(Value::None),
            Err(e) => Err(storage_error(&e)),
        };
        self.reply(msgid, result);
    }

    fn new_oids(&self, n: i64) -> Result<Value, WireError> {
        if self.read_only {
            return Err(read_only());
        }
        let n = u64::try_from(n).unwrap_or(1);
        self.host().fs.new_oids(n).map(bytes_list).map_err(|e| storage_error(&e))
    }

    fn task_ctx(&self) -> TaskCtx {
        TaskCtx {
            conn: self.id,
            outbox: self.outbox.clone(),
            slot: self.slot.clone(),
            host: self.host().clone(),
            close: self.outbox.close.clone(),
            transaction_timeout: self.server.opts.transaction_timeout,
            metrics: self.server.metrics.clone(),
        }
    }

    /// Async calls: errors close the connection (they cannot be reported).
    fn handle_async(&mut self, method: &str, args: &[Value]) -> Result<(), WireError> {
        match method {
            "tpc_begin" => self.tpc_begin(args),
            "storea" => {
                let oid = id_arg(arg(args, 0), "oid")?;
                let serial = serial_arg(args.get(1))?;
                let data = bytes_arg(arg(args, 2));
                self.host().stats.stores.fetch_add(1, Ordering::Relaxed);
                self.host().metrics.stores.inc();
                self.with_txn(arg(args, 3), |t| {
                    t.invalidate.push(oid);
                    t.engine.as_mut().map_or(Ok(()), |e| e.store(oid, serial, data))
                })
            }
            "checkCurrentSerialInTransaction" => {
                let oid = id_arg(arg(args, 0), "oid")?;
                let serial = serial_arg(args.get(1))?;
                self.with_txn(arg(args, 2), |t| {
                    t.engine.as_mut().map_or(Ok(()), |e| e.check_current_serial(oid, serial))
                })
            }
            "deleteObject" => {
                let oid = id_arg(arg(args, 0), "oid")?;
                let serial = serial_arg(args.get(1))?;
                self.with_txn(arg(args, 2), |t| {
                    // The reference server does not invalidate deletions; we do, so no client keeps
                    // a deleted object in its cache.
                    t.invalidate.push(oid);
                    t.engine.as_mut().map_or(Ok(()), |e| e.delete_object(oid, serial))
                })
            }
            "restorea" => {
                let oid = id_arg(arg(args, 0), "oid")?;
                let serial = serial_arg(args.get(1))?;
                let data = match args.get(2) {
                    Some(Value::None) | None => None,
                    Some(v) => Some(bytes_arg(Some(v))),
                };
                let prev_txn = arg(args, 3).and_then(Value::as_id);
                self.host().stats.stores.fetch_add(1, Ordering::Relaxed);
                self.with_txn(arg(args, 4), |t| {
                    t.invalidate.push(oid);
                    t.engine.as_mut().map_or(Ok(()), |e| e.restore(oid, serial, data, prev_txn))
                })
            }
            "undoa" => {
                let id = bytes_arg(arg(args, 0));
                self.with_txn(arg(args, 1), |t| match parse_undo_id(&id) {
                    Ok(tid) => t.engine.as_mut().map_or(Ok(()), |e| e.undo(tid)),
                    Err(e) => {
                        t.deferred.get_or_insert(e);
                        Ok(())
                    }
                })
            }
            "storeBlobStart" => {
                let dir = self.host().blobs.clone().ok_or_else(|| {
                    storage_error(&StorageError::Transaction("this storage has no blob directory".into()))
                })?;
                let staged =
                    dir.temp_file().map_err(|e| exception("builtins.OSError", vec![Value::Str(e.to_string())]))?;
                if let Some((old, _)) = self.upload.replace(staged) {
                    let _ = std::fs::remove_file(old);
                }
                Ok(())
            }
            "storeBlobChunk" => {
                let chunk = bytes_arg(arg(args, 0));
                let (_, file) =
                    self.upload.as_mut().ok_or_else(|| transaction_error("storeBlobChunk without storeBlobStart"))?;
                blobs::append(file, &chunk).map_err(|e| exception("builtins.OSError", vec![Value::Str(e.to_string())]))
            }
            "storeBlobEnd" => {
                let oid = id_arg(arg(args, 0), "oid")?;
                let serial = serial_arg(args.get(1))?;
                let data = bytes_arg(arg(args, 2));
                let (path, file) =
                    self.upload.take().ok_or_else(|| transaction_error("storeBlobEnd without storeBlobStart"))?;
                drop(file);
                self.with_txn(arg(args, 3), |t| {
                    t.blobs.push((oid, path));
                    // Clients send a plain storea of the same record first; storing it twice would
                    // write two records (and make the transaction impossible to undo).
                    let already = t.engine.as_ref().is_some_and(|e| {
                        e.ops()
                            .iter()
                            .any(|op| matches!(op, Op::Store { oid: o, data: d, .. } if *o == oid && *d == data))
                    });
                    if already {
                        return Ok(());
                    }
                    t.invalidate.push(oid);
                    t.engine.as_mut().map_or(Ok(()), |e| e.store(oid, serial, data))
                })
            }
            "storeBlobShared" => Err(storage_error(&StorageError::Transaction(
                "shared blob directories are not supported; use a client blob cache".into(),
            ))),
            "iterator_gc" => {
                if let Some(ids) = arg(args, 0).and_then(Value::as_seq) {
                    for id in ids.iter().filter_map(Value::as_int) {
                        self.iterators.remove(&id);
                    }
                }
                Ok(())
            }
            "set_client_label" => {
                tracing::debug!(peer = %self.outbox.peer, label = ?arg(args, 0), "client label");
                Ok(())
            }
            "pack" => {
                self.pack(Value::Int(0), args);
                Ok(())
            }
            other => {
                Err(exception("builtins.AttributeError", vec![Value::Str(format!("unknown async method {other}"))]))
            }
        }
    }

    fn tpc_begin(&mut self, args: &[Value]) -> Result<(), WireError> {
        if self.read_only {
            return Err(read_only());
        }
        let id = args.first().cloned().unwrap_or(Value::None);
        {
            let slot = self.slot.lock().expect("transaction slot poisoned");
            if let Some(t) = slot.as_ref() {
                if t.id == id {
                    return Ok(()); // a duplicate tpc_begin is ignored
                }
                return Err(transaction_error("tpc_begin while another transaction is in progress"));
            }
        }
        let extension = match arg(args, 3).map(super::convert::as_plain_dict) {
            Some(Some(items)) if !items.is_empty() => zeo_proto::pickle::encode_memo(&Value::Dict(items)),
            _ => Vec::new(),
        };
        let mut meta = TxnMeta::new(bytes_arg(arg(args, 1)), bytes_arg(arg(args, 2)), extension);
        meta.tid = arg(args, 4).and_then(Value::as_id);
        if let Some(status) = arg(args, 5).and_then(|v| {
            v.as_str().map(str::to_string).or_else(|| v.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
        }) {
            meta.status = status.bytes().next().unwrap_or(b' ');
        }
        let txn = ServerTxn::new(id, self.host().clone(), Transaction::begin(meta));
        *self.slot.lock().expect("transaction slot poisoned") = Some(txn);
        Ok(())
    }

    /// Runs `f` on the open transaction named `id`; a missing or different transaction is a
    /// StorageTransactionError (which closes the connection, as in ZEO).
    fn with_txn(
        &mut self,
        id: Option<&Value>,
        f: impl FnOnce(&mut ServerTxn) -> Result<(), StorageError>,
    ) -> Result<(), WireError> {
        let mut slot = self.slot.lock().expect("transaction slot poisoned");
        let t = match slot.as_mut() {
            Some(t) if Some(&t.id) == id && t.phase == Phase::Open => t,
            Some(_) => {
                return Err(transaction_error(
                    "operation for a transaction that is not the current one, or already voting",
                ));
            }
            None => return Err(transaction_error("no transaction in progress")),
        };
        f(t).map_err(|e| storage_error(&e))
    }

    fn vote(&mut self, msgid: Value, args: &[Value]) {
        let id = args.first();
        let round = {
            let mut slot = self.slot.lock().expect("transaction slot poisoned");
            match slot.as_mut() {
                Some(t) if Some(&t.id) == id && t.phase == Phase::Open => {
                    if let Some(e) = t.deferred.take() {
                        slot.take();
                        drop(slot);
                        return self.reply(msgid, Err(storage_error(&e)));
                    }
                    t.phase = Phase::Voting;
                    t.vote_round += 1;
                    t.vote_round
                }
                Some(t) if Some(&t.id) == id => {
                    drop(slot);
                    return self.reply(msgid, Err(transaction_error("vote while already voting")));
                }
                _ => {
                    drop(slot);
                    return self.reply(msgid, Err(transaction_error("vote without a transaction")));
                }
            }
        };
        self.tasks.spawn(txn::vote(self.task_ctx(), msgid, round));
    }

    fn tpc_finish(&mut self, msgid: Value, args: &[Value]) {
        let id = args.first();
        let taken = {
            let mut slot = self.slot.lock().expect("transaction slot poisoned");
            match slot.as_ref() {
                Some(t) if Some(&t.id) == id && t.phase == Phase::Voted => slot.take(),
                _ => None,
            }
        };
        match taken {
            Some(t) => {
                self.tasks.spawn(txn::finish(self.task_ctx(), msgid, t));
            }
            None => self.reply(msgid, Err(transaction_error("tpc_finish without a voted transaction"))),
        }
    }

    fn tpc_abort(&mut self, args: &[Value]) -> Value {
        let id = args.first();
        let mut slot = self.slot.lock().expect("transaction slot poisoned");
        if slot.as_ref().is_some_and(|t| Some(&t.id) == id) {
            let t = slot.take();
            drop(slot);
            drop(t);
            if let Some(h) = &self.host {
                h.stats.aborts.fetch_add(1, Ordering::Relaxed);
                h.metrics.aborts.inc();
            }
        }
        Value::None
    }

    fn undo_info(&self, first: i64, last: i64, spec: Option<Vec<(Value, Value)>>) -> Result<Value, WireError> {
        // The specification filters before first/last count, as in FileStorage.
        let filter = spec.map(|spec| move |u: &crate::storage::UndoEntry| matches_spec(&undo_dict(u), &spec));
        let filter = filter.as_ref().map(|f| f as &dyn Fn(&crate::storage::UndoEntry) -> bool);
        let entries = self.host().fs.undo_log(first, last, filter).map_err(|e| storage_error(&e))?;
        Ok(Value::List(entries.iter().map(undo_dict).collect()))
    }

    fn new_iid(&mut self) -> i64 {
        let id = self.next_iid;
        self.next_iid += 1;
        id
    }

    fn iterator_start(&mut self, args: &[Value]) -> Result<Value, WireError> {
        let start = arg(args, 0).and_then(Value::as_id);
        let stop = arg(args, 1).and_then(Value::as_id);
        let it = self.host().fs.iterator(start.as_ref(), stop.as_ref()).map_err(|e| storage_error(&e))?;
        let id = self.new_iid();
        self.iterators.insert(id, Iter::Txns(Box::new(IterState { inner: it, last: None })));
        Ok(Value::Int(id))
    }

    fn iterator_next(&mut self, args: &[Value]) -> Result<Value, WireError> {
        let id = int_arg(args, 0, -1);
        let Some(Iter::Txns(state)) = self.iterators.get_mut(&id) else { return Err(key_error(Value::Int(id))) };
        match state.inner.next() {
            None => {
                self.iterators.remove(&id);
                Ok(Value::None)
            }
            Some(Err(e)) => {
                self.iterators.remove(&id);
                Err(storage_error(&e))
            }
            Some(Ok(t)) => {
                let item = Value::Tuple(vec![
                    Value::Bytes(t.tid.to_vec()),
                    Value::Str((t.status as char).to_string()),
                    Value::Bytes(t.user.clone()),
                    Value::Bytes(t.description.clone()),
                    Value::Dict(super::convert::extension_dict(&t.extension)),
                ]);
                state.last = Some(t);
                Ok(item)
            }
        }
    }

    fn iterator_record_start(&mut self, args: &[Value]) -> Result<Value, WireError> {
        let txn_id = int_arg(args, 0, -1);
        let tid = id_arg(arg(args, 1), "tid")?;
        let records = match self.iterators.get(&txn_id) {
            Some(Iter::Txns(state)) => match &state.last {
                Some(t) if t.tid == tid => t.records.clone(),
                _ => {
                    return Err(exception(
                        "builtins.Exception",
                        vec![Value::Str("Out-of-order request for record iterator".into())],
                    ));
                }
            },
            _ => return Err(key_error(Value::Int(txn_id))),
        };
        let id = self.new_iid();
        self.iterators.insert(id, Iter::Records(records.into_iter()));
        Ok(Value::Int(id))
    }

    fn iterator_record_next(&mut self, args: &[Value]) -> Result<Value, WireError> {
        let id = int_arg(args, 0, -1);
        let Some(Iter::Records(records)) = self.iterators.get_mut(&id) else { return Err(key_error(Value::Int(id))) };
        match records.next() {
            None => {
                self.iterators.remove(&id);
                Ok(Value::None)
            }
            Some(r) => Ok(Value::Tuple(vec![
                Value::Bytes(r.oid.to_vec()),
                Value::Bytes(r.tid.to_vec()),
                r.data.map_or(Value::None, Value::Bytes),
                r.data_txn.map_or(Value::None, |t| Value::Bytes(t.to_vec())),
            ])),
        }
    }

    fn record_iternext(&self, args: &[Value]) -> Result<Value, WireError> {
        let next = arg(args, 0).and_then(Value::as_id);
        match self.host().fs.record_iternext(next.as_ref()).map_err(|e| storage_error(&e))? {
            None => Err(storage_error(&StorageError::PosKey { oid: next.unwrap_or_default() })),
            Some(step) => Ok(Value::Tuple(vec![
                Value::Bytes(step.oid.to_vec()),
                Value::Bytes(step.tid.to_vec()),
                Value::Bytes(step.data),
                step.next.map_or(Value::None, |n| Value::Bytes(n.to_vec())),
            ])),
        }
    }

    /// Streams a blob (`receiveBlobStart`, chunks, `receiveBlobStop`), then answers None.
    fn send_blob(&self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        let (oid, serial) = match (id_arg(arg(args, 0), "oid"), id_arg(arg(args, 1), "serial")) {
            (Ok(o), Ok(s)) => (o, s),
            (Err(e), _) | (_, Err(e)) => return self.reply(msgid, Err(e)),
        };
        let Some(dir) = h.blobs.clone() else {
            return self.reply(msgid, Err(storage_error(&StorageError::PosKey { oid })));
        };
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let path = dir.blob_path(&oid, &serial);
            let data = match tokio::fs::read(&path).await {
                Ok(d) => d,
                Err(_) => {
                    outbox.reply(msgid, Err(storage_error(&StorageError::PosKey { oid })));
                    return;
                }
            };
            let call = |method: &str, mut args: Vec<Value>| {
                let mut a = vec![Value::Bytes(oid.to_vec()), Value::Bytes(serial.to_vec())];
                a.append(&mut args);
                Message::Call { msgid: Value::Int(0), is_async: true, method: method.into(), args: a }
            };
            outbox.send(&call("receiveBlobStart", vec![]));
            for chunk in data.chunks(BLOB_CHUNK) {
                if !outbox.send(&call("receiveBlobChunk", vec![Value::Bytes(chunk.to_vec())])) {
                    return;
                }
            }
            outbox.send(&call("receiveBlobStop", vec![]));
            outbox.reply(msgid, Ok(Value::None));
        });
    }

    /// `pack(t, wait)`: allowed on read-only connections, as in ZEO. `t` is epoch seconds.
    fn pack(&self, msgid: Value, args: &[Value]) {
        let h = self.host().clone();
        let t = arg(args, 0).and_then(Value::as_f64).unwrap_or(0.0);
        let wait = args.get(1).is_none_or(Value::is_truthy);
        let outbox = self.outbox.clone();
        let reply_to = (wait && msgid != Value::Int(0)).then_some(msgid.clone());
        if !wait && msgid != Value::Int(0) {
            self.reply(msgid, Ok(Value::None));
        }
        tokio::spawn(async move {
            let result = tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                let pack_tid =
                    zeo_proto::timestamp::TimeStamp::from_unix(t).map_err(|e| StorageError::Pack(e.to_string()))?.raw();
                h.pack(&pack_tid).map(drop)
            })
            .await;
            if let Some(msgid) = reply_to {
                let r = match result {
                    Ok(Ok(())) => Ok(Value::None),
                    Ok(Err(e)) => Err(storage_error(&e)),
                    Err(e) => Err(storage_error(&StorageError::Pack(e.to_string()))),
                };
                outbox.reply(msgid, r);
            }
        });
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).field("peer", &self.outbox.peer).finish()
    }
}

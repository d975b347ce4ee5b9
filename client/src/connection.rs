//! One connection to a ZEO server, on the stream `transport` dials: handshake, framing, calls
//! matched by msgid, and the tasks that keep it honest.
//!
//! Opening a connection reads the server's hello (`Z5` or `M5`) and echoes it, which picks the
//! encoding (protocol §1.2). Three tasks then run until the connection closes:
//!
//! - the **reader** splits the stream into frames and decodes them. Replies complete the call
//!   that has their msgid (ints, or `(oid, tid)` tuples for `loadBefore`); server-initiated
//!   async calls (`invalidateTransaction`, `info`) go to an [`Events`] sink. Both happen on this
//!   one task, in wire order, and a call may carry a [`Hook`] that runs there before its caller
//!   wakes up: that is how cache updates from load replies and from the client's own commits
//!   stay ordered with invalidations (see [`crate::cache`]). It also enforces the read
//!   deadline: no bytes for `heartbeat_interval + heartbeat_timeout` means the server is gone.
//! - the **writer** owns the write half and sends queued frames in order, batching what is
//!   queued into one flush.
//! - the **heartbeat** sends a `ping` every `heartbeat_interval` and closes the connection when
//!   no reply comes within `heartbeat_timeout`. The pings are what gives the read deadline
//!   something to see on an idle connection (ZEO's own heartbeat frame gets no reply, so it
//!   cannot tell a live server from a stopped one).
//!
//! Every call has a deadline. When the connection closes for any reason, every call in flight
//! fails with [`ClientError::Disconnected`] and every later call fails at once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zeo_proto::frame::{FrameDecoder, encode_frame};
use zeo_proto::message::{self, Encoding, Message};
use zeo_proto::pickle::{DecodeOptions, Value};
use zeo_proto::{Oid, Tid};

use crate::error::{ClientError, Result};
use crate::mutex::lock;
use crate::transport::{DialConfig, Endpoint, Stream, dial};

/// Frames queued for the writer before senders wait: bounds the memory a stalled server can
/// make us hold, while letting a commit's `storea` stream ahead of the socket.
const WRITE_QUEUE: usize = 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// How long closing waits for the write half to shut down; a stopped server does not drain.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Runs on the reader task with a call's outcome, before the caller sees it. Hooks must be
/// quick and must not block: every later frame of the connection waits for them.
pub(crate) type Hook = Box<dyn FnOnce(&Result<Value>) + Send>;

/// Receives the server's async calls, in wire order, on the reader task.
pub(crate) trait Events: Send + Sync + 'static {
    /// One async call. An error closes the connection (for example an invalidation that cannot
    /// be parsed: the cache could no longer be trusted).
    fn on_async(&self, method: &str, args: Vec<Value>) -> Result<()>;
}

/// Timeouts and limits of a connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    /// Budget for TCP connect plus the hello exchange.
    pub connect_timeout: Duration,
    /// Default deadline of a call.
    pub call_timeout: Duration,
    /// How often the heartbeat pings.
    pub heartbeat_interval: Duration,
    /// How long a ping may go unanswered; also added to the interval for the read deadline.
    pub heartbeat_timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// Socket options and TLS.
    pub dial: DialConfig,
}

/// A msgid as the pending-call table keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum MsgKey {
    Id(i64),
    /// `loadBefore(oid, tid)` uses the tuple as its msgid, which lets identical loads in
    /// flight share one request (ZEO does the same).
    Load(Oid, Tid),
}

impl MsgKey {
    fn of(msgid: &Value) -> Option<MsgKey> {
        if let Some(i) = msgid.as_int() {
            return Some(MsgKey::Id(i));
        }
        match msgid.as_seq()? {
            [oid, tid] => Some(MsgKey::Load(oid.as_id()?, tid.as_id()?)),
            _ => None,
        }
    }

    fn to_value(self) -> Value {
        match self {
            MsgKey::Id(i) => Value::Int(i),
            MsgKey::Load(oid, tid) => Value::Tuple(vec![oid.into(), tid.into()]),
        }
    }
}

/// A call waiting for its reply.
struct Pending {
    /// Everyone waiting for this msgid (more than one only for folded loads).
    waiters: Vec<oneshot::Sender<Result<Value>>>,
    /// Runs once, with the outcome, before the waiters are told.
    hook: Option<Hook>,
}

/// State shared by the handle and the connection's tasks.
struct Shared {
    peer: Endpoint,
    encoding: Encoding,
    cfg: ConnConfig,
    /// Encoded frames for the writer task.
    frames: mpsc::Sender<Vec<u8>>,
    /// Calls awaiting replies; `None` once the connection is closed, so that a call cannot
    /// register after the reader failed everything.
    pending: Mutex<Option<HashMap<MsgKey, Pending>>>,
    next_id: AtomicI64,
    /// Cancelled to close the connection; every task watches it.
    close: CancellationToken,
    /// Why the connection closed (the first reason wins).
    reason: Mutex<Option<String>>,
    /// Cancelled once the reader has failed every pending call: the connection is fully down.
    finished: CancellationToken,
}

/// A live connection (see the module docs). Dropping the handle closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("peer", &self.shared.peer).field("encoding", &self.shared.encoding).finish()
    }
}

impl Connection {
    /// Connects to `addr`, exchanges hellos within `cfg.connect_timeout`, and starts the
    /// reader, writer and heartbeat tasks. `register` is up to the caller.
    ///
    /// # Errors
    ///
    /// [`ClientError::Disconnected`] when the TCP connection fails or closes early,
    /// [`ClientError::Timeout`] when the budget runs out, [`ClientError::Protocol`] when the
    /// server announces a protocol other than `Z5`/`M5`.
    pub(crate) async fn open(addr: Endpoint, cfg: ConnConfig, events: Arc<dyn Events>) -> Result<Connection> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let timeout = |op: &str| ClientError::Timeout { op: format!("{op} {addr}"), after: cfg.connect_timeout };
        let stream = dial(&addr, &cfg.dial, deadline, cfg.connect_timeout).await?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let decoder = FrameDecoder::new(cfg.max_frame);
        let hello = tokio::time::timeout_at(deadline, read_frame(&mut rd, &mut buf, decoder))
            .await
            .map_err(|_| timeout("waiting for the hello of"))??;
        let encoding = Encoding::from_hello(&hello).ok_or_else(|| {
            ClientError::protocol(format!(
                "{addr} announced protocol {:?}; only Z5 and M5 are supported",
                String::from_utf8_lossy(&hello)
            ))
        })?;
        // Echo the server's letter: the server picks the encoding (protocol §1.2).
        let mut frame = Vec::new();
        encode_frame(encoding.hello(), &mut frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        tokio::time::timeout_at(deadline, wr.write_all(&frame))
            .await
            .map_err(|_| timeout("sending the hello to"))?
            .map_err(|e| ClientError::disconnected(format!("sending the hello to {addr}: {e}")))?;

        let (frames, frames_rx) = mpsc::channel(WRITE_QUEUE);
        let shared = Arc::new(Shared {
            peer: addr.clone(),
            encoding,
            cfg,
            frames,
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicI64::new(1),
            close: CancellationToken::new(),
            reason: Mutex::new(None),
            finished: CancellationToken::new(),
        });
        tokio::spawn(read_loop(shared.clone(), rd, buf, decoder, events));
        tokio::spawn(write_loop(shared.clone(), wr, frames_rx));
        tokio::spawn(heartbeat_loop(shared.clone()));
        tracing::debug!(peer = %addr, ?encoding, "connected");
        Ok(Connection { shared })
    }

    /// The server's address.
    pub(crate) fn peer(&self) -> &Endpoint {
        &self.shared.peer
    }

    /// The encoding the server chose.
    pub(crate) fn encoding(&self) -> Encoding {
        self.shared.encoding
    }

    /// A sync call with the default deadline.
    pub(crate) async fn call(&self, method: &str, args: Vec<Value>) -> Result<Value> {
        self.call_with(method, args, self.shared.cfg.call_timeout, None).await
    }

    /// A sync call with its own deadline and an optional [`Hook`].
    pub(crate) async fn call_with(
        &self,
        method: &str,
        args: Vec<Value>,
        timeout: Duration,
        hook: Option<Hook>,
    ) -> Result<Value> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.request(MsgKey::Id(id), method, args, move || hook, timeout).await
    }

    /// `loadBefore(oid, before)` with the `(oid, tid)` msgid. A load with the same arguments
    /// already in flight is joined rather than sent again; `make_hook` is only called (under
    /// the pending-call lock) when a request really goes out.
    pub(crate) async fn load_before(
        &self,
        oid: Oid,
        before: Tid,
        timeout: Duration,
        make_hook: impl FnOnce() -> Option<Hook>,
    ) -> Result<Value> {
        let args = vec![oid.into(), before.into()];
        self.shared.request(MsgKey::Load(oid, before), "loadBefore", args, make_hook, timeout).await
    }

    /// An async call (flag true, msgid 0): no reply. Bounded by the call deadline, because a
    /// full write queue means the server has stopped reading.
    pub(crate) async fn send_async(&self, method: &str, args: Vec<Value>) -> Result<()> {
        let frame = self.shared.encode(Message::async_call(method, args))?;
        let timeout = self.shared.cfg.call_timeout;
        tokio::time::timeout(timeout, self.shared.send(frame))
            .await
            .map_err(|_| ClientError::Timeout { op: format!("sending {method}"), after: timeout })?
    }

    /// Closes the connection; calls in flight fail with [`ClientError::Disconnected`].
    pub(crate) fn close(&self, reason: &str) {
        self.shared.fail(reason);
    }

    /// Whether the connection is closed or closing.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.close.is_cancelled()
    }

    /// Resolves once the connection is fully down (every pending call has failed).
    pub(crate) async fn closed(&self) {
        self.shared.finished.cancelled().await;
    }

    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<String> {
        lock(&self.shared.reason).clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.fail("connection dropped");
    }
}

impl Shared {
    /// Registers (or joins) a call, sends it if new, and waits for the outcome.
    async fn request(
        &self,
        key: MsgKey,
        method: &str,
        args: Vec<Value>,
        make_hook: impl FnOnce() -> Option<Hook>,
        timeout: Duration,
    ) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut pending = lock(&self.pending);
            let Some(map) = pending.as_mut() else {
                return Err(self.error());
            };
            match map.entry(key) {
                Entry::Occupied(mut e) => {
                    e.get_mut().waiters.push(tx);
                    false
                }
                Entry::Vacant(e) => {
                    e.insert(Pending { waiters: vec![tx], hook: make_hook() });
                    true
                }
            }
        };
        let exchange = async {
            if first {
                let frame = self.encode(Message::call(key.to_value(), method, args))?;
                self.send(frame).await?;
            }
            rx.await.map_err(|_| self.error())?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // Sending failed, or the reader dropped the call while closing.
                self.abandon(key, &e);
                Err(e)
            }
            Err(_) => {
                let e = ClientError::Timeout { op: method.to_owned(), after: timeout };
                self.abandon(key, &e);
                Err(e)
            }
        }
    }

    /// Forgets a call whose caller stopped waiting. The entry goes (and its hook runs with
    /// `err`) only when no other caller is waiting on it; a late reply is then ignored.
    fn abandon(&self, key: MsgKey, err: &ClientError) {
        let removed = {
            let mut pending = lock(&self.pending);
            let Some(map) = pending.as_mut() else { return };
            match map.get_mut(&key) {
                Some(p) => {
                    p.waiters.retain(|w| !w.is_closed());
                    if p.waiters.is_empty() { map.remove(&key) } else { None }
                }
                None => None,
            }
        };
        if let Some(Pending { hook: Some(hook), .. }) = removed {
            hook(&Err(err.clone()));
        }
    }

    /// Completes the call a reply belongs to: hook first, then the waiters.
    fn complete(&self, msgid: &Value, result: Result<Value>) {
        let Some(key) = MsgKey::of(msgid) else {
            tracing::debug!(peer = %self.peer, ?msgid, "reply with an unusable msgid ignored");
            return;
        };
        let entry = lock(&self.pending).as_mut().and_then(|map| map.remove(&key));
        let Some(Pending { waiters, hook }) = entry else {
            // The caller gave up (timeout) before the reply came.
            tracing::debug!(peer = %self.peer, ?key, "late reply ignored");
            return;
        };
        if let Some(hook) = hook {
            hook(&result);
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }

    fn encode(&self, msg: Message) -> Result<Vec<u8>> {
        let payload = message::encode_value(&msg.into_value(), self.encoding)
            .map_err(|e| ClientError::protocol(format!("cannot encode a call: {e}")))?;
        let mut frame = Vec::with_capacity(payload.len() + 4);
        encode_frame(&payload, &mut frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        Ok(frame)
    }

    async fn send(&self, frame: Vec<u8>) -> Result<()> {
        if self.close.is_cancelled() {
            return Err(self.error());
        }
        self.frames.send(frame).await.map_err(|_| self.error())
    }

    /// Starts closing, recording `reason` unless one is already recorded.
    fn fail(&self, reason: &str) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some(reason.to_owned());
                if !self.close.is_cancelled() {
                    tracing::debug!(peer = %self.peer, reason, "closing connection");
                }
            }
        }
        self.close.cancel();
    }

    /// The error calls get on a closed connection.
    fn error(&self) -> ClientError {
        let reason = lock(&self.reason).clone().unwrap_or_else(|| "connection closed".to_owned());
        ClientError::disconnected(format!("{}: {reason}", self.peer))
    }

    /// Fails every pending call, and every later one. Runs once, on the reader task, after
    /// the last frame was dispatched.
    fn drain(&self) {
        let map = lock(&self.pending).take().unwrap_or_default();
        let err = self.error();
        for (_, Pending { waiters, hook }) in map {
            if let Some(hook) = hook {
                hook(&Err(err.clone()));
            }
            for w in waiters {
                let _ = w.send(Err(err.clone()));
            }
        }
    }

    /// Decodes and routes one frame. `Err` closes the connection.
    fn dispatch(&self, payload: &[u8], opts: &DecodeOptions, events: &dyn Events) -> Result<(), String> {
        let msg = message::decode_with(payload, self.encoding, opts).map_err(|e| format!("bad message: {e}"))?;
        match msg {
            Message::Reply { msgid, value } => self.complete(&msgid, Ok(value)),
            Message::Error { msgid, class, payload } => {
                self.complete(&msgid, Err(ClientError::from_server(&class, &payload)));
            }
            // Servers only make async calls to clients; the flag is not checked (as in ZEO).
            Message::Call { method, args, .. } => events.on_async(&method, args).map_err(|e| e.to_string())?,
            Message::Heartbeat => {}
        }
        Ok(())
    }
}

/// Reads one frame (the hello) before the tasks start; what follows stays in `buf`.
async fn read_frame(rd: &mut ReadHalf<Stream>, buf: &mut BytesMut, mut decoder: FrameDecoder) -> Result<Vec<u8>> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(payload)) => return Ok(payload),
            Ok(None) => {}
            Err(e) => return Err(ClientError::protocol(e.to_string())),
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ClientError::disconnected("the server closed the connection before its hello")),
            Ok(_) => {}
            Err(e) => return Err(ClientError::disconnected(format!("reading the hello: {e}"))),
        }
    }
}

async fn read_loop(
    shared: Arc<Shared>,
    mut rd: ReadHalf<Stream>,
    mut buf: BytesMut,
    mut decoder: FrameDecoder,
    events: Arc<dyn Events>,
) {
    // Even if this task panics, whoever waits for the connection to go down is woken.
    let _finished = shared.finished.clone().drop_guard();
    // Server replies may carry pickled globals (the reference server sends some inside
    // MultipleUndoErrors); nothing is ever imported, so any module name is acceptable here.
    let opts = DecodeOptions::records();
    let idle = shared.cfg.heartbeat_interval + shared.cfg.heartbeat_timeout;
    let reason: String = 'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(payload)) => {
                    if let Err(e) = shared.dispatch(&payload, &opts, &*events) {
                        break 'read e;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read format!("bad frame: {e}"),
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            () = shared.close.cancelled() => break String::new(),
            read = tokio::time::timeout(idle, rd.read_buf(&mut buf)) => match read {
                Err(_) => break format!("no data from the server for {idle:?}"),
                Ok(Ok(0)) => break "the server closed the connection".to_owned(),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break format!("read error: {e}"),
            },
        }
    };
    if !reason.is_empty() {
        shared.fail(&reason);
    }
    shared.drain();
    shared.finished.cancel();
}

async fn write_loop(shared: Arc<Shared>, wr: WriteHalf<Stream>, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::with_capacity(READ_CHUNK, wr);
    let pump = async {
        while let Some(frame) = frames.recv().await {
            out.write_all(&frame).await?;
            // Batch whatever else is queued into the same flush.
            while let Ok(more) = frames.try_recv() {
                out.write_all(&more).await?;
            }
            out.flush().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let result = tokio::select! {
        biased;
        () = shared.close.cancelled() => Ok(()),
        r = pump => r,
    };
    if let Err(e) = result {
        shared.fail(&format!("write error: {e}"));
    }
    // Send FIN now rather than when the last handle goes, so the server aborts whatever
    // transaction we had open as soon as possible.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, out.get_mut().shutdown()).await;
}

async fn heartbeat_loop(shared: Arc<Shared>) {
    let interval = shared.cfg.heartbeat_interval;
    let timeout = shared.cfg.heartbeat_timeout;
    loop {
        tokio::select! {
            () = shared.close.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        match shared.request(MsgKey::Id(id), "ping", Vec::new(), || None, timeout).await {
            Err(ClientError::Timeout { .. }) => {
                shared.fail(&format!("no reply to a heartbeat ping within {timeout:?}"));
                return;
            }
            Err(ClientError::Disconnected { .. }) => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::{TcpListener, TcpStream};

    fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp { addr, host: "127.0.0.1".into() }
    }
    use zeo_proto::p64;

    struct NoEvents;
    impl Events for NoEvents {
        fn on_async(&self, _method: &str, _args: Vec<Value>) -> Result<()> {
            Ok(())
        }
    }

    fn cfg() -> ConnConfig {
        ConnConfig {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(60),
            heartbeat_timeout: Duration::from_secs(60),
            max_frame: 1 << 20,
            dial: DialConfig {
                tcp_keepalive: Some(Duration::from_secs(7)),
                tcp_user_timeout: Some(Duration::from_secs(11)),
                tls: None,
            },
        }
    }

    async fn read_msg(s: &mut TcpStream, enc: Encoding) -> Message {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.expect("length");
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut payload).await.expect("payload");
        message::decode_with(&payload, enc, &DecodeOptions::records()).expect("decodes")
    }

    async fn write_msg(s: &mut TcpStream, enc: Encoding, msg: Message) {
        let payload = message::encode(&msg, enc).expect("encodes");
        let mut frame = Vec::new();
        encode_frame(&payload, &mut frame).expect("frame");
        s.write_all(&frame).await.expect("write");
    }

    /// A fake server: sends `hello`, expects it echoed, then runs `script`.
    async fn fake_server<F, Fut>(hello: &'static [u8], script: F) -> SocketAddr
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut frame = Vec::new();
            encode_frame(hello, &mut frame).expect("frame");
            s.write_all(&frame).await.expect("hello");
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut echo = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut echo).await.expect("echo");
            assert_eq!(echo, hello);
            script(s).await;
        });
        addr
    }

    /// Replies are matched by msgid whatever their order, including tuple msgids, and both
    /// encodings work.
    #[tokio::test]
    async fn replies_are_matched_by_msgid() {
        for (hello, enc) in [(&b"Z5"[..], Encoding::Pickle), (&b"M5"[..], Encoding::Msgpack)] {
            let addr = fake_server(hello, move |mut s| async move {
                let a = read_msg(&mut s, enc).await;
                let b = read_msg(&mut s, enc).await;
                let (Message::Call { msgid: ida, .. }, Message::Call { msgid: idb, method, .. }) = (a, b) else {
                    panic!("calls expected");
                };
                assert_eq!(method, "loadBefore");
                // Answer in reverse order.
                write_msg(&mut s, enc, Message::reply(idb, Value::Str("load".into()))).await;
                write_msg(&mut s, enc, Message::reply(ida, Value::Str("ping".into()))).await;
                let _ = read_msg(&mut s, enc).await;
            })
            .await;
            let conn = Arc::new(Connection::open(tcp(addr), cfg(), Arc::new(NoEvents)).await.expect("open"));
            assert_eq!(conn.encoding(), enc);
            let c2 = conn.clone();
            let ping = tokio::spawn(async move { c2.call("ping", vec![]).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let load = conn.load_before(p64(1), p64(2), Duration::from_secs(5), || None).await;
            assert_eq!(load, Ok(Value::Str("load".into())));
            assert_eq!(ping.await.expect("join"), Ok(Value::Str("ping".into())));
        }
    }

    /// Error replies become typed errors; a dead server fails calls in flight and later ones.
    #[tokio::test]
    async fn errors_timeouts_and_close() {
        let addr = fake_server(b"Z5", |mut s| async move {
            let Message::Call { msgid, .. } = read_msg(&mut s, Encoding::Pickle).await else { panic!() };
            write_msg(&mut s, Encoding::Pickle, Message::error(msgid, zeo_proto::errors::read_only())).await;
            // Never answer the second call, then hang up.
            let _ = read_msg(&mut s, Encoding::Pickle).await;
            let _ = read_msg(&mut s, Encoding::Pickle).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await;
        let conn = Connection::open(tcp(addr), cfg(), Arc::new(NoEvents)).await.expect("open");
        assert_eq!(conn.call("new_oids", vec![]).await, Err(ClientError::ReadOnly));
        let t = conn.call_with("ping", vec![], Duration::from_millis(100), None).await;
        assert!(matches!(t, Err(ClientError::Timeout { .. })), "{t:?}");
        let d = conn.call("ping", vec![]).await;
        assert!(matches!(d, Err(ClientError::Disconnected { .. })), "{d:?}");
        conn.closed().await;
        assert!(conn.is_closed());
        let later = conn.call("ping", vec![]).await;
        assert!(matches!(later, Err(ClientError::Disconnected { .. })), "{later:?}");
    }

    /// Identical loads in flight share one request; hooks run once.
    #[tokio::test]
    async fn identical_loads_are_folded() {
        let addr = fake_server(b"Z5", |mut s| async move {
            let Message::Call { msgid, .. } = read_msg(&mut s, Encoding::Pickle).await else { panic!() };
            tokio::time::sleep(Duration::from_millis(100)).await;
            write_msg(&mut s, Encoding::Pickle, Message::reply(msgid, Value::None)).await;
            // A second request would arrive here; there must be none before the ping.
            let Message::Call { method, msgid, .. } = read_msg(&mut s, Encoding::Pickle).await else { panic!() };
            assert_eq!(method, "ping");
            write_msg(&mut s, Encoding::Pickle, Message::reply(msgid, Value::None)).await;
        })
        .await;
        let conn = Arc::new(Connection::open(tcp(addr), cfg(), Arc::new(NoEvents)).await.expect("open"));
        let hooks = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (conn, hooks) = (conn.clone(), hooks.clone());
            tasks.push(tokio::spawn(async move {
                conn.load_before(p64(1), p64(9), Duration::from_secs(5), || {
                    Some(Box::new(move |_: &Result<Value>| {
                        hooks.fetch_add(1, Ordering::SeqCst);
                    }) as Hook)
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join"), Ok(Value::None));
        }
        assert_eq!(hooks.load(Ordering::SeqCst), 1);
        assert_eq!(conn.call("ping", vec![]).await, Ok(Value::None));
    }

    /// A server announcing something other than Z5/M5 is refused.
    #[tokio::test]
    async fn unknown_protocol_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut frame = Vec::new();
            encode_frame(b"Z4", &mut frame).expect("frame");
            s.write_all(&frame).await.expect("hello");
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let err = Connection::open(tcp(addr), cfg(), Arc::new(NoEvents)).await.expect_err("refused");
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    /// The heartbeat notices a server that stops answering.
    #[tokio::test]
    async fn heartbeat_notices_a_silent_server() {
        let addr = fake_server(b"Z5", |mut s| async move {
            // Read everything, answer nothing.
            let mut sink = vec![0u8; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        let mut c = cfg();
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(200);
        let conn = Connection::open(tcp(addr), c, Arc::new(NoEvents)).await.expect("open");
        // The silent server never closes its end, so only the liveness checks can end the
        // connection; the reason says which. A generous deadline, as the machine may be busy.
        tokio::time::timeout(Duration::from_secs(60), conn.closed()).await.expect("closed in time");
        let reason = conn.close_reason().expect("a close reason");
        assert!(
            reason.starts_with("no reply to a heartbeat ping") || reason.starts_with("no data from the server"),
            "{reason}"
        );
    }
}

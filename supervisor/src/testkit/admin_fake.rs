//! A fake zeo-server: its admin HTTP API with the real semantics (epochs, out_of_sync, token)
//! and a ZEO 5 listener that answers `register` and `lastTransaction`, or stalls on demand.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use zeo_proto::frame::{FrameDecoder, encode_frame};
use zeo_proto::message::{self, Encoding, Message};
use zeo_proto::p64;
use zeo_proto::pickle::Value as PValue;

use crate::status::{PrimaryReplication, Replication, ServerRole, ServerStatus, StandbyReplication, SyncState};

pub const TOKEN: &str = "s3cret";

struct Inner {
    status: Mutex<ServerStatus>,
    /// Every admin POST, as "promote 4 false", "demote", "rejoin b:9000".
    calls: watch::Sender<Vec<String>>,
    /// The ZEO listener accepts but never answers (a stopped process).
    stalled: AtomicBool,
}

/// The fake server; both listeners stop when it is dropped.
pub struct FakeServer {
    inner: Arc<Inner>,
    pub admin_url: String,
    pub zeo_addr: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn primary_status(epoch: u64) -> ServerStatus {
    ServerStatus {
        role: ServerRole::Primary,
        epoch,
        writable: true,
        last_tid: p64(100),
        replication: Replication::Primary(PrimaryReplication {
            sync_standbys: 1,
            sync_timeout_ms: None,
            sync_state: SyncState::Sync,
            standbys: Vec::new(),
        }),
    }
}

pub fn standby_status(epoch: u64, primary: &str, connected: bool, out_of_sync: bool) -> ServerStatus {
    ServerStatus {
        role: ServerRole::Standby,
        epoch,
        writable: false,
        last_tid: p64(100),
        replication: Replication::Standby(StandbyReplication {
            primary: primary.into(),
            connected,
            applied_tid: p64(100),
            lag_transactions: 0,
            lag_seconds: 0.0,
            in_sync: !out_of_sync,
            out_of_sync,
        }),
    }
}

impl FakeServer {
    pub async fn start(status: ServerStatus) -> FakeServer {
        let inner = Arc::new(Inner {
            status: Mutex::new(status),
            calls: watch::channel(Vec::new()).0,
            stalled: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/status", get(status_handler))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/promote", post(promote))
            .route("/demote", post(demote))
            .route("/rejoin", post(rejoin))
            .with_state(inner.clone());
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin.local_addr().unwrap());
        let zeo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let zeo_addr = zeo.local_addr().unwrap().to_string();
        let z = inner.clone();
        let tasks = vec![
            tokio::spawn(async move { axum::serve(admin, app).await.unwrap() }),
            tokio::spawn(async move {
                while let Ok((stream, _)) = zeo.accept().await {
                    tokio::spawn(serve_zeo(stream, z.clone()));
                }
            }),
        ];
        FakeServer { inner, admin_url, zeo_addr, tasks }
    }

    pub fn status(&self) -> ServerStatus {
        self.inner.status.lock().unwrap().clone()
    }

    pub fn set_status(&self, status: ServerStatus) {
        *self.inner.status.lock().unwrap() = status;
    }

    pub fn set_stalled(&self, stalled: bool) {
        self.inner.stalled.store(stalled, Ordering::SeqCst);
    }

    pub fn calls(&self) -> Vec<String> {
        self.inner.calls.borrow().clone()
    }

    /// Waits (up to 30 s, then panics) until a call starting with `prefix` was made.
    pub async fn wait_call(&self, prefix: &str) -> String {
        let mut rx = self.inner.calls.subscribe();
        let found =
            tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| c.iter().any(|s| s.starts_with(prefix))))
                .await
                .unwrap_or_else(|_| panic!("no {prefix:?} call; calls: {:?}", self.calls()))
                .unwrap()
                .iter()
                .find(|s| s.starts_with(prefix))
                .cloned();
        found.unwrap()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn refuse(code: StatusCode, error: &str) -> Response {
    (code, Json(json!({"error": error}))).into_response()
}

fn authorized(headers: &HeaderMap) -> Option<Response> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {TOKEN}") => None,
        _ => Some(refuse(StatusCode::UNAUTHORIZED, "missing or wrong token")),
    }
}

async fn status_handler(State(s): State<Arc<Inner>>) -> Json<ServerStatus> {
    Json(s.status.lock().unwrap().clone())
}

fn record(s: &Inner, call: String) {
    s.calls.send_modify(|c| c.push(call));
}

async fn promote(State(s): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = authorized(&headers) {
        return r;
    }
    let epoch = body["epoch"].as_u64().unwrap_or(0);
    let force = body["force"].as_bool().unwrap_or(false);
    record(&s, format!("promote {epoch} {force}"));
    let mut st = s.status.lock().unwrap();
    if st.role == ServerRole::Primary && st.epoch == epoch {
        return Json(json!({"role": "primary", "epoch": epoch, "changed": false})).into_response();
    }
    if epoch <= st.epoch {
        return refuse(StatusCode::CONFLICT, &format!("epoch {epoch} is not above {}", st.epoch));
    }
    if st.standby().is_some_and(|r| r.out_of_sync) && !force {
        return refuse(StatusCode::CONFLICT, "out of sync: promote with force");
    }
    *st = ServerStatus { last_tid: st.last_tid, ..primary_status(epoch) };
    Json(json!({"role": "primary", "epoch": epoch, "changed": true})).into_response()
}

async fn demote(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Some(r) = authorized(&headers) {
        return r;
    }
    record(&s, "demote".into());
    let mut st = s.status.lock().unwrap();
    let changed = st.role != ServerRole::Demoted;
    st.role = ServerRole::Demoted;
    st.writable = false;
    st.replication = Replication::default();
    Json(json!({"role": "demoted", "changed": changed})).into_response()
}

async fn rejoin(State(s): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = authorized(&headers) {
        return r;
    }
    let primary = body["primary"].as_str().unwrap_or_default().to_string();
    record(&s, format!("rejoin {primary}"));
    let mut st = s.status.lock().unwrap();
    let changed = st.standby().is_none_or(|r| r.primary != primary);
    *st = ServerStatus { last_tid: st.last_tid, ..standby_status(st.epoch, &primary, true, false) };
    Json(json!({"role": "standby", "changed": changed})).into_response()
}

async fn serve_zeo(mut stream: tokio::net::TcpStream, s: Arc<Inner>) {
    if s.stalled.load(Ordering::SeqCst) {
        // Hold the connection open and say nothing, like a stopped process.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let mut out = Vec::new();
    encode_frame(b"Z5", &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    let decoder = FrameDecoder::new(1 << 20);
    let mut hello_seen = false;
    loop {
        let frame = match decoder.clone().decode(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
                continue;
            }
            Err(_) => return,
        };
        if !hello_seen {
            hello_seen = true;
            continue;
        }
        let Ok(Message::Call { msgid, method, .. }) = message::decode(&frame, Encoding::Pickle) else {
            return;
        };
        let tid = s.status.lock().unwrap().last_tid;
        let value = match method.as_str() {
            "register" | "lastTransaction" => PValue::Bytes(tid.to_vec()),
            _ => PValue::None,
        };
        let payload = message::encode(&Message::reply(msgid, value), Encoding::Pickle).unwrap();
        let mut out = Vec::new();
        encode_frame(&payload, &mut out).unwrap();
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

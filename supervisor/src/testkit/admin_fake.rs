//! A fake zeo-server: its admin HTTP API with the real semantics (epochs, out_of_sync, token,
//! and, when started with [`FakeServer::start_with_write_lease`], the write lease: `/write-lease`,
//! `/out-of-sync`, `boottime_ns`, a primary writable only until its grant ends) and a ZEO 5
//! listener that answers `register` and `lastTransaction`, or stalls on demand, as may its admin API.

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
    /// The admin API accepts requests and never answers them.
    admin_stalled: watch::Sender<bool>,
    /// `Some`: the server holds a write lease, granted until this CLOCK_BOOTTIME (0: never).
    write_lease: Mutex<Option<u64>>,
    /// `/promote` fails with this error (a full disk), after checking the epoch.
    promote_error: Mutex<Option<String>>,
    /// Added to the boottime `/status` reports (another kernel).
    boottime_offset_ns: std::sync::atomic::AtomicI64,
}

/// The fake server; both listeners stop when it is dropped.
pub struct FakeServer {
    inner: Arc<Inner>,
    pub admin_url: String,
    pub zeo_addr: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A demoted server at epoch 0 with none of the optional fields: the base of the others.
pub fn no_extras() -> ServerStatus {
    ServerStatus {
        role: ServerRole::Demoted,
        epoch: 0,
        writable: false,
        last_tid: p64(0),
        replication: Replication::default(),
        boottime_ns: None,
        not_writable_reason: None,
        write_lease: None,
        storages: std::collections::BTreeMap::new(),
    }
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
            degrade_requested: Vec::new(),
        }),
        ..no_extras()
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
            storage_error: None,
        }),
        ..no_extras()
    }
}

impl FakeServer {
    /// A server of the release before write leases: writable whenever primary.
    pub async fn start(status: ServerStatus) -> FakeServer {
        FakeServer::start_inner(status, None).await
    }

    /// A server that requires a write lease: a primary acknowledges commits only until its last
    /// grant ends, on CLOCK_BOOTTIME (it has none until the first).
    pub async fn start_with_write_lease(status: ServerStatus) -> FakeServer {
        FakeServer::start_inner(status, Some(0)).await
    }

    async fn start_inner(status: ServerStatus, write_lease: Option<u64>) -> FakeServer {
        let inner = Arc::new(Inner {
            status: Mutex::new(status),
            calls: watch::channel(Vec::new()).0,
            stalled: AtomicBool::new(false),
            admin_stalled: watch::channel(false).0,
            write_lease: Mutex::new(write_lease),
            promote_error: Mutex::new(None),
            boottime_offset_ns: std::sync::atomic::AtomicI64::new(0),
        });
        let app = Router::new()
            .route("/status", get(status_handler))
            .route("/livez", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .route("/promote", post(promote))
            .route("/demote", post(demote))
            .route("/rejoin", post(rejoin))
            .route("/write-lease", post(write_lease_handler))
            .route("/out-of-sync", post(out_of_sync))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), stall_admin))
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

    /// What `/status` answers now.
    pub fn status(&self) -> ServerStatus {
        current_status(&self.inner)
    }

    /// The admin API stops answering (accepts, then holds every request), or answers again.
    pub fn set_admin_stalled(&self, stalled: bool) {
        self.inner.admin_stalled.send_replace(stalled);
    }

    /// Reports a boottime this far off ours, as a server on another kernel would.
    pub fn set_boottime_offset(&self, offset: std::time::Duration) {
        let ns = i64::try_from(offset.as_nanos()).unwrap_or(i64::MAX);
        self.inner.boottime_offset_ns.store(ns, Ordering::SeqCst);
    }

    /// `/promote` answers 500 with this error from now on (`None`: promotes again).
    pub fn set_promote_error(&self, error: Option<&str>) {
        *self.inner.promote_error.lock().unwrap() = error.map(String::from);
    }

    /// The end of the last write-lease grant (CLOCK_BOOTTIME ns; 0: none yet).
    pub fn granted_until(&self) -> Option<u64> {
        *self.inner.write_lease.lock().unwrap()
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

/// The status as the server would report it now: with a write lease, a primary past its grant
/// is not writable (it fenced itself) and says why.
fn current_status(s: &Inner) -> ServerStatus {
    let mut st = s.status.lock().unwrap().clone();
    let Some(until) = *s.write_lease.lock().unwrap() else {
        return st;
    };
    let now = crate::grant::boottime_ns();
    let offset = s.boottime_offset_ns.load(Ordering::SeqCst);
    st.boottime_ns = Some(now.saturating_add_signed(offset));
    let expired = now >= until;
    st.write_lease = Some(crate::status::WriteLease {
        required: true,
        remaining_ms: Some(until.saturating_sub(now) / 1_000_000),
        expired,
    });
    if st.role == ServerRole::Primary && expired {
        st.writable = false;
        st.not_writable_reason =
            Some(if until == 0 { "no write lease granted yet" } else { "write lease expired" }.into());
    }
    st
}

async fn status_handler(State(s): State<Arc<Inner>>) -> Json<ServerStatus> {
    Json(current_status(&s))
}

/// Holds every admin request while the API is stalled.
async fn stall_admin(
    State(s): State<Arc<Inner>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut stalled = s.admin_stalled.subscribe();
    let _ = stalled.wait_for(|st| !*st).await;
    next.run(request).await
}

async fn write_lease_handler(State(s): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = authorized(&headers) {
        return r;
    }
    let epoch = body["epoch"].as_u64().unwrap_or(0);
    let Some(until) = body["until_boottime_ns"].as_u64() else {
        return refuse(StatusCode::BAD_REQUEST, "until_boottime_ns missing");
    };
    record(&s, format!("write-lease {epoch}"));
    let st = s.status.lock().unwrap().clone();
    if st.role != ServerRole::Primary || st.epoch != epoch {
        return refuse(StatusCode::CONFLICT, &format!("not the primary at epoch {epoch}"));
    }
    let mut lease = s.write_lease.lock().unwrap();
    let Some(current) = lease.as_mut() else {
        return refuse(StatusCode::NOT_FOUND, "no write lease on this server");
    };
    // A grant never shortens the lease: a late, older grant must not fence a fresher one.
    *current = (*current).max(until);
    let until = *current;
    Json(json!({"writable": crate::grant::boottime_ns() < until, "until_boottime_ns": until})).into_response()
}

async fn out_of_sync(State(s): State<Arc<Inner>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = authorized(&headers) {
        return r;
    }
    let epoch = body["epoch"].as_u64().unwrap_or(0);
    let names: Vec<String> =
        body["standbys"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    let call = format!("out-of-sync {epoch} {}", names.join(","));
    let mut st = s.status.lock().unwrap();
    if st.role != ServerRole::Primary || st.epoch != epoch {
        drop(st);
        record(&s, call);
        return refuse(StatusCode::CONFLICT, &format!("not the primary at epoch {epoch}"));
    }
    // The server degrades past them: out of sync, no longer asked for.
    if let Replication::Primary(p) = &mut st.replication {
        for link in p.standbys.iter_mut().filter(|l| names.contains(&l.name)) {
            link.out_of_sync = true;
            link.in_sync = false;
        }
        p.degrade_requested.retain(|n| !names.contains(n));
        p.sync_state = SyncState::Degraded;
    }
    drop(st);
    // Recorded once done, so a test that saw the call sees its effect.
    record(&s, call);
    Json(json!({"standbys": names})).into_response()
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
    let until = body["until_boottime_ns"].as_u64();
    let mut lease = s.write_lease.lock().unwrap();
    if lease.is_none() && until.is_some() {
        // The release before write leases refuses unknown fields.
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "unknown field `until_boottime_ns`");
    }
    record(&s, format!("promote {epoch} {force}{}", if until.is_some() { " granted" } else { "" }));
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
    if let Some(e) = s.promote_error.lock().unwrap().clone() {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    *st = ServerStatus { last_tid: st.last_tid, ..primary_status(epoch) };
    if let (Some(current), Some(until)) = (lease.as_mut(), until) {
        *current = until;
    }
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

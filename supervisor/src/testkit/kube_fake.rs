//! A small, faithful fake of the Kubernetes API for Leases and Pods: real API JSON, a global
//! resourceVersion counter, 409 Conflict on a stale `resourceVersion`, 409 AlreadyExists on a
//! duplicate create, 404 NotFound as a `Status`, JSON merge patch (RFC 7386) on pods.
//!
//! Faithful where our client can go wrong against a real API server: Lease specs lose the fields
//! the API does not know, and the gated `preferredHolder` and `strategy` unless the
//! CoordinatedLeaderElection gate is on (then `preferredHolder` without `strategy` is refused);
//! MicroTime fields must be RFC 3339 with exactly six fractional digits (400 otherwise, as Go's
//! decoder answers); `leaseDurationSeconds` must be > 0 (422). On demand ([`Fault`]): calls that
//! never answer, answers whose body never ends, 429 with Retry-After, 500, 503, 504.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

type Key = (String, String, String); // (resource, namespace, name)

/// A misbehaviour of the API server, for the next calls ([`FakeKube::fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept the request and never answer.
    Stall,
    /// Send 200 and the headers, then never finish the body.
    StallBody,
    /// 429 TooManyRequests, with `Retry-After` (and `details.retryAfterSeconds`) of this many seconds.
    TooManyRequests(u32),
    /// 500, 503 or 504, as a `Status`.
    ServerError(u16),
}

#[derive(Default)]
struct Inner {
    objects: HashMap<Key, Value>,
    version: u64,
    conflicts: u64,
    /// The CoordinatedLeaderElection feature gate.
    coordinated_election: bool,
    /// Faults for the next calls, one call each, in order.
    faults: VecDeque<Fault>,
    /// Calls that got a fault.
    faulted: u64,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

/// The fake, serving on 127.0.0.1 until dropped.
pub struct FakeKube {
    url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKube {
    pub async fn start() -> FakeKube {
        let shared = Shared::default();
        let app = Router::new()
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", axum::routing::post(create_lease))
            .route("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}", get(get_lease).put(replace_lease))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod).patch(patch_pod))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), faults))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeKube { url, shared, task }
    }

    /// A kube client pointed at the fake.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.default_namespace = "zeo".into();
        kube::Client::try_from(config).unwrap()
    }

    /// Seeds a pod with `labels`.
    pub fn add_pod(&self, namespace: &str, name: &str, labels: Value) {
        let mut inner = self.shared.0.lock().unwrap();
        inner.version += 1;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                         "resourceVersion": inner.version.to_string(), "labels": labels},
            "spec": {"containers": [{"name": "zeo-server", "image": "zeo-rs/server"}]},
            "status": {"phase": "Running"}});
        inner.objects.insert(("pods".into(), namespace.into(), name.into()), pod);
    }

    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared.0.lock().unwrap().objects.get(&(resource.into(), namespace.into(), name.into())).cloned()
    }

    pub fn conflicts(&self) -> u64 {
        self.shared.0.lock().unwrap().conflicts
    }

    /// The next `calls` calls (of any kind) get `fault`, after those already queued.
    pub fn fault(&self, fault: Fault, calls: usize) {
        self.shared.0.lock().unwrap().faults.extend(std::iter::repeat_n(fault, calls));
    }

    /// Calls answer normally again.
    pub fn heal(&self) {
        self.shared.0.lock().unwrap().faults.clear();
    }

    /// How many calls got a fault so far.
    pub fn faulted(&self) -> u64 {
        self.shared.0.lock().unwrap().faulted
    }

    /// Turns the CoordinatedLeaderElection feature gate on or off (off by default, as in
    /// Kubernetes up to at least 1.34).
    pub fn set_coordinated_election(&self, on: bool) {
        self.shared.0.lock().unwrap().coordinated_election = on;
    }

    /// Stores `lease` as is (a record an older release or another writer left), stamped.
    pub fn put_lease(&self, namespace: &str, name: &str, mut lease: Value) {
        let mut inner = self.shared.0.lock().unwrap();
        lease["metadata"]["name"] = json!(name);
        stamp(&mut inner, &mut lease, namespace);
        inner.objects.insert(lease_key(namespace, name), lease);
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

async fn faults(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let fault = {
        let mut inner = s.0.lock().unwrap();
        let fault = inner.faults.pop_front();
        inner.faulted += u64::from(fault.is_some());
        fault
    };
    match fault {
        None => next.run(request).await,
        Some(Fault::Stall) => std::future::pending().await,
        Some(Fault::StallBody) => {
            let body = Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
            (StatusCode::OK, [("content-type", "application/json")], body).into_response()
        }
        Some(Fault::TooManyRequests(secs)) => {
            let mut r = status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "too many requests, please try again later".into(),
            );
            r.headers_mut().insert("retry-after", secs.into());
            // The API server's Status carries the same advice.
            let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": "too many requests, please try again later", "reason": "TooManyRequests",
                              "details": {"retryAfterSeconds": secs}, "code": 429});
            *r.body_mut() = Body::from(body.to_string());
            r
        }
        Some(Fault::ServerError(code)) => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = match code.as_u16() {
                503 => "ServiceUnavailable",
                504 => "Timeout",
                _ => "InternalError",
            };
            status(code, reason, format!("the server is unable to handle the request ({code})"))
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, Json(body)).into_response()
}

fn lease_key(ns: &str, name: &str) -> Key {
    ("leases".into(), ns.into(), name.into())
}

async fn get_lease(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match s.0.lock().unwrap().objects.get(&lease_key(&ns, &name)) {
        Some(v) => Json(v.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", format!("leases.coordination.k8s.io \"{name}\" not found")),
    }
}

fn stamp(inner: &mut Inner, obj: &mut Value, ns: &str) {
    inner.version += 1;
    let meta = &mut obj["metadata"];
    meta["namespace"] = json!(ns);
    meta["resourceVersion"] = json!(inner.version.to_string());
    if meta.get("uid").is_none() {
        meta["uid"] = json!(format!("uid-{}", inner.version));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    obj["apiVersion"] = json!("coordination.k8s.io/v1");
    obj["kind"] = json!("Lease");
}

/// Go's `MicroTime` layout, "2006-01-02T15:04:05.000000Z07:00": exactly six fractional digits.
fn is_micro_time(t: &str) -> bool {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let zone = match b.get(26..) {
        Some(b"Z") => true,
        Some(z) if z.len() == 6 => {
            matches!(z[0], b'+' | b'-')
                && z[1..3].iter().all(u8::is_ascii_digit)
                && z[3] == b':'
                && z[4..].iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26)
        && zone
}

/// The Lease spec as the API server keeps it, or the answer it refuses it with.
fn admit_lease_spec(inner: &Inner, body: &mut Value) -> Result<(), Box<Response>> {
    let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let mut known = vec!["holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions"];
    if inner.coordinated_election {
        known.extend(["preferredHolder", "strategy"]);
    }
    // Unknown fields are dropped (with a warning header on a real server), gated ones too.
    spec.retain(|k, _| known.contains(&k.as_str()));
    for field in ["acquireTime", "renewTime"] {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if is_micro_time(t) => {}
            Some(v) => {
                return Err(Box::new(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!(
                        "Lease in version \"v1\" cannot be handled as a Lease: spec.{field}: parsing time {v} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"
                    ),
                )));
            }
        }
    }
    if let Some(d) = spec.get("leaseDurationSeconds").filter(|d| !d.is_null())
        && d.as_i64().is_none_or(|d| d <= 0)
    {
        return Err(Box::new(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "Lease.coordination.k8s.io is invalid: spec.leaseDurationSeconds: Invalid value: {d}: must be greater than 0"
            ),
        )));
    }
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    if has("preferredHolder") && !has("strategy") {
        return Err(Box::new(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "Lease.coordination.k8s.io is invalid: spec.strategy: Required value: must be specified when preferredHolder is set".into(),
        )));
    }
    Ok(())
}

async fn create_lease(State(s): State<Shared>, Path(ns): Path<String>, Json(mut body): Json<Value>) -> Response {
    let Some(name) = body["metadata"]["name"].as_str().map(String::from) else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value".into());
    };
    let mut inner = s.0.lock().unwrap();
    if let Err(refused) = admit_lease_spec(&inner, &mut body) {
        return *refused;
    }
    if inner.objects.contains_key(&lease_key(&ns, &name)) {
        inner.conflicts += 1;
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    if body["metadata"].get("resourceVersion").is_some_and(|v| !v.is_null()) {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "resourceVersion should not be set on objects to be created".into(),
        );
    }
    stamp(&mut inner, &mut body, &ns);
    inner.objects.insert(lease_key(&ns, &name), body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn replace_lease(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> Response {
    if body["metadata"]["name"].as_str() != Some(name.as_str()) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL".into(),
        );
    }
    let mut inner = s.0.lock().unwrap();
    let Some(current) = inner.objects.get(&lease_key(&ns, &name)).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("leases.coordination.k8s.io \"{name}\" not found"));
    };
    let sent = body["metadata"]["resourceVersion"].as_str();
    if sent.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
        inner.conflicts += 1;
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    if let Err(refused) = admit_lease_spec(&inner, &mut body) {
        return *refused;
    }
    body["metadata"]["uid"] = current["metadata"]["uid"].clone();
    body["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
    stamp(&mut inner, &mut body, &ns);
    inner.objects.insert(lease_key(&ns, &name), body.clone());
    Json(body).into_response()
}

async fn get_pod(State(s): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match s.0.lock().unwrap().objects.get(&("pods".into(), ns, name.clone())) {
        Some(v) => Json(v.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{name}\" not found")),
    }
}

async fn patch_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    Json(patch): Json<Value>,
) -> Response {
    let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ctype != "application/merge-patch+json" {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json; got {ctype}"
            ),
        );
    }
    let mut inner = s.0.lock().unwrap();
    let key = ("pods".to_string(), ns, name.clone());
    let Some(mut pod) = inner.objects.get(&key).cloned() else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{name}\" not found"));
    };
    merge_patch(&mut pod, &patch);
    inner.version += 1;
    pod["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    inner.objects.insert(key, pod.clone());
    Json(pod).into_response()
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

//! A small, faithful fake of the Kubernetes API for Leases and Pods: real API JSON, a global
//! resourceVersion counter, 409 Conflict on a stale `resourceVersion`, 409 AlreadyExists on a
//! duplicate create, 404 NotFound as a `Status`, JSON merge patch (RFC 7386) on pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

type Key = (String, String, String); // (resource, namespace, name)

#[derive(Default)]
struct Inner {
    objects: HashMap<Key, Value>,
    version: u64,
    conflicts: u64,
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

async fn create_lease(State(s): State<Shared>, Path(ns): Path<String>, Json(mut body): Json<Value>) -> Response {
    let Some(name) = body["metadata"]["name"].as_str().map(String::from) else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value".into());
    };
    let mut inner = s.0.lock().unwrap();
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

//! What the load is sent to: a zeo-app over HTTP, or a ZEO storage through zeo-client. Both
//! offer the same four operations on [`Item`]s, so the driver and the verifier do not care.
//!
//! | | HTTP (`--target`) | storage (`--storage`) |
//! |---|---|---|
//! | item | key `{prefix}-{n}` (`{prefix}-w{id}` with `--verify`) | an oid |
//! | write | `PUT /api/kv/{key}` `{"id", "payload"}` | store `PersistentMapping {"id", "payload"}` |
//! | read | `GET /api/kv/{key}`; 404 is "absent" | load; no such object is "absent" |
//!
//! In storage mode the objects are not referenced from the root: a pack removes them. Run it
//! against a storage made for testing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeo_client::objects::{ObjValue, Object};
use zeo_client::{Client, ClientError, ClientOptions, Oid, RetryPolicy, Z64};

/// Largest HTTP response body read.
const MAX_RESPONSE: usize = 4 << 20;

/// Where one write goes, so that it can be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A key of the app's key-value API.
    Key(String),
    /// An object in the storage.
    Oid(Oid),
}

/// A failed operation, by kind: `http_503`, `timeout`, `connect`, or a zeo-client error kind
/// (`disconnected`, `conflict`, ...).
pub type Failure = String;

/// The system under load.
pub enum Target {
    /// A zeo-app.
    Http {
        /// Base URL without a trailing slash.
        base: String,
        /// Pooled HTTP/1 client.
        client: Box<HttpClient<HttpConnector, Full<Bytes>>>,
        /// Deadline of one request.
        timeout: Duration,
    },
    /// A ZEO storage.
    Storage {
        /// The storage client.
        client: Client,
        /// The pre-created objects read and overwritten without `--verify`.
        objects: Vec<Oid>,
    },
}

impl Target {
    /// An HTTP target.
    pub fn http(base: &str, timeout: Duration) -> Target {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = HttpClient::builder(TokioExecutor::new()).build(connector);
        Target::Http { base: base.trim_end_matches('/').to_owned(), client: Box::new(client), timeout }
    }

    /// A storage target: connects, and without `verify` creates `objects` objects to work on.
    ///
    /// # Errors
    ///
    /// Connection or commit failures.
    pub async fn storage(
        addrs: &[String],
        timeout: Duration,
        dead_after: Duration,
        verify: bool,
        objects: usize,
    ) -> anyhow::Result<Target> {
        anyhow::ensure!(dead_after >= Duration::from_millis(200), "--dead-after {dead_after:?}: at least 200ms");
        let mut opts = ClientOptions::new(addrs.iter().cloned());
        opts.call_timeout = timeout;
        opts.wait_timeout = timeout;
        // A SYN lost to a host that vanished is retransmitted only after 1 s, then 3 s: trying
        // again sooner reaches a moved address sooner.
        opts.connect_timeout = timeout.min(dead_after / 4);
        opts.reconnect_max = dead_after / 4;
        opts.heartbeat_interval = dead_after / 4;
        opts.heartbeat_timeout = dead_after - dead_after / 4;
        opts.retry =
            RetryPolicy { attempts: 5, backoff_min: Duration::from_millis(5), backoff_max: Duration::from_millis(200) };
        let client = Client::connect(opts).await?;
        let mut oids = Vec::new();
        if !verify {
            // In batches, so that one transaction stays small.
            while oids.len() < objects {
                let n = (objects - oids.len()).min(100);
                let batch = client
                    .transact(|txn| async move {
                        let mut batch = Vec::with_capacity(n);
                        for _ in 0..n {
                            let oid = txn.new_oid().await?;
                            txn.store_object(oid, Z64, &record(0, ""))?;
                            batch.push(oid);
                        }
                        Ok(batch)
                    })
                    .await?;
                oids.extend(batch);
            }
        }
        Ok(Target::Storage { client, objects: oids })
    }

    /// The item of object slot `slot` (without `--verify`).
    pub fn slot_item(&self, prefix: &str, slot: usize) -> Item {
        match self {
            Target::Http { .. } => Item::Key(format!("{prefix}-{slot}")),
            Target::Storage { objects, .. } => Item::Oid(objects[slot % objects.len()]),
        }
    }

    /// A fresh item for the write with unique `id` (with `--verify`).
    ///
    /// # Errors
    ///
    /// A storage that cannot hand out an oid.
    pub async fn fresh_item(&self, prefix: &str, id: u64) -> Result<Item, Failure> {
        match self {
            Target::Http { .. } => Ok(Item::Key(format!("{prefix}-w{id}"))),
            Target::Storage { client, .. } => client.new_oid().await.map(Item::Oid).map_err(|e| e.kind().to_owned()),
        }
    }

    /// Writes `{"id": id, "payload": payload}` to `item`; `Ok` means acknowledged (committed).
    ///
    /// # Errors
    ///
    /// The failure's kind.
    pub async fn write(&self, item: &Item, id: u64, payload: &str) -> Result<(), Failure> {
        match (self, item) {
            (Target::Http { .. }, Item::Key(key)) => {
                let body = serde_json::json!({"id": id, "payload": payload}).to_string();
                let (status, _) = self.request(Method::PUT, key, Some(body)).await?;
                if (200..300).contains(&status) { Ok(()) } else { Err(format!("http_{status}")) }
            }
            (Target::Storage { client, objects }, Item::Oid(oid)) => {
                // With --verify there are no pre-created objects and every write goes to a new one.
                let (oid, fresh) = (*oid, objects.is_empty());
                let obj = record(id, payload);
                let obj = &obj;
                client
                    .transact(|txn| async move {
                        let serial = if fresh { Z64 } else { txn.load(oid).await?.1 };
                        txn.store_object(oid, serial, obj)
                    })
                    .await
                    .map_err(|e| e.kind().to_owned())
            }
            _ => Err("item_mismatch".to_owned()),
        }
    }

    /// Reads `item`: the id it holds, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// The failure's kind.
    pub async fn read(&self, item: &Item) -> Result<Option<u64>, Failure> {
        match (self, item) {
            (Target::Http { .. }, Item::Key(key)) => match self.request(Method::GET, key, None).await? {
                (200, body) => {
                    let doc: serde_json::Value =
                        serde_json::from_slice(&body).map_err(|_| "bad_response".to_owned())?;
                    doc["id"].as_u64().map(Some).ok_or_else(|| "bad_response".to_owned())
                }
                (404, _) => Ok(None),
                (status, _) => Err(format!("http_{status}")),
            },
            (Target::Storage { client, .. }, Item::Oid(oid)) => match client.begin().load_mapping(*oid).await {
                Ok((entries, _)) => {
                    let id = entries.get("id").and_then(ObjValue::as_int).and_then(|i| u64::try_from(i).ok());
                    id.map(Some).ok_or_else(|| "bad_record".to_owned())
                }
                Err(ClientError::PosKey { .. }) => Ok(None),
                Err(e) => Err(e.kind().to_owned()),
            },
            _ => Err("item_mismatch".to_owned()),
        }
    }

    /// Makes later reads see every write acknowledged so far (storage: one `sync`; HTTP: the
    /// app syncs on every request by itself).
    ///
    /// # Errors
    ///
    /// The failure's kind.
    pub async fn sync(&self) -> Result<(), Failure> {
        match self {
            Target::Http { .. } => Ok(()),
            Target::Storage { client, .. } => client.sync().await.map(|_| ()).map_err(|e| e.kind().to_owned()),
        }
    }

    /// One request to `/api/kv/{key}`, within the deadline; returns status and body.
    async fn request(&self, method: Method, key: &str, body: Option<String>) -> Result<(u16, Bytes), Failure> {
        let Target::Http { base, client, timeout } = self else { return Err("item_mismatch".to_owned()) };
        let mut req = Request::builder().method(method).uri(format!("{base}/api/kv/{key}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req =
            req.body(Full::new(body.map(Bytes::from).unwrap_or_default())).map_err(|_| "bad_request".to_owned())?;
        let call = async {
            let resp = client.request(req).await.map_err(|e| if e.is_connect() { "connect" } else { "transport" })?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await.map_err(|_| "transport")?;
            Ok::<_, &str>((status, body.to_bytes()))
        };
        match tokio::time::timeout(*timeout, call).await {
            Ok(r) => r.map_err(str::to_owned),
            Err(_) => Err("timeout".to_owned()),
        }
    }
}

/// The stored form of one write.
fn record(id: u64, payload: &str) -> Object {
    Object::Mapping(BTreeMap::from([
        // Ids are counted from 1 by one process: far below i64::MAX.
        ("id".to_owned(), ObjValue::Int(i64::try_from(id).unwrap_or(i64::MAX))),
        ("payload".to_owned(), ObjValue::from(payload)),
    ]))
}

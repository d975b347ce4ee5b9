//! The lease as one JSON value in etcd v3, written with a transaction that compares the key's
//! mod revision (create: compares its version with 0).
//!
//! etcd is spoken to through its JSON gateway (`POST /v3/kv/range`, `/v3/kv/txn`, served on the
//! client port by every etcd since 3.4): two calls are all the lease needs, and the gRPC client
//! would cost a protobuf compiler at build time on every machine that builds the supervisor.
//!
//! The key is deliberately not attached to an etcd lease (TTL): a key that vanished on expiry
//! would take the transition count, our epoch, with it, and the next holder would promote at a
//! lower epoch than its predecessor. Expiry is the observers' job ([`LeaseElector`]).
//!
//! [`LeaseElector`]: super::LeaseElector

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};

const BACKEND: &str = "etcd";

/// A lease record stored at one etcd key.
pub struct EtcdLeaseStore {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last: tried first next time.
    current: AtomicUsize,
    key: String,
}

#[derive(Debug, thiserror::Error)]
enum EtcdError {
    #[error("{endpoint}: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: HTTP {status}: {message}")]
    Refused { endpoint: String, status: u16, message: String },
    #[error("{0}")]
    Endpoint(String),
}

/// Int64 fields arrive as JSON strings (proto3 JSON mapping); absent means zero.
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map_or(Ok(0), |s| s.parse().map_err(serde::de::Error::custom))
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct KeyValue {
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct TxnResponse {
    #[serde(default)]
    header: Header,
    /// proto3 JSON leaves `false` out.
    #[serde(default)]
    succeeded: bool,
}

impl EtcdLeaseStore {
    /// A store on `endpoints` (`http://host:port`, tried in turn); every request is bounded by
    /// `timeout`. Nothing is sent yet: an etcd that is not up yet is the loop's "store
    /// unreachable", not a reason for the supervisor to exit.
    ///
    /// # Errors
    /// An endpoint is not an `http://` URL, or the HTTP client cannot be built.
    pub async fn connect(endpoints: &[String], key: impl Into<String>, timeout: Duration) -> Result<Self, LeaseError> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        if endpoints.is_empty() {
            return Err(LeaseError::backend(BACKEND, EtcdError::Endpoint("no endpoint given".into())));
        }
        if let Some(bad) = endpoints.iter().find(|e| !e.starts_with("http://")) {
            let why = format!(
                "{bad}: expected http://host:port (TLS to etcd is not supported; keep it on a private network)"
            );
            return Err(LeaseError::backend(BACKEND, EtcdError::Endpoint(why)));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| LeaseError::backend(BACKEND, e))?;
        Ok(EtcdLeaseStore { http, endpoints, current: AtomicUsize::new(0), key: key.into() })
    }

    /// POSTs `body` to `path` on the current endpoint, then on the others while they cannot be
    /// reached. An answer that refuses the request is final: another member would refuse it too.
    async fn call<T: for<'de> Deserialize<'de>>(&self, path: &str, body: &Value) -> Result<T, LeaseError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.endpoints.len() {
            let n = (start + i) % self.endpoints.len();
            let endpoint = &self.endpoints[n];
            let sent = self.http.post(format!("{endpoint}{path}")).json(body).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(source) => {
                    last = Some(EtcdError::Http { endpoint: endpoint.clone(), source });
                    continue;
                }
            };
            self.current.store(n, Ordering::Relaxed);
            let status = resp.status();
            if !status.is_success() {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or(text);
                let e = EtcdError::Refused { endpoint: endpoint.clone(), status: status.as_u16(), message };
                return Err(LeaseError::backend(BACKEND, e));
            }
            return resp.json::<T>().await.map_err(|source| {
                LeaseError::backend(BACKEND, EtcdError::Http { endpoint: endpoint.clone(), source })
            });
        }
        Err(LeaseError::backend(BACKEND, last.unwrap_or_else(|| EtcdError::Endpoint("no endpoint".into()))))
    }

    fn key_b64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }
}

#[async_trait]
impl LeaseStore for EtcdLeaseStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        let resp: RangeResponse = self.call("/v3/kv/range", &json!({ "key": self.key_b64() })).await?;
        let Some(item) = resp.kvs.first() else {
            return Ok(None);
        };
        let corrupt = |e: String| LeaseError::Corrupt(format!("{}: {e}", self.key));
        let value = B64.decode(&item.value).map_err(|e| corrupt(e.to_string()))?;
        let record: LeaseRecord = serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(Versioned { record, version: Version(item.mod_revision.to_string()) }))
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let key = self.key_b64();
        let guard = match expected {
            None => json!({ "key": key, "target": "VERSION", "result": "EQUAL", "version": "0" }),
            Some(v) => {
                let rev: i64 = v.0.parse().map_err(|_| LeaseError::Corrupt(format!("etcd revision {:?}", v.0)))?;
                json!({ "key": key, "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() })
            }
        };
        let value = serde_json::to_vec(record).map_err(|e| LeaseError::Corrupt(e.to_string()))?;
        let txn = json!({
            "compare": [guard],
            "success": [{ "request_put": { "key": key, "value": B64.encode(value) } }],
        });
        let resp: TxnResponse = self.call("/v3/kv/txn", &txn).await?;
        if !resp.succeeded {
            return Ok(Cas::Conflict);
        }
        if resp.header.revision <= 0 {
            return Err(LeaseError::Corrupt("etcd txn answer without a revision".into()));
        }
        // The put's mod revision is the transaction's revision.
        Ok(Cas::Written(Version(resp.header.revision.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lease::tests::elector_contract;
    use crate::testkit::etcd::EtcdProcess;

    #[tokio::test]
    #[ignore = "needs etcd: apt-get install etcd-server; run with scripts/test or cargo test -- --include-ignored"]
    async fn elector_contract_on_real_etcd() {
        let etcd = EtcdProcess::start().await;
        let store =
            EtcdLeaseStore::connect(&[etcd.endpoint()], "/zeo-rs/test/lease", Duration::from_secs(5)).await.unwrap();
        elector_contract(Arc::new(store)).await;
    }

    #[tokio::test]
    #[ignore = "needs etcd: apt-get install etcd-server; run with scripts/test or cargo test -- --include-ignored"]
    async fn a_dead_endpoint_is_skipped_for_a_live_one() {
        let etcd = EtcdProcess::start().await;
        let dead = format!("http://127.0.0.1:{}", crate::testkit::free_port());
        let store = EtcdLeaseStore::connect(&[dead, etcd.endpoint()], "/zeo-rs/test/failover", Duration::from_secs(2))
            .await
            .unwrap();
        elector_contract(Arc::new(store)).await;
    }

    #[tokio::test]
    #[ignore = "needs etcd: apt-get install etcd-server; run with scripts/test or cargo test -- --include-ignored"]
    async fn unreachable_etcd_is_an_error_not_a_conflict() {
        let etcd = EtcdProcess::start().await;
        let store = EtcdLeaseStore::connect(&[etcd.endpoint()], "/k", Duration::from_millis(500)).await.unwrap();
        drop(etcd);
        assert!(store.get().await.is_err());
    }

    #[tokio::test]
    async fn tls_endpoints_are_refused_up_front() {
        let Err(e) = EtcdLeaseStore::connect(&["https://etcd:2379".into()], "/k", Duration::from_secs(1)).await else {
            panic!("https accepted");
        };
        assert!(e.to_string().contains("TLS"), "{e}");
    }
}

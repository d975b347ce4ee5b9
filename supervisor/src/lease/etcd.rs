//! The lease as one JSON value in etcd v3, written with a transaction that compares the key's
//! mod revision (create: compares its version with 0).
//!
//! The key is deliberately not attached to an etcd lease (TTL): a key that vanished on expiry
//! would take the transition count, our epoch, with it, and the next holder would promote at a
//! lower epoch than its predecessor. Expiry is the observers' job ([`LeaseElector`]).
//!
//! [`LeaseElector`]: super::LeaseElector

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, KvClient, Txn, TxnOp};

use super::{Cas, LeaseError, LeaseRecord, LeaseStore, Version, Versioned};

const BACKEND: &str = "etcd";

/// A lease record stored at one etcd key.
pub struct EtcdLeaseStore {
    kv: KvClient,
    key: String,
}

impl EtcdLeaseStore {
    /// Connects to `endpoints` (`http://host:port`); every request is bounded by `timeout`.
    ///
    /// # Errors
    /// No endpoint could be reached.
    pub async fn connect(endpoints: &[String], key: impl Into<String>, timeout: Duration) -> Result<Self, LeaseError> {
        let opts = ConnectOptions::new().with_timeout(timeout).with_connect_timeout(timeout);
        let client = Client::connect(endpoints, Some(opts)).await.map_err(|e| LeaseError::backend(BACKEND, e))?;
        Ok(EtcdLeaseStore { kv: client.kv_client(), key: key.into() })
    }
}

#[async_trait]
impl LeaseStore for EtcdLeaseStore {
    async fn get(&self) -> Result<Option<Versioned>, LeaseError> {
        let mut kv = self.kv.clone();
        let resp = kv.get(self.key.as_str(), None).await.map_err(|e| LeaseError::backend(BACKEND, e))?;
        let Some(item) = resp.kvs().first() else {
            return Ok(None);
        };
        let record: LeaseRecord =
            serde_json::from_slice(item.value()).map_err(|e| LeaseError::Corrupt(format!("{}: {e}", self.key)))?;
        Ok(Some(Versioned { record, version: Version(item.mod_revision().to_string()) }))
    }

    async fn compare_and_swap(&self, expected: Option<&Version>, record: &LeaseRecord) -> Result<Cas, LeaseError> {
        let guard = match expected {
            None => Compare::version(self.key.as_str(), CompareOp::Equal, 0),
            Some(v) => {
                let rev: i64 = v.0.parse().map_err(|_| LeaseError::Corrupt(format!("etcd revision {:?}", v.0)))?;
                Compare::mod_revision(self.key.as_str(), CompareOp::Equal, rev)
            }
        };
        let value = serde_json::to_vec(record).map_err(|e| LeaseError::Corrupt(e.to_string()))?;
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(self.key.as_str(), value, None)]);
        let mut kv = self.kv.clone();
        let resp = kv.txn(txn).await.map_err(|e| LeaseError::backend(BACKEND, e))?;
        if !resp.succeeded() {
            return Ok(Cas::Conflict);
        }
        // The put's mod revision is the transaction's revision.
        let rev =
            resp.header().map(|h| h.revision()).ok_or_else(|| LeaseError::Corrupt("txn without header".into()))?;
        Ok(Cas::Written(Version(rev.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::lease::tests::elector_contract;
    use crate::testkit::etcd::EtcdProcess;

    #[tokio::test]
    async fn elector_contract_on_real_etcd() {
        let Some(etcd) = EtcdProcess::start().await else {
            return;
        };
        let store =
            EtcdLeaseStore::connect(&[etcd.endpoint()], "/zeo-rs/test/lease", Duration::from_secs(5)).await.unwrap();
        elector_contract(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn unreachable_etcd_is_an_error_not_a_conflict() {
        let Some(etcd) = EtcdProcess::start().await else {
            return;
        };
        let store = EtcdLeaseStore::connect(&[etcd.endpoint()], "/k", Duration::from_millis(500)).await.unwrap();
        drop(etcd);
        assert!(store.get().await.is_err());
    }
}

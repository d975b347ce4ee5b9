//! The zeo-server's `GET /status` document, as far as the supervisor reads it.
//!
//! Unknown fields are ignored on purpose: the server may add fields without breaking a
//! supervisor of an older release running beside it during a rolling upgrade. Tids are read into
//! [`Tid`]s here, so the rules compare them as tids, never as text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeo_proto::Tid;

/// The role a zeo-server reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerRole {
    /// Accepts commits (when `writable`) and streams them to standbys.
    Primary,
    /// Applies a primary's stream; read-only for clients.
    Standby,
    /// Fenced: commits stopped, clients disconnected; waits for `/rejoin` or `/promote`.
    Demoted,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub role: ServerRole,
    pub epoch: u64,
    pub writable: bool,
    /// The last committed (or applied) transaction.
    #[serde(with = "hex_tid")]
    pub last_tid: Tid,
    #[serde(default)]
    pub replication: Replication,
    /// The server's CLOCK_BOOTTIME (ns) when it wrote this answer; absent on a server without
    /// write leases (an older release): then nothing is granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boottime_ns: Option<u64>,
    /// Why `writable` is false (the write lease ran out, read-only, ...), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_writable_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_lease: Option<WriteLease>,
    /// Per storage, its own `replication` section (the first one is also `replication`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storages: BTreeMap<String, StorageSection>,
}

/// `write_lease` in `/status`: the deadline the supervisor last granted, as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteLease {
    /// The server acknowledges nothing without a grant.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub remaining_ms: Option<u64>,
    #[serde(default)]
    pub expired: bool,
}

/// One storage's entry in `storages`, as far as the supervisor reads it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StorageSection {
    #[serde(default)]
    pub replication: Option<StorageReplication>,
}

/// The part of a storage's `replication` section that differs between storages and matters here.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StorageReplication {
    /// A primary's standbys it would drop from the sync set: it waits for their marks in the lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degrade_requested: Vec<String>,
    /// A standby's write error on this storage (disk full): it is not in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

/// The role-dependent `replication` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Replication {
    Primary(PrimaryReplication),
    Standby(StandbyReplication),
    /// A demoted server (or a future shape) reports something else; nothing in it is used.
    Other(serde_json::Value),
}

impl Default for Replication {
    fn default() -> Replication {
        Replication::Other(serde_json::Value::Null)
    }
}

/// `replication` on a primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrimaryReplication {
    pub sync_standbys: u64,
    pub sync_timeout_ms: Option<u64>,
    pub sync_state: SyncState,
    pub standbys: Vec<StandbyLink>,
    /// Standbys the server would drop from the sync set (the sync timeout passed): it degrades
    /// past them only once their out-of-sync marks are in the lease (`POST /out-of-sync`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degrade_requested: Vec<String>,
}

/// Whether the primary waits for standby acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    Async,
    Sync,
    Blocked,
    Degraded,
}

/// One standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyLink {
    pub name: String,
    pub connected: bool,
    #[serde(with = "hex_tid")]
    pub acked_tid: Tid,
    pub lag_transactions: u64,
    /// `null` when the server did not compute it (a standby very far behind).
    #[serde(default)]
    pub lag_bytes: Option<u64>,
    pub lag_seconds: f64,
    pub in_sync: bool,
    pub out_of_sync: bool,
}

/// `replication` on a standby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyReplication {
    /// `host:port` of the replication listener it follows.
    pub primary: String,
    pub connected: bool,
    #[serde(with = "hex_tid")]
    pub applied_tid: Tid,
    pub lag_transactions: u64,
    pub lag_seconds: f64,
    pub in_sync: bool,
    /// Durable: the primary degraded past this standby, so it may lack acknowledged commits.
    pub out_of_sync: bool,
    /// Its own storage failed a write (disk full): it may lack what it acknowledged applying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

impl ServerStatus {
    /// The standby half of `replication`, when this is a standby.
    pub fn standby(&self) -> Option<&StandbyReplication> {
        match &self.replication {
            Replication::Standby(s) => Some(s),
            _ => None,
        }
    }

    /// The primary half of `replication`, when this is a primary.
    pub fn primary(&self) -> Option<&PrimaryReplication> {
        match &self.replication {
            Replication::Primary(p) => Some(p),
            _ => None,
        }
    }

    /// The standbys a primary asks to degrade past, over every storage, sorted, no repeats.
    pub fn degrade_requested(&self) -> Vec<String> {
        let mut names: Vec<String> = self.primary().map(|p| p.degrade_requested.clone()).unwrap_or_default();
        names.extend(
            self.storages.values().filter_map(|s| s.replication.as_ref()).flat_map(|r| r.degrade_requested.clone()),
        );
        names.sort();
        names.dedup();
        names
    }

    /// A standby's storage write error, on any storage.
    pub fn storage_error(&self) -> Option<&str> {
        self.standby()
            .and_then(|r| r.storage_error.as_deref())
            .or_else(|| self.storages.values().filter_map(|s| s.replication.as_ref()?.storage_error.as_deref()).next())
    }

    /// The newest transaction this server has: applied on a standby, committed otherwise.
    pub fn position(&self) -> Tid {
        self.standby().map_or(self.last_tid, |s| s.applied_tid)
    }
}

/// A tid as `/status` writes it: 16 hex digits, big-endian like the tid's bytes.
mod hex_tid {
    use serde::{Deserialize, Deserializer, Serializer};
    use zeo_proto::{Tid, p64, u64_of};

    pub fn serialize<S: Serializer>(tid: &Tid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:016x}", u64_of(*tid)))
    }

    /// A tid that does not read as hex is the zero tid: it ranks below every real one, so a
    /// garbled status never makes its server look furthest ahead.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tid, D::Error> {
        let text = String::deserialize(d)?;
        Ok(p64(u64::from_str_radix(&text, 16).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_primary_and_standby_documents() {
        let p: ServerStatus = serde_json::from_str(
            r#"{"role":"primary","epoch":3,"writable":true,"last_tid":"03e0000000000001","extra":1,
               "replication":{"sync_standbys":1,"sync_timeout_ms":null,"sync_state":"sync","standbys":[
                 {"name":"b","connected":true,"acked_tid":"03e0000000000001","lag_transactions":0,
                  "lag_bytes":0,"lag_seconds":0.0,"in_sync":true,"out_of_sync":false}]}}"#,
        )
        .unwrap();
        assert_eq!(p.primary().unwrap().standbys[0].name, "b");
        assert_eq!(p.primary().unwrap().sync_state, SyncState::Sync);
        let s: ServerStatus = serde_json::from_str(
            r#"{"role":"standby","epoch":3,"writable":false,"last_tid":"03e0000000000001",
               "replication":{"primary":"a:9000","connected":false,"applied_tid":"03e0000000000002",
                 "lag_transactions":2,"lag_seconds":0.5,"in_sync":false,"out_of_sync":true}}"#,
        )
        .unwrap();
        assert!(s.standby().unwrap().out_of_sync);
        assert_eq!(s.position(), zeo_proto::p64(0x03e0_0000_0000_0002));
        assert!(s.position() > s.last_tid, "tids compare as tids");
        let d: ServerStatus =
            serde_json::from_str(r#"{"role":"demoted","epoch":3,"writable":false,"last_tid":"00","replication":{}}"#)
                .unwrap();
        assert!(matches!(d.replication, Replication::Other(_)));
        assert_eq!(d.last_tid, [0; 8]);
    }

    #[test]
    fn reads_the_write_lease_fields_and_degrade_requests_of_every_storage() {
        let p: ServerStatus = serde_json::from_str(
            r#"{"role":"primary","epoch":3,"writable":false,"last_tid":"03e0000000000001",
               "not_writable_reason":"write lease expired","boottime_ns":123456789,
               "write_lease":{"required":true,"remaining_ms":0,"expired":true},
               "replication":{"sync_standbys":1,"sync_timeout_ms":500,"sync_state":"sync","standbys":[],
                 "degrade_requested":["b"]},
               "storages":{"1":{"connections":0,"replication":{"degrade_requested":["b"],"standbys":[]}},
                           "2":{"replication":{"degrade_requested":["c"]}}}}"#,
        )
        .unwrap();
        assert_eq!(p.boottime_ns, Some(123_456_789));
        assert!(p.write_lease.as_ref().is_some_and(|w| w.required && w.expired));
        assert_eq!(p.degrade_requested(), ["b", "c"], "over every storage, without repeats");
        let s: ServerStatus = serde_json::from_str(
            r#"{"role":"standby","epoch":3,"writable":false,"last_tid":"03e0000000000001",
               "replication":{"primary":"a:9000","connected":true,"applied_tid":"03e0000000000001",
                 "lag_transactions":0,"lag_seconds":0.0,"in_sync":false,"out_of_sync":false,
                 "storage_error":"No space left on device"}}"#,
        )
        .unwrap();
        assert_eq!(s.storage_error(), Some("No space left on device"));
    }

    #[test]
    fn tids_are_written_back_as_sixteen_hex_digits_and_garbage_ranks_lowest() {
        let st: ServerStatus =
            serde_json::from_str(r#"{"role":"demoted","epoch":1,"writable":false,"last_tid":"03e00000000000ff"}"#)
                .unwrap();
        assert_eq!(serde_json::to_value(&st).unwrap()["last_tid"], "03e00000000000ff");
        let garbled: ServerStatus =
            serde_json::from_str(r#"{"role":"demoted","epoch":1,"writable":false,"last_tid":"not a tid"}"#).unwrap();
        assert_eq!(garbled.last_tid, [0; 8]);
    }
}

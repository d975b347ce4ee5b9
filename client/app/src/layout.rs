//! Where the application keeps its objects, and creating them in an empty database.
//!
//! ```text
//! root (oid 0, PersistentMapping)
//!  └─ "zeo_app": PersistentMapping {"schema": 1, "wiki": ref, "counters": ref, "kv": [ref; 16]}
//!      ├─ wiki:     PersistentMapping  page name -> ref Page (see `wiki`)
//!      ├─ counters: PersistentMapping  counter name -> ref BTrees.Length.Length (see `counters`):
//!      │            concurrent increments of one counter conflict on its Length, which the
//!      │            server merges at vote
//!      └─ kv:       16 PersistentMapping buckets, key -> value, picked by a hash of the key, so
//!                   that writes to different keys rarely touch the same object
//! ```
//!
//! Python's ZODB can open the database and read all of it (`root['zeo_app']`).

use std::collections::BTreeMap;

use zeo_client::objects::{ObjRef, ObjValue, Object, ROOT_OID};
use zeo_client::{Client, ClientError, Oid, Transaction, Z64};

/// The root key of the application's objects.
pub const APP_KEY: &str = "zeo_app";

/// The layout version this code reads and writes.
const SCHEMA: i64 = 1;

/// Number of key-value buckets. Part of the schema: changing it moves keys between buckets.
pub const KV_BUCKETS: usize = 16;

/// The oids of the application's container objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Page name -> page.
    pub wiki: Oid,
    /// Counter name -> value.
    pub counters: Oid,
    /// The key-value buckets.
    pub kv: Vec<Oid>,
}

impl Layout {
    /// The bucket holding `key`: FNV-1a, stable across replicas, versions and platforms.
    pub fn kv_bucket(&self, key: &str) -> Oid {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        // The modulo is below KV_BUCKETS, so it fits in usize; the index is in range.
        self.kv[(h % self.kv.len() as u64) as usize]
    }
}

/// Reads the layout, creating the root and the application's objects if they are missing.
/// Replicas racing to create them conflict; the loser retries and reads the winner's.
///
/// # Errors
///
/// Storage errors; [`ClientError::BadRecord`] if `root['zeo_app']` is not what this code wrote.
pub async fn ensure(client: &Client) -> Result<Layout, ClientError> {
    client.ensure_root().await?;
    client
        .transact(|txn| async move {
            let (mut root, serial) = txn.load_mapping(ROOT_OID).await?;
            if let Some(app) = root.get(APP_KEY) {
                let oid = app.as_ref().map(|r| r.oid).ok_or_else(|| bad("root['zeo_app'] is not a reference"))?;
                let (app, _) = txn.load_mapping(oid).await?;
                return parse(&app);
            }
            let (layout, app) = create(&txn).await?;
            let app_oid = txn.new_oid().await?;
            txn.store_object(app_oid, Z64, &app)?;
            root.insert(APP_KEY.to_owned(), app.reference(app_oid).into());
            txn.note("zeo-app: create the application's objects");
            txn.store_object(ROOT_OID, serial, &Object::Mapping(root))?;
            Ok(layout)
        })
        .await
}

/// Stores the empty containers and returns the layout and the `zeo_app` object naming them.
async fn create(txn: &Transaction) -> Result<(Layout, Object), ClientError> {
    let empty = Object::Mapping(BTreeMap::new());
    let mut oids = Vec::with_capacity(2 + KV_BUCKETS);
    for _ in 0..2 + KV_BUCKETS {
        let oid = txn.new_oid().await?;
        txn.store_object(oid, Z64, &empty)?;
        oids.push(oid);
    }
    let layout = Layout { wiki: oids[0], counters: oids[1], kv: oids[2..].to_vec() };
    let app = Object::Mapping(BTreeMap::from([
        ("schema".to_owned(), ObjValue::Int(SCHEMA)),
        ("wiki".to_owned(), ObjRef::mapping(layout.wiki).into()),
        ("counters".to_owned(), ObjRef::mapping(layout.counters).into()),
        ("kv".to_owned(), ObjValue::List(layout.kv.iter().map(|o| ObjRef::mapping(*o).into()).collect())),
    ]));
    Ok((layout, app))
}

fn parse(app: &BTreeMap<String, ObjValue>) -> Result<Layout, ClientError> {
    if app.get("schema").and_then(ObjValue::as_int) != Some(SCHEMA) {
        return Err(bad("root['zeo_app'] has an unknown schema"));
    }
    let oid = |v: Option<&ObjValue>| v.and_then(ObjValue::as_ref).map(|r| r.oid);
    let wiki = oid(app.get("wiki")).ok_or_else(|| bad("no wiki"))?;
    let counters = oid(app.get("counters")).ok_or_else(|| bad("no counters"))?;
    let kv: Vec<Oid> = app
        .get("kv")
        .and_then(ObjValue::as_list)
        .and_then(|items| items.iter().map(|v| oid(Some(v))).collect::<Option<_>>())
        .ok_or_else(|| bad("no kv buckets"))?;
    if kv.len() != KV_BUCKETS {
        return Err(bad("wrong number of kv buckets"));
    }
    Ok(Layout { wiki, counters, kv })
}

fn bad(reason: &str) -> ClientError {
    ClientError::BadRecord { oid: ROOT_OID, reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_buckets_are_stable_and_spread() {
        let layout = Layout { wiki: Z64, counters: Z64, kv: (1..=16).map(zeo_client::p64).collect() };
        // Fixed values: replicas of any version must agree.
        assert_eq!(layout.kv_bucket(""), zeo_client::p64(0xcbf2_9ce4_8422_2325 % 16 + 1));
        let used: std::collections::HashSet<Oid> = (0..200).map(|i| layout.kv_bucket(&format!("k{i}"))).collect();
        assert_eq!(used.len(), KV_BUCKETS);
    }
}

//! Counters: every counter lives in one `PersistentMapping` (name -> int), on purpose. It is
//! the application's hot object: concurrent increments, from one replica or several, conflict
//! at commit and are retried by [`zeo_client::Client::transact`], so the total is exact.

use std::collections::BTreeMap;

use zeo_client::objects::{ObjValue, Object};

use crate::db::{Db, StoreError};
use crate::names::check_name;

/// Adds `by` to counter `name` (created at 0) and returns the new value.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad name or an overflow; storage errors.
pub async fn incr(db: &Db, name: &str, by: i64) -> Result<i64, StoreError> {
    check_name(name)?;
    let oid = db.fresh().await?.counters;
    // The outer error is the storage's; the inner result is what the transaction decided.
    db.client
        .transact(|txn| async move {
            let (mut counters, serial) = txn.load_mapping(oid).await?;
            let old = counters.get(name).and_then(ObjValue::as_int).unwrap_or(0);
            let Some(new) = old.checked_add(by) else {
                txn.abort();
                return Ok(Err(StoreError::Invalid(format!("counter {name} would overflow"))));
            };
            counters.insert(name.to_owned(), ObjValue::Int(new));
            txn.store_object(oid, serial, &Object::Mapping(counters))?;
            Ok(Ok(new))
        })
        .await?
}

/// Every counter and its value.
///
/// # Errors
///
/// Storage errors.
pub async fn all(db: &Db) -> Result<BTreeMap<String, i64>, StoreError> {
    let oid = db.fresh().await?.counters;
    let (counters, _) = db.client.begin().load_mapping(oid).await?;
    Ok(counters.into_iter().filter_map(|(k, v)| v.as_int().map(|i| (k, i))).collect())
}

/// The value of counter `name`, if it was ever incremented.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad name; storage errors.
pub async fn get(db: &Db, name: &str) -> Result<Option<i64>, StoreError> {
    check_name(name)?;
    Ok(all(db).await?.get(name).copied())
}

//! The key-value API: JSON values under string keys, spread over the layout's buckets.

use zeo_client::objects::{ObjValue, Object};

use crate::db::{Db, StoreError};
use crate::names::check_key;

/// The value stored under `key`.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad key; storage errors.
pub async fn get(db: &Db, key: &str) -> Result<Option<ObjValue>, StoreError> {
    check_key(key)?;
    let bucket = db.fresh().await?.kv_bucket(key);
    let (mut entries, _) = db.client.begin().load_mapping(bucket).await?;
    Ok(entries.remove(key))
}

/// Stores `value` under `key`; returns whether the key was new.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad key; storage errors.
pub async fn put(db: &Db, key: &str, value: ObjValue) -> Result<bool, StoreError> {
    check_key(key)?;
    let bucket = db.fresh().await?.kv_bucket(key);
    let value = &value;
    let created = db
        .client
        .transact(|txn| async move {
            let (mut entries, serial) = txn.load_mapping(bucket).await?;
            let created = entries.insert(key.to_owned(), value.clone()).is_none();
            txn.store_object(bucket, serial, &Object::Mapping(entries))?;
            Ok(created)
        })
        .await?;
    Ok(created)
}

/// Removes `key`; returns whether it existed.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad key; storage errors.
pub async fn delete(db: &Db, key: &str) -> Result<bool, StoreError> {
    check_key(key)?;
    let bucket = db.fresh().await?.kv_bucket(key);
    let existed = db
        .client
        .transact(|txn| async move {
            let (mut entries, serial) = txn.load_mapping(bucket).await?;
            if entries.remove(key).is_none() {
                txn.abort();
                return Ok(false);
            }
            txn.store_object(bucket, serial, &Object::Mapping(entries))?;
            Ok(true)
        })
        .await?;
    Ok(existed)
}

//! Counters: each counter is a `BTrees.Length.Length` object (its state is the int), and one
//! `PersistentMapping` maps every counter name to a reference to its Length.
//!
//! Why Length: it is the class ZODB applications use for exactly this, and a ZEO server
//! resolves its conflicts itself (zeo-server with `zeo-resolve`, runzeo with the Python class):
//! two increments based on the same revision merge into committed + new − old at vote, so
//! concurrent increments, from one replica or several, commit without a conflict round trip or
//! a retry, however busy the machine. (On a server in client-conflict-resolution mode they
//! conflict and are retried by [`zeo_client::Client::transact`], as every conflict was before.)
//! The mapping changes only when a counter is created.
//!
//! Databases written before counters were Lengths hold the value itself in the mapping
//! (name -> int); such a counter reads as before and becomes a Length at its next increment.

use std::collections::BTreeMap;

use zeo_client::objects::{ClassName, ObjRef, ObjValue, Object};
use zeo_client::{Oid, Transaction, Z64};

use crate::db::{Db, StoreError};
use crate::names::check_name;

/// `BTrees.Length.Length`.
fn length_class() -> ClassName {
    ClassName::new("BTrees.Length", "Length")
}

/// A Length record holding `value`, written as ZODB writes one (class global, state the int).
fn length(value: i64) -> Object {
    Object::Other { class: length_class(), state: ObjValue::Int(value) }
}

/// Where a counter's value is.
enum Slot {
    /// A Length object.
    Length(Oid),
    /// The value itself, in the mapping (the layout before Lengths).
    Inline(i64),
}

fn slot(name: &str, value: &ObjValue) -> Result<Slot, StoreError> {
    match value {
        ObjValue::Ref(r) => Ok(Slot::Length(r.oid)),
        v => v.as_int().map(Slot::Inline).ok_or_else(|| bad_counter(name, v.type_name())),
    }
}

fn bad_counter(name: &str, what: &str) -> StoreError {
    StoreError::Invalid(format!("counter {name} holds a {what}, not a counter"))
}

/// The value of the Length at `oid`, with its serial.
async fn load_length(txn: &Transaction, name: &str, oid: Oid) -> Result<(i64, zeo_client::Tid), StoreError> {
    let (obj, serial) = txn.load_object(oid).await?;
    match obj {
        Object::Other { class, state } if class == length_class() => {
            state.as_int().map(|v| (v, serial)).ok_or_else(|| bad_counter(name, state.type_name()))
        }
        other => Err(bad_counter(name, &other.class().to_string())),
    }
}

fn overflow(name: &str) -> StoreError {
    StoreError::Invalid(format!("counter {name} would overflow"))
}

/// Adds `by` to counter `name` (created at 0) and returns its value just after this increment
/// committed (which, with concurrent increments merged by the server, may include theirs).
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad name or an overflow; storage errors.
pub async fn incr(db: &Db, name: &str, by: i64) -> Result<i64, StoreError> {
    check_name(name)?;
    let oid = db.fresh().await?.counters;
    // The outer error is the storage's; the inner result is what the transaction decided.
    let (counter, _stored) = db
        .client
        .transact(|txn| async move {
            let (mut counters, serial) = txn.load_mapping(oid).await?;
            let slot = match counters.get(name).map(|v| slot(name, v)) {
                Some(Ok(s)) => s,
                Some(Err(e)) => return Ok(Err(e)),
                None => Slot::Inline(0),
            };
            match slot {
                Slot::Length(counter) => {
                    // Only the Length is stored: concurrent increments merge on the server.
                    let (old, length_serial) = match load_length(&txn, name, counter).await {
                        Ok(v) => v,
                        Err(StoreError::Client(e)) => return Err(e),
                        Err(e) => return Ok(Err(e)),
                    };
                    let Some(new) = old.checked_add(by) else { return Ok(Err(overflow(name))) };
                    txn.store_object(counter, length_serial, &length(new))?;
                    Ok(Ok((counter, new)))
                }
                Slot::Inline(old) => {
                    // A new counter, or one of the old layout: it becomes a Length.
                    let Some(new) = old.checked_add(by) else { return Ok(Err(overflow(name))) };
                    let counter = txn.new_oid().await?;
                    txn.store_object(counter, Z64, &length(new))?;
                    counters.insert(name.to_owned(), ObjRef { oid: counter, class: Some(length_class()) }.into());
                    txn.store_object(oid, serial, &Object::Mapping(counters))?;
                    Ok(Ok((counter, new)))
                }
            }
        })
        .await??;
    // What we stored is the value unless the server merged our store with others (then it did
    // not cache ours, and this load asks the server for the merged value).
    let (value, _) = load_length(&db.client.begin(), name, counter).await?;
    Ok(value)
}

/// Every counter and its value.
///
/// # Errors
///
/// Storage errors; [`StoreError::Invalid`] for a counter that holds something else.
pub async fn all(db: &Db) -> Result<BTreeMap<String, i64>, StoreError> {
    let oid = db.fresh().await?.counters;
    // One snapshot for the mapping and every Length.
    let txn = db.client.begin();
    let (counters, _) = txn.load_mapping(oid).await?;
    let mut out = BTreeMap::new();
    for (name, value) in &counters {
        let value = match slot(name, value)? {
            Slot::Inline(v) => v,
            Slot::Length(counter) => load_length(&txn, name, counter).await?.0,
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// The value of counter `name`, if it was ever incremented.
///
/// # Errors
///
/// [`StoreError::Invalid`] for a bad name; storage errors.
pub async fn get(db: &Db, name: &str) -> Result<Option<i64>, StoreError> {
    check_name(name)?;
    let oid = db.fresh().await?.counters;
    let txn = db.client.begin();
    let (counters, _) = txn.load_mapping(oid).await?;
    match counters.get(name).map(|v| slot(name, v)).transpose()? {
        None => Ok(None),
        Some(Slot::Inline(v)) => Ok(Some(v)),
        Some(Slot::Length(counter)) => Ok(Some(load_length(&txn, name, counter).await?.0)),
    }
}

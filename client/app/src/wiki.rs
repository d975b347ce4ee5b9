//! Wiki pages with their edit history.
//!
//! A page is a `PersistentMapping` `{"name", "body", "revision", "updated", "author",
//! "history": ref}`; its history is a `PersistentList` of revisions (dicts with the same
//! fields minus `name` and `history`), oldest first, the current one included, at most
//! [`MAX_HISTORY`] long. An edit writes the page and its history; creating a page also writes
//! the wiki index, so edits of different pages never conflict, and creations conflict only
//! with each other.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use zeo_client::objects::{ObjRef, ObjValue, Object};
use zeo_client::{ClientError, Oid, Transaction, Z64};

use crate::db::{Db, StoreError};
use crate::names::check_name;

/// Largest page body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Revisions kept per page; older ones are dropped.
pub const MAX_HISTORY: usize = 50;

/// One revision of a page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revision {
    /// 1 for the first version, then +1 per edit.
    pub revision: i64,
    /// The text.
    pub body: String,
    /// When it was saved, Unix seconds.
    pub updated: f64,
    /// Who saved it (free text; empty when not given).
    pub author: String,
}

/// A page at its current revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The page's name.
    pub name: String,
    /// Its current revision.
    #[serde(flatten)]
    pub current: Revision,
}

/// The names of every page, sorted.
///
/// # Errors
///
/// Storage errors.
pub async fn list(db: &Db) -> Result<Vec<String>, StoreError> {
    let layout = db.fresh().await?;
    let (index, _) = db.client.begin().load_mapping(layout.wiki).await?;
    Ok(index.into_keys().collect())
}

/// The page `name`, if it exists.
///
/// # Errors
///
/// Storage errors; [`StoreError::Invalid`] for a bad name.
pub async fn get(db: &Db, name: &str) -> Result<Option<Page>, StoreError> {
    check_name(name)?;
    let layout = db.fresh().await?;
    let txn = db.client.begin();
    let Some(oid) = page_oid(&txn, layout.wiki, name).await? else { return Ok(None) };
    let (page, _) = txn.load_mapping(oid).await?;
    Ok(Some(Page { name: name.to_owned(), current: revision_of(oid, &page)? }))
}

/// The revisions of page `name`, oldest first.
///
/// # Errors
///
/// As [`get`].
pub async fn history(db: &Db, name: &str) -> Result<Option<Vec<Revision>>, StoreError> {
    check_name(name)?;
    let layout = db.fresh().await?;
    let txn = db.client.begin();
    let Some(oid) = page_oid(&txn, layout.wiki, name).await? else { return Ok(None) };
    let (page, _) = txn.load_mapping(oid).await?;
    let hist = history_oid(oid, &page)?;
    let (items, _) = txn.load_list(hist).await?;
    let revisions = items
        .iter()
        .map(|v| v.as_dict().ok_or_else(|| bad(hist, "history entry is not a dict")).and_then(|d| revision_of(hist, d)))
        .collect::<Result<_, _>>()?;
    Ok(Some(revisions))
}

/// Saves a new revision of `name` (creating the page if needed) and returns its number. With
/// `base`, the edit only applies if the page is still at that revision (0: must not exist).
///
/// # Errors
///
/// [`StoreError::Stale`] when `base` is not current; [`StoreError::Invalid`] for a bad name or
/// a body over [`MAX_BODY`]; storage errors.
pub async fn put(db: &Db, name: &str, body: &str, author: &str, base: Option<i64>) -> Result<i64, StoreError> {
    check_name(name)?;
    if body.len() > MAX_BODY {
        return Err(StoreError::Invalid(format!("page bodies are at most {MAX_BODY} bytes")));
    }
    let index = db.fresh().await?.wiki;
    // The outer error is the storage's; the inner result is what the transaction decided.
    db.client
        .transact(|txn| async move {
            let updated = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let existing = page_oid(&txn, index, name).await?;
            let (page_oid, hist_oid, mut hist, current, serials) = match existing {
                Some(oid) => {
                    let (page, page_serial) = txn.load_mapping(oid).await?;
                    let current = revision_of(oid, &page)?.revision;
                    let hist_oid = history_oid(oid, &page)?;
                    let (hist, hist_serial) = txn.load_list(hist_oid).await?;
                    (oid, hist_oid, hist, current, (page_serial, hist_serial))
                }
                None => (txn.new_oid().await?, txn.new_oid().await?, Vec::new(), 0, (Z64, Z64)),
            };
            if base.is_some_and(|b| b != current) {
                txn.abort();
                return Ok(Err(StoreError::Stale { current }));
            }
            let rev = Revision { revision: current + 1, body: body.to_owned(), updated, author: author.to_owned() };
            hist.push(ObjValue::Dict(revision_fields(&rev)));
            let excess = hist.len().saturating_sub(MAX_HISTORY);
            hist.drain(..excess);
            let mut page = revision_fields(&rev);
            page.insert("name".into(), name.into());
            page.insert("history".into(), ObjRef::list(hist_oid).into());
            txn.store_object(page_oid, serials.0, &Object::Mapping(page))?;
            txn.store_object(hist_oid, serials.1, &Object::List(hist))?;
            if existing.is_none() {
                let (mut entries, serial) = txn.load_mapping(index).await?;
                entries.insert(name.to_owned(), ObjRef::mapping(page_oid).into());
                txn.store_object(index, serial, &Object::Mapping(entries))?;
            }
            txn.note(&format!("zeo-app: wiki {name} revision {}", rev.revision));
            Ok(Ok(rev.revision))
        })
        .await?
}

async fn page_oid(txn: &Transaction, index: Oid, name: &str) -> Result<Option<Oid>, ClientError> {
    let (entries, _) = txn.load_mapping(index).await?;
    match entries.get(name) {
        None => Ok(None),
        Some(v) => v.as_ref().map(|r| Some(r.oid)).ok_or_else(|| bad(index, "index entry is not a reference")),
    }
}

fn revision_fields(rev: &Revision) -> BTreeMap<String, ObjValue> {
    BTreeMap::from([
        ("revision".to_owned(), ObjValue::Int(rev.revision)),
        ("body".to_owned(), rev.body.as_str().into()),
        ("updated".to_owned(), ObjValue::Float(rev.updated)),
        ("author".to_owned(), rev.author.as_str().into()),
    ])
}

fn revision_of(oid: Oid, d: &BTreeMap<String, ObjValue>) -> Result<Revision, ClientError> {
    let text = |k: &str| d.get(k).and_then(ObjValue::as_str).map(str::to_owned).ok_or_else(|| bad(oid, k));
    Ok(Revision {
        revision: d.get("revision").and_then(ObjValue::as_int).ok_or_else(|| bad(oid, "revision"))?,
        body: text("body")?,
        updated: match d.get("updated") {
            Some(ObjValue::Float(f)) => *f,
            Some(ObjValue::Int(i)) => *i as f64,
            _ => return Err(bad(oid, "updated")),
        },
        author: text("author")?,
    })
}

fn history_oid(oid: Oid, page: &BTreeMap<String, ObjValue>) -> Result<Oid, ClientError> {
    page.get("history").and_then(ObjValue::as_ref).map(|r| r.oid).ok_or_else(|| bad(oid, "history"))
}

fn bad(oid: Oid, what: &str) -> ClientError {
    ClientError::BadRecord { oid, reason: format!("not a zeo-app wiki object ({what})") }
}

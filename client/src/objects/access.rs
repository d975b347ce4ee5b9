//! Loading and storing [`Object`]s inside transactions, and creating ZODB's root object.

use std::collections::BTreeMap;

use zeo_proto::{Oid, Tid, Z64};

use super::codec::{decode_record, encode_record};
use super::value::{ObjValue, Object};
use crate::error::{ClientError, Result};
use crate::{Client, Transaction};

/// The oid of ZODB's root object, a `PersistentMapping`.
pub const ROOT_OID: Oid = Z64;

/// The description ZODB gives the transaction that creates the root (`ZODB.DB.__init__`).
const ROOT_DESCRIPTION: &str = "initial database creation";

impl Transaction {
    /// Loads `oid` at the transaction's snapshot and decodes it, returning the object and
    /// the serial a later [`Transaction::store_object`] must name.
    ///
    /// # Errors
    ///
    /// As [`Transaction::load`]; [`ClientError::BadRecord`] if the record cannot be decoded.
    pub async fn load_object(&self, oid: Oid) -> Result<(Object, Tid)> {
        let (data, serial) = self.load(oid).await?;
        let obj = decode_record(&data).map_err(|e| ClientError::BadRecord { oid, reason: e.to_string() })?;
        Ok((obj, serial))
    }

    /// [`Transaction::load_object`] for a `PersistentMapping`, returning its entries.
    ///
    /// # Errors
    ///
    /// As [`Transaction::load_object`]; [`ClientError::BadRecord`] for an object of another
    /// class.
    pub async fn load_mapping(&self, oid: Oid) -> Result<(BTreeMap<String, ObjValue>, Tid)> {
        let (obj, serial) = self.load_object(oid).await?;
        let class = obj.class();
        let entries = obj.into_mapping().ok_or_else(|| not_a(oid, "PersistentMapping", &class))?;
        Ok((entries, serial))
    }

    /// [`Transaction::load_object`] for a `PersistentList`, returning its items.
    ///
    /// # Errors
    ///
    /// As [`Transaction::load_object`]; [`ClientError::BadRecord`] for an object of another
    /// class.
    pub async fn load_list(&self, oid: Oid) -> Result<(Vec<ObjValue>, Tid)> {
        let (obj, serial) = self.load_object(oid).await?;
        let class = obj.class();
        let items = obj.into_list().ok_or_else(|| not_a(oid, "PersistentList", &class))?;
        Ok((items, serial))
    }

    /// Buffers a new revision of `oid` holding `obj`, based on revision `serial` ([`Z64`]
    /// for a new object, whose oid comes from [`Transaction::new_oid`]).
    ///
    /// # Errors
    ///
    /// As [`Transaction::store`].
    pub fn store_object(&self, oid: Oid, serial: Tid, obj: &Object) -> Result<()> {
        self.store(oid, serial, encode_record(obj))
    }
}

fn not_a(oid: Oid, wanted: &str, class: &super::ClassName) -> ClientError {
    ClientError::BadRecord { oid, reason: format!("expected a {wanted}, found a {class}") }
}

impl Client {
    /// Makes sure the database has its root object, creating it as ZODB does when the
    /// storage is empty: an empty `PersistentMapping` at oid 0, in a transaction described
    /// `initial database creation`. Python's `ZODB.DB` then opens the database as one it
    /// created. Safe to call from several clients at once: the losers of the race see a
    /// conflict, retry, and find the root.
    ///
    /// # Errors
    ///
    /// As [`Client::transact`]; [`ClientError::ReadOnly`] if the root is missing and the
    /// client cannot write.
    pub async fn ensure_root(&self) -> Result<()> {
        self.transact(|txn| async move {
            match txn.load(ROOT_OID).await {
                Ok(_) => Ok(()),
                Err(ClientError::PosKey { .. }) => {
                    txn.note(ROOT_DESCRIPTION);
                    txn.store_object(ROOT_OID, Z64, &Object::Mapping(BTreeMap::new()))
                }
                Err(e) => Err(e),
            }
        })
        .await
    }
}

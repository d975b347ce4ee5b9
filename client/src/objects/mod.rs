//! The object layer: ZODB's standard persistent objects as Rust values, so that Rust
//! applications and Python ZODB programs can share one database.
//!
//! The storage only knows opaque records; ZODB gives them meaning (`ZODB/serialize.py`): a
//! record is a class pickle followed by a state pickle, and references between objects are
//! persistent ids inside the state. This module reads and writes that format for
//! `persistent.mapping.PersistentMapping` (ZODB's root is one) and
//! `persistent.list.PersistentList` holding `str`, `bytes`, `int`, `float`, `bool`, `None`,
//! lists, tuples, `str`-keyed dicts and references to other persistent objects, plus any other
//! class whose state is made of those values.
//!
//! ```no_run
//! # async fn example(client: zeo_client::Client) -> zeo_client::Result<()> {
//! use zeo_client::objects::{Object, ObjValue, ROOT_OID};
//!
//! client.ensure_root().await?;
//! client
//!     .transact(|txn| async move {
//!         let (mut root, serial) = txn.load_mapping(ROOT_OID).await?;
//!         let list = Object::List(vec![ObjValue::from("hello"), ObjValue::Int(1)]);
//!         let oid = txn.new_oid().await?;
//!         txn.store_object(oid, zeo_client::Z64, &list)?;
//!         root.insert("greetings".into(), list.reference(oid).into());
//!         txn.store_object(ROOT_OID, serial, &Object::Mapping(root))
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Objects are values, not live proxies: there is no cache of objects, no ghost and no
//! automatic change tracking. A change is a load, a modification and a store of the whole
//! object within one [`crate::Transaction`], and conflicts surface as
//! [`crate::ClientError::Conflict`] (Python's `PersistentMapping` has no conflict resolution
//! either), which [`crate::Client::transact`] retries.
//!
//! # Layout
//!
//! - `value`: [`ObjValue`], [`ObjRef`], [`ClassName`], [`Object`].
//! - `codec`: [`encode_record`], [`decode_record`], [`ObjectError`].
//! - `access`: [`crate::Transaction::load_object`] and friends, [`crate::Client::ensure_root`].
//!
//! Walking the references of a raw record without decoding it is [`zeo_proto::refs`].

mod access;
mod codec;
mod value;

#[cfg(test)]
mod tests;

pub use access::ROOT_OID;
pub use codec::{ObjectError, decode_record, encode_record};
pub use value::{ClassName, ObjRef, ObjValue, Object};

//! [`Db`]: the storage client plus where the application's objects are, and [`StoreError`].
//!
//! # Seeing other replicas' writes
//!
//! Every request starts with [`Db::fresh`], which calls [`Client::sync`]: one `ping` round
//! trip after which every invalidation the server sent before it has been applied, so the
//! transaction that follows sees every commit acknowledged to anyone (another replica
//! included) before the request arrived. Without it, a read could be served from this
//! replica's cache a few milliseconds behind a write just acknowledged by another replica.
//! The cost is one round trip per request, not a load: the cache stays warm. Writes sync too:
//! reading a stale snapshot would only turn into a conflict and a retry.

use std::sync::{Arc, OnceLock};

use zeo_client::{Client, ClientError};

use crate::layout::Layout;

/// Why a storage operation of the application did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage client failed (unavailable, conflicts exhausted, unreadable record, ...).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The application's objects are not known yet (storage not reached since start).
    #[error("starting: the storage has not been reached yet")]
    NotReady,
    /// The request names something invalid.
    #[error("{0}")]
    Invalid(String),
    /// An edit named a base revision that is no longer the current one.
    #[error("stale edit: the page is at revision {current}")]
    Stale {
        /// The page's current revision.
        current: i64,
    },
}

/// Cheap to clone: a [`Client`] and the [`Layout`], once known.
#[derive(Debug, Clone)]
pub struct Db {
    /// The storage client (reconnects by itself).
    pub client: Client,
    layout: Arc<OnceLock<Layout>>,
}

impl Db {
    /// A handle whose layout is not known yet (see [`Db::set_layout`]).
    pub fn new(client: Client) -> Db {
        Db { client, layout: Arc::new(OnceLock::new()) }
    }

    /// Records where the application's objects are; they never move once created.
    pub fn set_layout(&self, layout: Layout) {
        let _ = self.layout.set(layout);
    }

    /// The layout, once known.
    pub fn layout(&self) -> Option<&Layout> {
        self.layout.get()
    }

    /// Makes the next transaction see every commit acknowledged before now (module docs), and
    /// returns the layout.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotReady`] before the layout is known; the sync's call errors.
    pub async fn fresh(&self) -> Result<&Layout, StoreError> {
        let layout = self.layout().ok_or(StoreError::NotReady)?;
        self.client.sync().await?;
        Ok(layout)
    }
}

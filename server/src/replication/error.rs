//! The one error of the replication link, for both of its ends: the primary's session with a
//! standby and the standby's follower of its primary. Each variant says where the link broke.

use crate::storage::StorageError;

/// Why a replication session (primary side) or a follow attempt (standby side) ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection failed (reset, closed, refused).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A malformed or oversized frame from the peer.
    #[error("bad replication frame: {0}")]
    BadFrame(String),
    /// A frame larger than the link allows from this peer (a standby only sends small control
    /// messages).
    #[error("a frame of {len} bytes from the peer (the limit is {max})")]
    FrameTooLarge { len: u32, max: u32 },
    /// The peer could not be authenticated (TLS handshake, certificate, identity).
    #[error("peer not authenticated: {0}")]
    Unauthenticated(#[from] crate::tls::link::LinkAuthError),
    /// The local storage failed while serving or applying the stream.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The peer broke the protocol (an unexpected message, a timeout, a stream that does not fit).
    #[error("{0}")]
    Protocol(String),
    /// This primary refused the standby (the reason was sent to it).
    #[error("refused: {0}")]
    RefusedStandby(String),
    /// The primary refused this standby.
    #[error("refused by the primary: {0}")]
    RefusedByPrimary(String),
    /// The primary cannot continue this standby's history: it needs a full copy.
    #[error("a full re-seed is needed: {0}")]
    Reseed(String),
    /// The standby's follower was told to stop (role change, shutdown).
    #[error("stopped")]
    Stopped,
}

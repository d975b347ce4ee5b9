//! zeo-server: the ZEO server, built on the storage engine (the `zeo-storage` crate).
//!
//! # Layout
//! - `storage`: the synchronous engine (no networking), re-exported from `zeo-storage`.
//! - `describe`: renderings of records for tools and tests (class names, JSON), from `zeo-storage`.
//! - `telemetry`: logging setup for the binaries.
//! - `config`: the server's configuration (flags > environment > YAML file > defaults) and its checks.
//! - `access`: who may connect (address allow-list) and what a client identity may do (access mode).
//! - `tls`: TLS with client certificates for the listeners: rustls configuration from PEM files, the
//!   handshake, the peer's certificate identity.
//! - `metrics`: the Prometheus metrics (`zeo_*`).
//! - `admin`: the admin HTTP listener (`/livez`, `/readyz`, `/metrics`, `/status`).
//! - `zeo`: the ZEO 5 protocol server.
//! - `replication`: log shipping to warm standbys, epochs, promote/demote/rejoin.

pub mod access;
pub mod admin;
pub mod config;
pub mod metrics;
pub mod replication;
pub mod telemetry;
pub mod tls;
pub mod zeo;

pub use zeo_storage as storage;
pub use zeo_storage::describe;

//! zeo-server: the storage engine (FS30 FileStorage) and, built on it, the ZEO server.
//!
//! # Layout
//! - `storage`: the synchronous engine (no networking).
//! - `describe`: renderings of records for tools and tests (class names, JSON).
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
pub mod describe;
pub mod metrics;
pub mod replication;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod zeo;

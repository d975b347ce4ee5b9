//! zeo-server: the storage engine (FS30 FileStorage) and, built on it, the ZEO server.
//!
//! # Layout
//! - `storage`: the synchronous engine (no networking).
//! - `describe`: renderings of records for tools and tests (class names, JSON).
//! - `telemetry`: logging setup for the binaries.

pub mod describe;
pub mod storage;
pub mod telemetry;

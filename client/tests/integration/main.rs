//! Integration tests of zeo-client against the real `zeo-server` binary (and, in `python`,
//! Python's reference `runzeo`), on 127.0.0.1.
//!
//! One test binary (modules below). Each test starts its own server processes on fresh data
//! files and ports, and runs under a time bound (`common::TEST_BOUND`).

mod basic;
mod common;
mod failover;
mod mvcc;
mod objects;
mod python;
mod transport;

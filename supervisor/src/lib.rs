//! zeo-supervisor: the failover supervisor (issue 6).
//!
//! - `local_proxy`: the service address of a loopback pair (a forwarding listener).
//! - `file_lease`: a lease in a local file, for supervisors sharing one host.

pub mod file_lease;
pub mod local_proxy;

//! zeo-supervisor: the failover supervisor beside each zeo-server.
//!
//! Each tick it observes its own server (a ZEO round trip, `/status`, the process exit when it
//! started the server itself), the peers' `/status` and the lease; [`decide::decide`] turns that
//! into actions; the loop carries them out: take or renew the lease, promote, demote or kill
//! (fencing), rejoin, move the service address.
//!
//! # Layout
//!
//! - [`config`]: the settings, their layering (flags > env > YAML file > defaults) and rules.
//! - [`status`]: the server's `/status` document.
//! - [`decide`]: the pure decision function and its rules.
//! - [`lease`]: the lease record, the [`lease::LeaseStore`] CAS trait and its backends (chosen by
//!   [`lease::LeaseBackend`], built by [`lease::from_settings`]), and [`lease::LeaseElector`]
//!   (acquire, renew, release; expiry on the local monotonic clock).
//! - [`grant`]: the write lease granted to our server (CLOCK_BOOTTIME arithmetic, same-kernel check).
//! - [`server_admin`]: the client of the server's admin HTTP API.
//! - [`probe`]: the ZEO round-trip health probe.
//! - [`mover`]: the [`mover::AddressMover`] trait and its backends (pod label, Docker alias, VIP,
//!   local listener; chosen by [`mover::AddressBackend`], built by [`mover::from_settings`]).
//! - `kube_call`: bounded Kubernetes API calls (client timeouts, a budget per call, 429/5xx
//!   retries), used by the Kubernetes lease and address backends.
//! - [`kill`]: the fence for a server that is not our child (a command, or SIGKILL of its container).
//! - [`process`]: exec mode, the server as our child process (exit seen at once, SIGKILL fence).
//! - [`runner`]: the observe → decide → act loop and the shutdown order.
//! - [`http`]: the supervisor's admin port (`/livez`, `/readyz`, `/metrics`, `/switchover`).
//! - [`metrics`]: the Prometheus metrics.
//! - [`liveness`]: the loop's heartbeat behind `/livez`.
pub mod config;
pub mod decide;
pub mod grant;
pub mod http;
pub mod kill;
#[cfg(feature = "kubernetes")]
pub mod kube_call;
pub mod lease;
pub mod liveness;
pub mod metrics;
pub mod mover;
pub mod probe;
pub mod process;
pub mod runner;
pub mod server_admin;
pub mod status;

#[cfg(test)]
mod testkit;

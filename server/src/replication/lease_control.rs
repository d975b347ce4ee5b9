//! The write lease seen from outside and over time: the supervisor's `POST /write-lease` (a grant)
//! and `POST /out-of-sync` (marks it has written into the lease record), and the timer that fences
//! the server at the deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::control::{authorize, json_error};
use super::write_lease::{REASON_EXPIRED, boottime_ns};
use super::{Replication, ServerRole};

/// The expiry timer re-reads the boottime clock at least this often: tokio's timers run on the
/// monotonic clock, which stops while the machine is suspended, CLOCK_BOOTTIME does not.
const RECHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    epoch: u64,
    until_boottime_ns: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutOfSyncBody {
    epoch: u64,
    standbys: Vec<String>,
}

impl Replication {
    /// A grant from the supervisor for `epoch`: the deadline becomes `min(until, now + max grant)`,
    /// never earlier than it was. Returns the deadline kept.
    pub fn grant_write_lease(&self, epoch: u64, until: u64) -> Result<u64, String> {
        let (role, current) = self.role();
        if role != ServerRole::Primary || epoch != current {
            return Err(format!(
                "this server is {} at epoch {current}: a write grant is for the primary at its epoch (got epoch {epoch})",
                role.as_str()
            ));
        }
        let kept = self.write_lease.grant(until, boottime_ns()).map_err(|e| e.to_string())?;
        tracing::debug!(epoch, until, kept, "write lease granted");
        Ok(kept)
    }

    /// The write lease ran out: the committers whose transactions are held are told they were not
    /// acknowledged, then the server fences itself like `demote` (read-only, clients closed,
    /// persisted). Does nothing if a promotion or demotion got there first.
    pub(super) async fn expire_write_lease(self: &Arc<Self>) {
        let _serial = self.control.lock().await;
        let (role, epoch) = self.role();
        let now = boottime_ns();
        if role != ServerRole::Primary || !self.write_lease.expired_at(now) {
            return;
        }
        let late_ms = now.saturating_sub(self.write_lease.until()) / 1_000_000;
        // Read-only first, so that nothing votes while the held committers are answered.
        self.apply_read_only(ServerRole::Demoted);
        let unacknowledged: usize = self.storages.values().map(|s| s.host.refuse_held_committers(REASON_EXPIRED)).sum();
        // The lease keeps its past deadline: `/status` says why this server stopped writing.
        self.fence();
        if let Err(e) = self.state().update(|s| s.role = ServerRole::Demoted) {
            // Fenced in memory all the same; a restart without the record comes back as primary
            // without a grant, which acknowledges nothing either.
            tracing::error!(error = %e, "cannot record the demotion after the write lease expired");
        }
        self.role.send_replace((ServerRole::Demoted, epoch));
        self.start_role_tasks(ServerRole::Demoted);
        self.metrics.write_lease_expiries.inc();
        tracing::error!(
            epoch,
            late_ms,
            unacknowledged,
            "write lease expired without a new grant from the supervisor: demoted, read-only, every client disconnected"
        );
    }
}

/// Fences the server at its write lease's deadline. A grant moves the deadline (and wakes it); a
/// publication held back by the lease wakes it too, so a server resumed after a pause fences itself
/// at once.
pub(super) async fn expiry_timer(repl: Arc<Replication>, stop: CancellationToken) {
    let lease = repl.write_lease.clone();
    loop {
        let now = boottime_ns();
        let until = lease.until();
        let primary = repl.role().0 == ServerRole::Primary;
        if primary && lease.expired_at(now) {
            repl.expire_write_lease().await;
            continue;
        }
        let wait = (primary && until != 0).then(|| Duration::from_nanos(until - now).min(RECHECK));
        tokio::select! {
            _ = lease.changed() => {}
            _ = tokio::time::sleep(wait.unwrap_or(RECHECK)), if wait.is_some() => {}
            _ = stop.cancelled() => return,
        }
    }
}

pub(super) async fn write_lease(
    State(repl): State<Arc<Replication>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&repl, &headers, "write-lease") {
        return *r;
    }
    let body: GrantBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("bad request body (want {{\"epoch\": N, \"until_boottime_ns\": T}}): {e}"),
            );
        }
    };
    match repl.grant_write_lease(body.epoch, body.until_boottime_ns) {
        Ok(kept) => {
            let writable = repl.not_writable_reason(repl.role().0, boottime_ns()).is_none();
            axum::Json(serde_json::json!({"writable": writable, "until_boottime_ns": kept})).into_response()
        }
        Err(why) => {
            tracing::warn!(epoch = body.epoch, until = body.until_boottime_ns, error = %why, "write grant refused");
            json_error(StatusCode::CONFLICT, why)
        }
    }
}

pub(super) async fn out_of_sync(
    State(repl): State<Arc<Replication>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&repl, &headers, "out-of-sync") {
        return *r;
    }
    let body: OutOfSyncBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("bad request body (want {{\"epoch\": N, \"standbys\": [\"name\", ...]}}): {e}"),
            );
        }
    };
    let (role, current) = repl.role();
    if role != ServerRole::Primary || body.epoch != current {
        return json_error(
            StatusCode::CONFLICT,
            format!(
                "this server is {} at epoch {current}: out-of-sync marks are for the primary at its epoch (got epoch {})",
                role.as_str(),
                body.epoch
            ),
        );
    }
    tracing::info!(epoch = body.epoch, standbys = ?body.standbys, "admin call: out-of-sync marks confirmed");
    let dropped = repl.confirm_out_of_sync(&body.standbys);
    axum::Json(serde_json::json!({"epoch": current, "confirmed": body.standbys, "dropped": dropped})).into_response()
}

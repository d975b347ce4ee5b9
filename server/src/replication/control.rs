//! Role changes (promote, demote, rejoin) and the admin routes that call them.
//!
//! Each change is serialized with the others, written to the state file before it takes effect,
//! idempotent (repeating it reports `"changed": false`), and logged. The routes require
//! `Authorization: Bearer <token>` with the token from `--admin-token-file`; without a configured
//! token they are refused (403), so an admin port exposed by mistake cannot fail a server over.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Replication, ServerRole, lease_control, write_lease};
use crate::storage::StorageError;

/// Why a role change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request conflicts with the server's state (stale epoch, out of sync).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Replication {
    /// Makes this server the primary at `epoch` (greater than its own). A standby stops applying
    /// (a transaction being applied completes or is cut), and becomes writable; its next tid is above
    /// every tid it holds, whatever the clock says. A standby marked out of sync is refused unless
    /// `force`.
    ///
    /// `until` is the first write grant (boottime nanoseconds, see `write_lease`); with
    /// `--require-write-lease` a promotion without one is refused, and so is one already past.
    pub async fn promote(self: &Arc<Self>, epoch: u64, force: bool, until: Option<u64>) -> Result<bool, ControlError> {
        let lease = self.write_lease.clone();
        if lease.required() && until.is_none() {
            return Err(ControlError::BadRequest(
                "until_boottime_ns is required: this server runs with --require-write-lease, and a promotion carries the first write grant".into(),
            ));
        }
        let _serial = self.control.lock().await;
        let now = write_lease::boottime_ns();
        if let Some(until) = until
            && !write_lease::allows(write_lease::capped(until, now, lease.max_grant()), now)
        {
            return Err(ControlError::Conflict(format!(
                "until_boottime_ns {until} is not after the server's boottime now ({now}): the grant is already over"
            )));
        }
        let (role, current) = self.role();
        if role == ServerRole::Primary && epoch == current {
            if let Some(until) = until {
                lease.grant(until, now).map_err(|e| ControlError::Conflict(e.to_string()))?;
            }
            return Ok(false);
        }
        if epoch <= current {
            return Err(ControlError::Conflict(format!("epoch {epoch} is not above this server's epoch {current}")));
        }
        let st = self.state().get().clone();
        if role != ServerRole::Primary && st.out_of_sync && !force {
            return Err(ControlError::Conflict(
                "this standby is marked out of sync (the primary went on without it): promote with \"force\": true only if losing its missing commits is acceptable".into(),
            ));
        }
        if let Some(why) = &st.needs_reseed
            && !force
        {
            return Err(ControlError::Conflict(format!("this server needs a re-seed ({why})")));
        }
        // Stop following first: the appliers finish or abandon their batch under the commit lock.
        self.role_tasks.lock().expect("role tasks lock poisoned").cancel();
        if let Err(e) = self.record_primary(epoch).await {
            // The promotion failed (a full disk, an I/O error) and nothing changed: go on as
            // before. A standby that stopped following here would leave a strict primary that
            // gets the lease back waiting for it forever (issue 12, disk-full scenario).
            self.start_role_tasks(role);
            return Err(e);
        }
        if let Some(until) = until {
            lease.start(until, write_lease::boottime_ns());
        }
        self.role.send_replace((ServerRole::Primary, epoch));
        self.apply_read_only(ServerRole::Primary);
        self.start_role_tasks(ServerRole::Primary);
        let last: Vec<String> = self.storages.values().map(|s| hex::encode(s.host.fs.last_transaction())).collect();
        tracing::warn!(epoch, previous_role = role.as_str(), force, last_tids = ?last, "promoted to primary");
        Ok(true)
    }

    /// The durable half of a promotion: every storage synced, then the new role and epoch in the
    /// state file. On error the state file is as it was.
    async fn record_primary(&self, epoch: u64) -> Result<(), ControlError> {
        for s in self.storages.values() {
            let _lock = s.host.commit_lock.clone().lock_owned().await;
            let fs = s.host.fs.clone();
            tokio::task::spawn_blocking(move || fs.sync())
                .await
                .map_err(|e| ControlError::BadRequest(format!("sync task failed: {e}")))??;
            s.host.publish_durable();
        }
        self.state().update(|s| {
            s.epoch = epoch;
            s.role = ServerRole::Primary;
            s.primary = None;
            s.out_of_sync = false;
            s.synced = false;
            s.needs_reseed = None;
        })?;
        Ok(())
    }

    /// Stops accepting commits at once: read-only, every client connection closed (their open
    /// transactions aborted), standby sessions ended. Persisted, so a restart stays demoted.
    pub async fn demote(self: &Arc<Self>, reason: &str) -> Result<bool, ControlError> {
        let _serial = self.control.lock().await;
        let (role, epoch) = self.role();
        if role == ServerRole::Demoted {
            return Ok(false);
        }
        self.fence();
        self.write_lease.end();
        self.state().update(|s| s.role = ServerRole::Demoted)?;
        self.role.send_replace((ServerRole::Demoted, epoch));
        self.start_role_tasks(ServerRole::Demoted);
        tracing::warn!(epoch, previous_role = role.as_str(), reason, "demoted: read-only, every client disconnected");
        Ok(true)
    }

    /// Read-only and every client out, before anything else (no await in between).
    pub(super) fn fence(&self) {
        self.apply_read_only(ServerRole::Demoted);
        let mut closed = 0;
        for s in self.storages.values() {
            closed += s.host.close_all();
        }
        tracing::info!(closed, "closed every client connection");
    }

    /// Becomes a standby of `primary` (its replication address), rewinding diverged transactions
    /// as it connects. With `reseed`, the data is replaced by a fresh copy of the primary's (the
    /// old file is kept as `Data.fs.before-reseed`).
    pub async fn rejoin(self: &Arc<Self>, primary: &str, reseed: bool) -> Result<bool, ControlError> {
        if primary.trim().is_empty() || !primary.contains(':') {
            return Err(ControlError::BadRequest(format!("primary {primary:?} must be host:port")));
        }
        let _serial = self.control.lock().await;
        let (role, epoch) = self.role();
        let st = self.state().get().clone();
        if role == ServerRole::Standby && st.primary.as_deref() == Some(primary) && !reseed && st.needs_reseed.is_none()
        {
            return Ok(false);
        }
        self.fence();
        self.write_lease.end();
        self.role_tasks.lock().expect("role tasks lock poisoned").cancel();
        if reseed {
            for s in self.storages.values() {
                let _lock = s.host.commit_lock.clone().lock_owned().await;
                let (host, repl_s) = (s.host.clone(), s.clone());
                tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                    let empty = std::path::PathBuf::from(format!("{}.empty", host.fs.path().display()));
                    std::fs::write(&empty, b"FS30").map_err(|e| StorageError::io("write", &empty, e))?;
                    host.fs.replace_with(&empty)?;
                    repl_s.history().truncate_after(&[0; 8])?;
                    host.reload_history();
                    Ok(())
                })
                .await
                .map_err(|e| ControlError::BadRequest(format!("re-seed task failed: {e}")))??;
            }
        }
        self.state().update(|s| {
            s.role = ServerRole::Standby;
            if s.primary.as_deref() != Some(primary) {
                s.synced = false;
            }
            s.primary = Some(primary.to_owned());
            if reseed {
                s.needs_reseed = None;
                s.synced = false;
            }
        })?;
        self.role.send_replace((ServerRole::Standby, epoch));
        self.start_role_tasks(ServerRole::Standby);
        tracing::warn!(epoch, previous_role = role.as_str(), %primary, reseed, "rejoining as a standby");
        Ok(true)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    epoch: u64,
    #[serde(default)]
    force: bool,
    /// The first write grant (boottime nanoseconds).
    #[serde(default)]
    until_boottime_ns: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejoinBody {
    primary: String,
    #[serde(default)]
    reseed: bool,
}

/// `POST /promote`, `POST /demote`, `POST /rejoin`, and the write lease's `POST /write-lease` and
/// `POST /out-of-sync`, to merge into the admin router.
pub fn router(repl: Arc<Replication>) -> Router {
    Router::new()
        .route("/promote", post(promote))
        .route("/demote", post(demote))
        .route("/rejoin", post(rejoin))
        .route("/write-lease", post(lease_control::write_lease))
        .route("/out-of-sync", post(lease_control::out_of_sync))
        .with_state(repl)
}

pub(super) fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(serde_json::json!({"error": msg.into()}))).into_response()
}

/// Checks the bearer token in constant time.
pub(super) fn authorize(repl: &Replication, headers: &HeaderMap, call: &str) -> Result<(), Box<Response>> {
    let Some(expected) = &repl.opts.admin_token else {
        tracing::warn!(call, "admin call refused: no --admin-token-file configured");
        return Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "admin calls are disabled: the server has no --admin-token-file",
        )));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        tracing::warn!(call, "admin call refused: bad or missing token");
        Err(Box::new(json_error(StatusCode::UNAUTHORIZED, "bad or missing bearer token")))
    }
}

fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Box::new(json_error(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))))
}

fn outcome(repl: &Replication, call: &str, r: Result<bool, ControlError>) -> Response {
    let (role, epoch) = repl.role();
    match r {
        Ok(changed) => {
            tracing::info!(call, changed, role = role.as_str(), epoch, "admin call done");
            axum::Json(serde_json::json!({"role": role.as_str(), "epoch": epoch, "changed": changed})).into_response()
        }
        Err(e) => {
            tracing::warn!(call, error = %e, "admin call refused");
            let code = match e {
                ControlError::Conflict(_) => StatusCode::CONFLICT,
                ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
                ControlError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            json_error(code, e.to_string())
        }
    }
}

async fn promote(State(repl): State<Arc<Replication>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&repl, &headers, "promote") {
        return *r;
    }
    let body: PromoteBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("bad request body (want {{\"epoch\": N}}): {e}")),
    };
    tracing::info!(epoch = body.epoch, force = body.force, until = ?body.until_boottime_ns, "admin call: promote");
    let r = repl.promote(body.epoch, body.force, body.until_boottime_ns).await;
    outcome(&repl, "promote", r)
}

async fn demote(State(repl): State<Arc<Replication>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&repl, &headers, "demote") {
        return *r;
    }
    let body: DemoteBody = match parse(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let reason = body.reason.unwrap_or_else(|| "admin request".into());
    tracing::info!(%reason, "admin call: demote");
    let r = repl.demote(&reason).await;
    outcome(&repl, "demote", r)
}

async fn rejoin(State(repl): State<Arc<Replication>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorize(&repl, &headers, "rejoin") {
        return *r;
    }
    let body: RejoinBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("bad request body (want {{\"primary\": \"host:port\"}}): {e}"),
            );
        }
    };
    tracing::info!(primary = %body.primary, reseed = body.reseed, "admin call: rejoin");
    let r = repl.rejoin(&body.primary, body.reseed).await;
    outcome(&repl, "rejoin", r)
}

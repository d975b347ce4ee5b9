//! [`ApiError`]: how a failed request is answered. Storage trouble becomes 503 with
//! `Retry-After` and a one-line reason; nothing ever shows a backtrace or debug dump.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use zeo_client::ClientError;

use crate::db::StoreError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

/// A request that could not be served.
#[derive(Debug)]
pub enum ApiError {
    /// 404: no such page, counter or key.
    NotFound(String),
    /// 400: the request itself is wrong.
    BadRequest(String),
    /// 409: an edit based on a revision that is no longer current.
    Conflict(String),
    /// 503: the storage cannot do it now (unreachable, read-only, too many conflicts, timed
    /// out, starting). Worth retrying later.
    Unavailable(String),
    /// 500: a bug or a record this application cannot read; the reason is short and safe.
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        }
    }

    /// The same answer as plain text, for the HTML pages.
    pub fn into_text_response(self) -> Response {
        let (status, _, message) = self.parts();
        let body = format!("{} {}\n", status.as_u16(), message);
        with_retry_after(status, (status, body).into_response())
    }
}

/// `{"error": code, "message": text}`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = axum::Json(serde_json::json!({"error": code, "message": message}));
        with_retry_after(status, (status, body).into_response())
    }
}

fn with_retry_after(status: StatusCode, mut resp: Response) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    }
    resp
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Client(e) => e.into(),
            StoreError::NotReady => ApiError::Unavailable(e.to_string()),
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            StoreError::Stale { .. } => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let unavailable = |m: &str| ApiError::Unavailable(m.to_owned());
        let answer = match &e {
            ClientError::Conflict { .. } | ClientError::ReadConflict { .. } => {
                unavailable("too many concurrent changes to the same data; try again")
            }
            ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
            | ClientError::ServerBehind { .. }
            | ClientError::Closed => unavailable("the storage is unavailable; try again"),
            ClientError::ReadOnly => unavailable("the storage is read-only right now; try again"),
            ClientError::CommitOutcomeUnknown { .. } => {
                unavailable("the storage connection was lost while saving: the change may or may not have been saved")
            }
            _ => ApiError::Internal(format!("storage error ({})", e.kind())),
        };
        match answer {
            ApiError::Internal(_) => tracing::error!(error = %e, "request failed"),
            _ => tracing::warn!(error = %e, "request not served"),
        }
        answer
    }
}

//! The JSON API, for programs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::{counters, json, kv, wiki};

/// `GET /api/wiki`: `{"pages": [name, ...]}`.
pub async fn wiki_list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let pages = st.exec(|db| async move { wiki::list(&db).await }).await?;
    Ok(Json(json!({"pages": pages})))
}

/// `GET /api/wiki/{name}`: the page at its current revision.
pub async fn wiki_get(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<wiki::Page>, ApiError> {
    let n = name.clone();
    let page = st.exec(|db| async move { wiki::get(&db, &n).await }).await?;
    page.map(Json).ok_or_else(|| ApiError::NotFound(format!("no page {name}")))
}

/// `GET /api/wiki/{name}/history`: `{"name", "revisions": [...]}`, oldest first.
pub async fn wiki_history(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    let revisions = st.exec(|db| async move { wiki::history(&db, &n).await }).await?;
    let revisions = revisions.ok_or_else(|| ApiError::NotFound(format!("no page {name}")))?;
    Ok(Json(json!({"name": name, "revisions": revisions})))
}

/// The body of `PUT /api/wiki/{name}`.
#[derive(Debug, Deserialize)]
pub struct PageEdit {
    /// The new text.
    pub body: String,
    /// Who edits (free text).
    #[serde(default)]
    pub author: String,
    /// Only save if the page is still at this revision (0: only if it does not exist).
    pub base_revision: Option<i64>,
}

/// `PUT /api/wiki/{name}`: saves a revision; `{"name", "revision"}`, 201 when created.
pub async fn wiki_put(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Json(edit): Json<PageEdit>,
) -> Result<Response, ApiError> {
    let n = name.clone();
    let revision =
        st.exec(|db| async move { wiki::put(&db, &n, &edit.body, &edit.author, edit.base_revision).await }).await?;
    let status = if revision == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"name": name, "revision": revision}))).into_response())
}

/// `GET /api/counters`: `{"counters": {name: value}}`.
pub async fn counters_all(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = st.exec(|db| async move { counters::all(&db).await }).await?;
    Ok(Json(json!({"counters": all})))
}

/// `GET /api/counters/{name}`: `{"name", "value"}`.
pub async fn counter_get(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    let value = st.exec(|db| async move { counters::get(&db, &n).await }).await?;
    let value = value.ok_or_else(|| ApiError::NotFound(format!("no counter {name}")))?;
    Ok(Json(json!({"name": name, "value": value})))
}

/// Query of `POST /api/counters/{name}/incr`.
#[derive(Debug, Deserialize)]
pub struct Incr {
    /// Amount to add (default 1; may be negative).
    #[serde(default = "one")]
    pub by: i64,
}

fn one() -> i64 {
    1
}

/// `POST /api/counters/{name}/incr?by=N`: `{"name", "value"}` after the increment.
pub async fn counter_incr(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Incr>,
) -> Result<Json<Value>, ApiError> {
    let n = name.clone();
    let value = st.exec(move |db| async move { counters::incr(&db, &n, q.by).await }).await?;
    Ok(Json(json!({"name": name, "value": value})))
}

/// `GET /api/kv/{key}`: the stored JSON value itself.
pub async fn kv_get(State(st): State<AppState>, Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    let k = key.clone();
    let value = st.exec(|db| async move { kv::get(&db, &k).await }).await?;
    value.map(|v| Json(json::to_json(&v))).ok_or_else(|| ApiError::NotFound(format!("no key {key}")))
}

/// `PUT /api/kv/{key}` with any JSON value: 201 when the key is new, else 200.
pub async fn kv_put(
    State(st): State<AppState>,
    Path(key): Path<String>,
    Json(value): Json<Value>,
) -> Result<Response, ApiError> {
    let k = key.clone();
    let created = st.exec(|db| async move { kv::put(&db, &k, json::to_obj(&value)).await }).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"key": key, "created": created}))).into_response())
}

/// `DELETE /api/kv/{key}`: 204, or 404 if there was no such key.
pub async fn kv_delete(State(st): State<AppState>, Path(key): Path<String>) -> Result<StatusCode, ApiError> {
    let k = key.clone();
    let existed = st.exec(|db| async move { kv::delete(&db, &k).await }).await?;
    if existed { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::NotFound(format!("no key {key}"))) }
}

//! A client of the zeo-server's admin HTTP API, as the supervisor calls it: `/status`,
//! `/promote`, `/demote`, `/rejoin`, `/write-lease`, `/out-of-sync`. POSTs carry the bearer token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::status::{ServerRole, ServerStatus};

/// What a role change answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoleChange {
    pub role: ServerRole,
    #[serde(default)]
    pub epoch: Option<u64>,
    pub changed: bool,
}

/// What a write-lease grant answered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Granted {
    pub writable: bool,
    pub until_boottime_ns: u64,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerAdminError {
    /// No answer (refused, timed out, reset).
    #[error("admin API {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered and refused: 409 (epoch, out of sync), 401/403 (token), others.
    #[error("admin API {url} answered {status}: {message}")]
    Refused { url: String, status: u16, message: String },
    /// The answer was not the expected JSON.
    #[error("admin API {url}: unreadable answer: {source}")]
    Decode {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A client for one server's admin API.
#[derive(Clone)]
pub struct ServerAdmin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ServerAdmin {
    /// `base` like `http://127.0.0.1:8101`; every call is bounded by `timeout`.
    pub fn new(base: impl Into<String>, token: Option<String>, timeout: Duration) -> ServerAdmin {
        // Building fails only if the TLS backend cannot initialise; we use none.
        let http =
            reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().expect("plain HTTP client");
        ServerAdmin { base: base.into().trim_end_matches('/').to_string(), token, http }
    }

    /// `GET /status`.
    ///
    /// # Errors
    /// See [`ServerAdminError`].
    pub async fn status(&self) -> Result<ServerStatus, ServerAdminError> {
        let url = format!("{}/status", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ServerAdminError::Unreachable { url: url.clone(), source })?;
        decode(url, resp).await
    }

    /// `POST /promote {"epoch": N, "force": F, "until_boottime_ns": T}`: `until` is the first
    /// write-lease grant; a server without write leases gets none (it would refuse the field).
    ///
    /// # Errors
    /// See [`ServerAdminError`]; 409 when `epoch` is not above the server's or it is out of sync.
    pub async fn promote(&self, epoch: u64, force: bool, until: Option<u64>) -> Result<RoleChange, ServerAdminError> {
        let body = match until {
            Some(t) => json!({"epoch": epoch, "force": force, "until_boottime_ns": t}),
            None => json!({"epoch": epoch, "force": force}),
        };
        self.post("promote", body).await
    }

    /// `POST /write-lease {"epoch": N, "until_boottime_ns": T}`: the server may acknowledge
    /// commits until T on its CLOCK_BOOTTIME.
    ///
    /// # Errors
    /// See [`ServerAdminError`]; 409 when the server is not the primary at `epoch`.
    pub async fn write_lease(&self, epoch: u64, until_boottime_ns: u64) -> Result<Granted, ServerAdminError> {
        self.post("write-lease", json!({"epoch": epoch, "until_boottime_ns": until_boottime_ns})).await
    }

    /// `POST /out-of-sync {"epoch": N, "standbys": [..]}`: these standbys' marks are in the lease
    /// (compare-and-swap confirmed), so the server may degrade past them.
    ///
    /// # Errors
    /// See [`ServerAdminError`]; 409 when the server is not the primary at `epoch`.
    pub async fn out_of_sync(&self, epoch: u64, standbys: &[String]) -> Result<(), ServerAdminError> {
        let _: serde_json::Value = self.post("out-of-sync", json!({"epoch": epoch, "standbys": standbys})).await?;
        Ok(())
    }

    /// `POST /demote {}`: stop commits, close every client connection.
    ///
    /// # Errors
    /// See [`ServerAdminError`].
    pub async fn demote(&self) -> Result<RoleChange, ServerAdminError> {
        self.post("demote", json!({})).await
    }

    /// `POST /rejoin {"primary": addr, "reseed": false}`.
    ///
    /// # Errors
    /// See [`ServerAdminError`].
    pub async fn rejoin(&self, primary: &str) -> Result<RoleChange, ServerAdminError> {
        self.post("rejoin", json!({"primary": primary, "reseed": false})).await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        body: serde_json::Value,
    ) -> Result<T, ServerAdminError> {
        let url = format!("{}/{what}", self.base);
        let mut req = self.http.post(&url).json(&body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|source| ServerAdminError::Unreachable { url: url.clone(), source })?;
        decode(url, resp).await
    }
}

async fn decode<T: serde::de::DeserializeOwned>(url: String, resp: reqwest::Response) -> Result<T, ServerAdminError> {
    let status = resp.status();
    if !status.is_success() {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error).unwrap_or(text);
        return Err(ServerAdminError::Refused { url, status: status.as_u16(), message });
    }
    resp.json().await.map_err(|source| ServerAdminError::Decode { url, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::admin_fake::{FakeServer, TOKEN, standby_status};

    fn client(fake: &FakeServer, token: Option<&str>) -> ServerAdmin {
        ServerAdmin::new(fake.admin_url.clone(), token.map(String::from), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn promote_demote_rejoin_against_the_api() {
        let fake = FakeServer::start(standby_status(3, "b:9000", false, false)).await;
        let c = client(&fake, Some(TOKEN));
        assert_eq!(c.status().await.unwrap().role, ServerRole::Standby);
        match c.promote(3, false, None).await {
            Err(ServerAdminError::Refused { status: 409, message, .. }) => assert!(message.contains("not above")),
            other => panic!("promote at the same epoch must be refused: {other:?}"),
        }
        let p = c.promote(4, false, None).await.unwrap();
        assert_eq!((p.role, p.epoch, p.changed), (ServerRole::Primary, Some(4), true));
        assert!(!c.promote(4, false, None).await.unwrap().changed, "promote is idempotent at its epoch");
        assert!(c.demote().await.unwrap().changed);
        let r = c.rejoin("b:9000").await.unwrap();
        assert_eq!((r.role, r.changed), (ServerRole::Standby, true));
        assert_eq!(fake.status().standby().unwrap().primary, "b:9000");
    }

    #[tokio::test]
    async fn out_of_sync_needs_force_and_posts_need_the_token() {
        let fake = FakeServer::start(standby_status(3, "b:9000", false, true)).await;
        let c = client(&fake, Some(TOKEN));
        assert!(matches!(c.promote(4, false, None).await, Err(ServerAdminError::Refused { status: 409, .. })));
        assert!(matches!(
            client(&fake, Some("wrong")).demote().await,
            Err(ServerAdminError::Refused { status: 401, .. })
        ));
        assert!(matches!(client(&fake, None).demote().await, Err(ServerAdminError::Refused { status: 401, .. })));
        assert_eq!(c.promote(4, true, None).await.unwrap().epoch, Some(4));
    }

    #[tokio::test]
    async fn unreachable_server_is_unreachable() {
        let port = crate::testkit::free_port();
        let c = ServerAdmin::new(format!("http://127.0.0.1:{port}"), None, Duration::from_secs(2));
        assert!(matches!(c.status().await, Err(ServerAdminError::Unreachable { .. })));
    }
}

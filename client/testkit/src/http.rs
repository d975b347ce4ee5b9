//! [`Http`]: just enough of an HTTP/1 client for tests, with a deadline on every request.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Deadline of one request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status, one header, body as text.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A pooled HTTP/1 client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// A new client.
    pub fn new() -> Http {
        Http { client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Sends one request; `body` is sent as JSON when given, `content_type` overriding it.
    ///
    /// # Panics
    ///
    /// On connection errors or after [`REQUEST_TIMEOUT`].
    pub async fn send(&self, method: &str, url: &str, body: Option<(&str, String)>) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = Request::builder().method(method).uri(url);
        let payload = match body {
            Some((content_type, text)) => {
                req = req.header("content-type", content_type);
                Bytes::from(text)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).expect("request");
        let call = async {
            let resp = self.client.request(req).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (status, retry_after, content_type) =
                (resp.status().as_u16(), header("retry-after"), header("content-type"));
            let bytes = resp.into_body().collect().await.unwrap_or_else(|e| panic!("{url}: {e}")).to_bytes();
            Reply { status, retry_after, content_type, body: String::from_utf8_lossy(&bytes).into_owned() }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, call).await.unwrap_or_else(|_| panic!("{url}: no answer"))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Reply {
        self.send("GET", url, None).await
    }

    /// `method url` with a JSON body.
    pub async fn json(&self, method: &str, url: &str, body: &serde_json::Value) -> Reply {
        self.send(method, url, Some(("application/json", body.to_string()))).await
    }
}

//! The seam between the cache and the content provider's module (the
//! http-module world): the appliance implements [`Hooks`] over a wasm
//! instance; the cache asks only what the module declared it wants.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, request, response};
use std::net::IpAddr;
use std::time::Duration;

/// What `on-request` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAction {
    /// Through the cache, under this key (`None`: the path and query).
    Cache(Option<String>),
    /// To the origin for this client only.
    Bypass,
    Redirect(StatusCode, HeaderValue),
    Deny(StatusCode),
}

/// What `on-response` decided about an origin answer.
#[derive(Debug, Clone, Default)]
pub struct ResponseAction {
    /// false: pass it to its client only.
    pub store: bool,
    /// `cache-control: max-age=<ttl>` instead of the origin's.
    pub ttl: Option<Duration>,
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_headers: Vec<HeaderName>,
    pub body: Option<Bytes>,
}

impl ResponseAction {
    /// The answer as the origin sent it.
    pub fn unchanged() -> Self {
        Self { store: true, ..Self::default() }
    }
}

/// A hook call that trapped, ran out of time, or answered nonsense: the
/// cache fails open for that request and counts it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HookFault(pub String);

pub trait Hooks: Send + Sync + 'static {
    /// Whether `on_request` wants a request for `path`. false: it never enters wasm.
    fn wants_request(&self, path: &str) -> bool;
    fn on_request(&self, request: &request::Parts, client: Option<IpAddr>) -> Result<RequestAction, HookFault>;
    /// Whether `on_response` wants an origin answer of this `content-type`.
    fn wants_response(&self, content_type: Option<&str>) -> bool;
    /// Bodies up to this many bytes are handed to `on_response`.
    fn transform_max_bytes(&self) -> u64;
    fn on_response(
        &self,
        request: &request::Parts,
        client: Option<IpAddr>,
        head: &response::Parts,
        body: Option<&Bytes>,
    ) -> Result<ResponseAction, HookFault>;
}

/// Runs one hook call on tokio's blocking pool, not on an async worker: a
/// module's call may take its tenant's whole deadline, and the workers
/// serve every tenant's cache (and the appliance's API). A hostile module
/// then delays only the requests that wait for it.
pub(crate) async fn off_workers<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, HookFault> + Send + 'static,
) -> Result<T, HookFault> {
    tokio::task::spawn_blocking(call).await.unwrap_or_else(|e| Err(HookFault(format!("the hook call ended: {e}"))))
}

/// The client's address, which the server puts in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Applies a response action to the origin's head.
pub fn apply(head: &mut response::Parts, action: &ResponseAction) {
    for (k, v) in &action.set_headers {
        head.headers.insert(k.clone(), v.clone());
    }
    for k in &action.remove_headers {
        head.headers.remove(k);
    }
    if let Some(ttl) = action.ttl {
        if let Ok(v) = HeaderValue::try_from(format!("max-age={}", ttl.as_secs())) {
            head.headers.insert(http::header::CACHE_CONTROL, v);
        }
        // The module's TTL counts from now, not from the origin's clock.
        head.headers.remove(http::header::EXPIRES);
        head.headers.remove(http::header::AGE);
    }
    if let Some(body) = &action.body {
        head.headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        // New bytes, the same for the same origin body: the origin's entity-tag
        // still validates them, but only weakly (RFC 9110 §8.8.1).
        let weak = head.headers.get(http::header::ETAG).and_then(|e| e.to_str().ok()).filter(|e| !e.starts_with("W/"));
        if let Some(v) = weak.and_then(|e| HeaderValue::try_from(format!("W/{e}")).ok()) {
            head.headers.insert(http::header::ETAG, v);
        }
    }
}

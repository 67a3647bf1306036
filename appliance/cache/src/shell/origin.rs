//! Origin fetches: only to the tenant's configured origin (the request's
//! path on it, never a host the client names), a timeout for the head and
//! between body chunks, a size cap, the module's `on-response` hook, and the
//! body fed into a [`Fill`] that clients read while it arrives.

use super::Inner;
use super::fill::Fill;
use super::flight::{Flight, Landing};
use super::hooks::{self, ClientAddr};
use super::store::Variant;
use crate::core::variant::{HOP_BY_HOP, meta_for};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request, response};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// Request fields never forwarded besides the hop-by-hop ones: the host is
/// the origin's, and the cache answers ranges and conditionals itself from
/// the full object.
const NOT_FORWARDED: [&str; 6] = ["host", "range", "if-range", "if-none-match", "if-modified-since", "content-length"];

/// One origin fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: Arc<str>,
    /// The key as the policy's URI.
    pub uri: http::Uri,
    pub request: request::Parts,
    /// The stored variant being revalidated or refreshed.
    pub stale: Option<Arc<Variant>>,
    /// The module's bypass: never stored, never shared.
    pub no_store: bool,
}

/// The fields sent to the origin for `request`, plus `extra` (validators).
pub fn forward_headers(request: &HeaderMap, extra: impl Iterator<Item = (HeaderName, HeaderValue)>) -> HeaderMap {
    let mut h = request.clone();
    for name in HOP_BY_HOP.iter().chain(&NOT_FORWARDED) {
        h.remove(*name);
    }
    for (k, v) in extra {
        h.insert(k, v);
    }
    h
}

/// Fetches for `job` and lands `flight`; the body then fills on its own
/// task. Runs as its own task: a client that goes away does not cancel it.
pub async fn fetch(inner: Arc<Inner>, job: Job, flight: Arc<Flight>) {
    let landing = fetch_head(&inner, &job).await;
    // A body of unknown length is stored only once whole: until then the
    // flight stays open, so clients keep joining it instead of the origin.
    let unstored = match &landing {
        Landing::Answered { variant, shared: true, .. } if variant.body.known_len().is_none() => {
            Some(Arc::clone(variant))
        }
        _ => None,
    };
    flight.land(landing);
    if let Some(v) = unstored {
        v.body.wait_done().await;
    }
    inner.flights.end(&job.key, &flight);
}

async fn fetch_head(inner: &Arc<Inner>, job: &Job) -> Landing {
    let Job { key, uri, request, stale, no_store } = job;
    inner.stats.origin_fetches.fetch_add(1, Relaxed);
    let validators =
        stale.as_ref().and_then(|v| v.meta.as_ref()).map(|m| m.validators().collect::<Vec<_>>()).unwrap_or_default();
    let headers = forward_headers(&request.headers, validators.into_iter());
    // The client's path on the tenant's origin: the host is always the
    // origin's (a path like `//elsewhere/x` stays a path), and a key the
    // module chose never names what is fetched.
    let mut url = inner.config.origin.clone();
    url.set_path(request.uri.path());
    url.set_query(request.uri.query());
    let send = inner.client.request(Method::GET, url).headers(headers).send();
    let resp = match tokio::time::timeout(inner.config.origin_timeout, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            inner.stats.origin_errors.fetch_add(1, Relaxed);
            return Landing::Failed(format!("origin: {e}").into());
        }
        Err(_) => {
            inner.stats.origin_errors.fetch_add(1, Relaxed);
            return Landing::Failed("origin: no answer within origin_timeout".into());
        }
    };
    let now = SystemTime::now();
    let mut head = response::Response::new(());
    *head.status_mut() = resp.status();
    // Owned copies: the client's parsed fields are slices of its read buffer.
    *head.headers_mut() = crate::core::variant::owned(resp.headers());
    let (mut head, ()) = head.into_parts();
    for name in HOP_BY_HOP {
        head.headers.remove(name);
    }

    let refreshed = match stale.as_ref().and_then(|old| old.meta.as_ref().map(|m| (old, m))) {
        Some((old, m)) if head.status == StatusCode::NOT_MODIFIED => {
            m.after_not_modified(uri, request, &head, now).map(|meta| (old, meta))
        }
        _ => None,
    };
    if let Some((old, meta)) = refreshed {
        inner.stats.revalidated.fetch_add(1, Relaxed);
        let v = Arc::new(Variant {
            status: meta.status,
            headers: meta.headers.clone(),
            meta: Some(meta),
            body: Arc::clone(&old.body),
        });
        inner.store.put(key, Arc::clone(&v));
        return Landing::Answered { variant: v, shared: true, origin_error: false };
    }
    let origin_error = head.status.is_server_error();
    if origin_error {
        inner.stats.origin_errors.fetch_add(1, Relaxed);
    }
    let expected = resp.content_length();

    // The module's hook, for the types it asked for; small bodies are read
    // whole first so it can transform them.
    let mut admitted = !no_store;
    let mut whole: Option<Bytes> = None;
    let mut resp = Some(resp);
    let wanted = inner.hooks.as_ref().filter(|h| {
        !origin_error && h.wants_response(head.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()))
    });
    if let Some(h) = wanted {
        let small = expected.is_some_and(|n| n <= h.transform_max_bytes());
        if small {
            match read_whole(inner, resp.take(), expected.unwrap_or(0)).await {
                Ok(b) => whole = Some(b),
                Err(why) => {
                    inner.stats.origin_errors.fetch_add(1, Relaxed);
                    return Landing::Failed(why.into());
                }
            }
        }
        let client = request.extensions.get::<ClientAddr>().map(|c| c.0);
        inner.stats.hook_calls.fetch_add(1, Relaxed);
        let (h, req, seen, body) = (Arc::clone(h), request.clone(), head.clone(), whole.clone());
        match hooks::off_workers(move || h.on_response(&req, client, &seen, body.as_ref())).await {
            Ok(action) => {
                hooks::apply(&mut head, &action);
                admitted &= action.store;
                if let Some(b) = action.body.filter(|_| whole.is_some()) {
                    whole = Some(b);
                }
            }
            Err(fault) => {
                inner.stats.hook_faults.fetch_add(1, Relaxed);
                tracing::debug!(key = &**key, %fault, "on-response failed open");
            }
        }
    }

    let length = whole.as_ref().map(|b| b.len() as u64).or(expected);
    let oversize = length.is_some_and(|n| n > inner.config.max_object_bytes);
    let meta = if oversize || !admitted { None } else { meta_for(uri, request, &head, now) };
    let shared = meta.is_some();
    if !shared {
        inner.stats.passed.fetch_add(1, Relaxed);
    }
    let body = match &whole {
        Some(b) => Fill::done(b.clone()),
        None => Fill::new(expected),
    };
    let variant = Arc::new(Variant { status: head.status, headers: head.headers, meta, body });
    if shared && length.is_some() {
        // Stored now, so the next client hits the object while it fills.
        inner.store.put(key, Arc::clone(&variant));
    }
    if let Some(resp) = resp {
        let (inner2, key2, v2) = (Arc::clone(inner), Arc::clone(key), Arc::clone(&variant));
        tokio::spawn(async move { fill_body(inner2, key2, resp, v2, shared).await });
    }
    Landing::Answered { variant, shared, origin_error }
}

/// A small body, read whole for the module's transform.
async fn read_whole(inner: &Inner, resp: Option<reqwest::Response>, expected: u64) -> Result<Bytes, &'static str> {
    let Some(resp) = resp else { return Ok(Bytes::new()) };
    let mut body = resp.bytes_stream();
    let mut out = BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0));
    loop {
        match tokio::time::timeout(inner.config.origin_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                inner.stats.bytes_from_origin.fetch_add(chunk.len() as u64, Relaxed);
                out.extend_from_slice(&chunk);
                if out.len() as u64 > expected {
                    return Err("the origin sent more than its content-length");
                }
            }
            Ok(Some(Err(_))) => return Err("the origin's body broke off"),
            Ok(None) if out.len() as u64 == expected => return Ok(out.freeze()),
            Ok(None) => return Err("the origin's body ended short of its content-length"),
            Err(_) => return Err("the origin's body stalled past origin_timeout"),
        }
    }
}

/// Streams the origin's body into the variant's fill; stores it when it
/// completes (if its length was unknown), unstores it if it breaks.
async fn fill_body(inner: Arc<Inner>, key: Arc<str>, resp: reqwest::Response, variant: Arc<Variant>, shared: bool) {
    let mut body = resp.bytes_stream();
    let cap = inner.config.max_object_bytes;
    let broken = loop {
        match tokio::time::timeout(inner.config.origin_timeout, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                inner.stats.bytes_from_origin.fetch_add(chunk.len() as u64, Relaxed);
                if shared && variant.body.received() + chunk.len() as u64 > cap {
                    break Some("the body passed max_object_bytes");
                }
                variant.body.push(chunk);
            }
            Ok(Some(Err(_))) => break Some("the origin's body broke off"),
            Ok(None) => break None,
            Err(_) => break Some("the origin's body stalled past origin_timeout"),
        }
    };
    let short = variant.body.known_len().is_some_and(|n| n != variant.body.received());
    match broken.or(short.then_some("the origin's body ended short of its content-length")) {
        None => {
            let unknown = variant.body.known_len().is_none();
            variant.body.finish();
            if shared && unknown {
                inner.store.put(&key, Arc::clone(&variant));
            }
        }
        Some(why) => {
            tracing::debug!(key = &*key, why, "origin fill failed");
            inner.stats.origin_errors.fetch_add(1, Relaxed);
            variant.body.fail();
            inner.store.remove_variant(&key, &variant);
        }
    }
}

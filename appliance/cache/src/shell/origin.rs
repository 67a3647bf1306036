//! Origin fetches: only to the tenant's configured origin (the request's
//! path on it, never a host the client names), a timeout for the head and
//! between body chunks, a size cap, and the body fed into a [`Fill`] that
//! clients read while it arrives.

use super::fill::Fill;
use super::store::Variant;
use super::{Inner, flight::Flight, flight::Landing};
use crate::core::variant::meta_for;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request, response};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// Request fields never forwarded: hop-by-hop ones (RFC 9110 §7.6.1), and
/// what the cache answers itself from the full object (ranges, conditionals).
const NOT_FORWARDED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "content-length",
];

/// The fields sent to the origin for `request`, plus `extra` (validators).
pub fn forward_headers(request: &HeaderMap, extra: impl Iterator<Item = (HeaderName, HeaderValue)>) -> HeaderMap {
    let mut h = request.clone();
    for name in NOT_FORWARDED {
        h.remove(name);
    }
    for (k, v) in extra {
        h.insert(k, v);
    }
    h
}

/// Fetches `key` for `request` and lands `flight`; then fills the body.
/// Runs as its own task: a client that goes away does not cancel it.
pub async fn fetch(
    inner: Arc<Inner>,
    key: Arc<str>,
    uri: http::Uri,
    request: request::Parts,
    stale: Option<Arc<Variant>>,
    flight: Arc<Flight>,
) {
    let landing = fetch_head(&inner, &key, &uri, &request, stale.as_ref()).await;
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
    inner.flights.end(&key, &flight);
}

async fn fetch_head(
    inner: &Arc<Inner>,
    key: &Arc<str>,
    uri: &http::Uri,
    request: &request::Parts,
    stale: Option<&Arc<Variant>>,
) -> Landing {
    inner.stats.origin_fetches.fetch_add(1, Relaxed);
    let validators =
        stale.and_then(|v| v.meta.as_ref()).map(|m| m.validators().collect::<Vec<_>>()).unwrap_or_default();
    let headers = forward_headers(&request.headers, validators.into_iter());
    let url = match inner.config.origin.join(uri.path_and_query().map_or("/", |p| p.as_str())) {
        Ok(u) => u,
        Err(e) => return Landing::Failed(format!("origin url: {e}").into()),
    };
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
    *head.headers_mut() = resp.headers().clone();
    let (head, ()) = head.into_parts();

    let refreshed = match stale.and_then(|old| old.meta.as_ref().map(|m| (old, m))) {
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
    let oversize = expected.is_some_and(|n| n > inner.config.max_object_bytes);
    let meta = if oversize { None } else { meta_for(uri, request, &head, now) };
    let shared = meta.is_some();
    if !shared {
        inner.stats.passed.fetch_add(1, Relaxed);
    }
    let mut headers = head.headers;
    for name in ["connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"] {
        headers.remove(name);
    }
    let variant = Arc::new(Variant { status: head.status, headers, meta, body: Fill::new(expected) });
    if shared && expected.is_some() {
        // Stored now, so the next client hits the object while it fills.
        inner.store.put(key, Arc::clone(&variant));
    }
    let inner2 = Arc::clone(inner);
    let key2 = Arc::clone(key);
    let v2 = Arc::clone(&variant);
    tokio::spawn(async move { fill_body(inner2, key2, resp, v2, shared).await });
    Landing::Answered { variant, shared, origin_error }
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
    match broken {
        None if variant.body.known_len().is_some_and(|n| n != variant.body.received()) => {
            variant.body.fail();
            inner.store.remove_variant(&key, &variant);
        }
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

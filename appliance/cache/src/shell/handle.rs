//! One client request, from lookup to the answer's first byte: a fresh hit
//! (with 304 and ranges answered here), a stale answer with a background
//! refresh, or a wait on the coalesced origin fetch.

use super::fill::End;
use super::flight::{Flights, Landing};
use super::hooks::{ClientAddr, RequestAction, off_workers};
use super::store::Variant;
use super::{Body, Inner, origin};
use crate::core::{Decision, conditional, multipart::Multipart};
use crate::wire::range::{self, RangePlan};
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, request};
use http_body_util::{BodyExt, Full, StreamBody};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

/// What the `x-cache` field says about an answer.
#[derive(Debug, Clone, Copy)]
enum Status {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Pass,
}

impl Status {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Status::Hit => "HIT",
            Status::Miss => "MISS",
            Status::Stale => "STALE",
            Status::Revalidated => "REVALIDATED",
            Status::Pass => "PASS",
        })
    }
}

pub async fn handle<B>(inner: Arc<Inner>, req: Request<B>) -> Response<Body> {
    let (parts, _body) = req.into_parts();
    if parts.method != Method::GET && parts.method != Method::HEAD {
        // RFC 9111 §4.4: an unsafe method invalidates what it targets. The
        // cache forwards only what it can replay; the rest is the origin's.
        inner.store.purge_key(&key_of(&parts));
        return plain(StatusCode::METHOD_NOT_ALLOWED, "this edge cache serves GET and HEAD\n");
    }
    let mut key = key_of(&parts);
    let mut bypass = false;
    if let Some(h) = inner.hooks.as_ref().filter(|h| h.wants_request(parts.uri.path())) {
        inner.stats.hook_calls.fetch_add(1, Relaxed);
        let (h, request) = (Arc::clone(h), parts.clone());
        let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        match off_workers(move || h.on_request(&request, client)).await {
            Ok(RequestAction::Cache(Some(k))) => key = k,
            Ok(RequestAction::Cache(None)) => {}
            Ok(RequestAction::Bypass) => bypass = true,
            Ok(RequestAction::Redirect(status, location)) => {
                inner.stats.redirected.fetch_add(1, Relaxed);
                let mut r = plain(status, "");
                r.headers_mut().insert(header::LOCATION, location);
                return r;
            }
            Ok(RequestAction::Deny(status)) => {
                inner.stats.denied.fetch_add(1, Relaxed);
                return plain(status, "");
            }
            Err(fault) => {
                inner.stats.hook_faults.fetch_add(1, Relaxed);
                tracing::debug!(%fault, "on-request failed open");
            }
        }
    }
    // The key as the policy's URI, parsed only when a policy needs it (a
    // request with its own directives, or a fetch): not on a plain hit.
    let parse_uri = |key: &str| key.parse::<http::Uri>().unwrap_or_else(|_| http::Uri::from_static("/"));
    let job = |key: &Arc<str>, stale: Option<Arc<Variant>>, no_store: bool| origin::Job {
        key: Arc::clone(key),
        uri: parse_uri(key),
        request: parts.clone(),
        stale,
        no_store,
    };
    if bypass {
        inner.stats.misses.fetch_add(1, Relaxed);
        let key: Arc<str> = key.into();
        let (solo, _) = Flights::default().join(&key);
        origin::fetch(Arc::clone(&inner), job(&key, None, true), Arc::clone(&solo)).await;
        return land(&inner, &parts, solo.landed().await, None).await;
    }
    let now = SystemTime::now();

    let mut stale = None;
    if let Some(entry) = inner.store.get(&key) {
        for v in &entry.variants {
            let Some(meta) = v.meta.as_ref() else { continue };
            if v.body.end() == End::Failed {
                continue;
            }
            match meta.decide(|| parse_uri(&key), &parts, now) {
                Decision::Fresh => {
                    inner.stats.hits.fetch_add(1, Relaxed);
                    return answer(&inner, &parts, v, Status::Hit, now).await;
                }
                Decision::ServeStale => {
                    inner.stats.stale_served.fetch_add(1, Relaxed);
                    if !inner.flights.in_flight(&key) {
                        let (flight, leads) = inner.flights.join(&key);
                        if leads {
                            let key: Arc<str> = key.as_str().into();
                            tokio::spawn(origin::fetch(
                                Arc::clone(&inner),
                                job(&key, Some(Arc::clone(v)), false),
                                flight,
                            ));
                        }
                    }
                    return answer(&inner, &parts, v, Status::Stale, now).await;
                }
                Decision::Revalidate => {
                    stale = Some(Arc::clone(v));
                    break;
                }
                Decision::Mismatch => {}
            }
        }
    }

    inner.stats.misses.fetch_add(1, Relaxed);
    let key: Arc<str> = key.into();
    let (flight, leads) = inner.flights.join(&key);
    if leads {
        tokio::spawn(origin::fetch(Arc::clone(&inner), job(&key, stale.clone(), false), Arc::clone(&flight)));
    } else {
        inner.stats.coalesced.fetch_add(1, Relaxed);
    }
    let mut landing = flight.landed().await;
    if let (false, Landing::Answered { variant, shared, .. }) = (leads, &landing) {
        let usable = *shared && variant.meta.as_ref().is_some_and(|m| m.vary_matches(&parts.headers));
        if !usable {
            // Another representation, or one only its requester may see:
            // this client asks the origin itself.
            let (solo, _) = Flights::default().join(&key);
            origin::fetch(Arc::clone(&inner), job(&key, stale.clone(), false), Arc::clone(&solo)).await;
            landing = solo.landed().await;
        }
    }
    land(&inner, &parts, landing, stale).await
}

/// The answer once an origin fetch landed: the origin's, or the stale
/// object when the origin failed inside its stale-if-error window.
async fn land(inner: &Inner, parts: &request::Parts, landing: Landing, stale: Option<Arc<Variant>>) -> Response<Body> {
    let now = SystemTime::now();
    let revalidated = |v: &Arc<Variant>| stale.as_ref().is_some_and(|s| Arc::ptr_eq(&s.body, &v.body));
    let on_error = stale.clone().filter(|v| v.meta.as_ref().is_some_and(|m| m.usable_on_error(now)));
    match (landing, on_error) {
        (Landing::Answered { origin_error: true, .. } | Landing::Failed(_) | Landing::Pending, Some(v)) => {
            inner.stats.stale_served.fetch_add(1, Relaxed);
            answer(inner, parts, &v, Status::Stale, now).await
        }
        (Landing::Answered { variant, shared, .. }, _) => {
            let status = if !shared {
                Status::Pass
            } else if revalidated(&variant) {
                Status::Revalidated
            } else {
                Status::Miss
            };
            answer(inner, parts, &variant, status, now).await
        }
        (Landing::Pending, None) => plain(StatusCode::BAD_GATEWAY, "the origin did not answer\n"),
        (Landing::Failed(why), None) => {
            tracing::debug!(path = %parts.uri, %why, "origin unreachable");
            let gateway =
                if why.contains("origin_timeout") { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            plain(gateway, "the origin did not answer\n")
        }
    }
}

/// The cache key: the request's path and query (one site per tenant cache).
fn key_of(parts: &request::Parts) -> String {
    parts.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// The answer from a variant: 304, 206 (one range or many), 416, or the whole.
async fn answer(
    inner: &Inner,
    parts: &request::Parts,
    v: &Arc<Variant>,
    status: Status,
    now: SystemTime,
) -> Response<Body> {
    let mut headers = v.headers.clone();
    if let Some(meta) = &v.meta {
        headers.insert(header::AGE, HeaderValue::from(meta.age(now)));
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    headers.insert("x-cache", status.value());
    let head_only = parts.method == Method::HEAD;
    let cacheable_ok = v.meta.is_some() && v.status == StatusCode::OK;

    if cacheable_ok && conditional::not_modified(&parts.headers, &v.headers) {
        for h in [header::CONTENT_LENGTH, header::CONTENT_TYPE, header::CONTENT_ENCODING, header::CONTENT_RANGE] {
            headers.remove(h);
        }
        return respond(StatusCode::NOT_MODIFIED, headers, Body::Left(Full::new(Bytes::new())));
    }

    let ranges = parts
        .headers
        .get(header::RANGE)
        .filter(|_| {
            cacheable_ok && parts.method == Method::GET && conditional::range_applies(&parts.headers, &v.headers)
        })
        .and_then(|r| r.to_str().ok())
        .and_then(|r| range::parse_range(r).ok());
    if let Some(specs) = ranges {
        let len = match v.body.known_len() {
            Some(n) => Some(n),
            None => v.body.wait_done().await,
        };
        if let Some(len) = len {
            return ranged(inner, v, headers, &specs, len);
        }
    }

    let len = v.body.known_len();
    match len {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
    if head_only {
        return respond(v.status, headers, Body::Left(Full::new(Bytes::new())));
    }
    inner.stats.bytes_served.fetch_add(len.unwrap_or(0), Relaxed);
    let body = match v.body.complete() {
        Some(all) => Body::Left(Full::new(all.clone())),
        None => streamed(v.body.reader(0, None)),
    };
    respond(v.status, headers, body)
}

fn ranged(
    inner: &Inner,
    v: &Arc<Variant>,
    mut headers: HeaderMap,
    specs: &[range::RangeSpec],
    len: u64,
) -> Response<Body> {
    match range::plan(specs, len) {
        RangePlan::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, hv(range::unsatisfied(len)));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            respond(StatusCode::RANGE_NOT_SATISFIABLE, headers, Body::Left(Full::new(Bytes::new())))
        }
        RangePlan::Partial(rs) if rs.len() == 1 => {
            let r = rs[0];
            headers.insert(header::CONTENT_RANGE, hv(range::ContentRange { range: r, complete: len }.to_string()));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
            inner.stats.bytes_served.fetch_add(r.len(), Relaxed);
            let body = match v.body.complete() {
                Some(all) => Body::Left(Full::new(all.slice(r.start as usize..r.end as usize))),
                None => streamed(v.body.reader(r.start, Some(r.end))),
            };
            respond(StatusCode::PARTIAL_CONTENT, headers, body)
        }
        RangePlan::Partial(rs) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|t| t.to_str().ok()).map(str::to_owned);
            let mut boundary = [0u8; 12];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut boundary);
            let mp = Multipart::new(hex::encode(boundary), &rs, len, ct.as_deref());
            headers.insert(header::CONTENT_TYPE, hv(mp.content_type()));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(mp.content_length(&rs)));
            inner.stats.bytes_served.fetch_add(rs.iter().map(|r| r.len()).sum(), Relaxed);
            let fill = Arc::clone(&v.body);
            let parts = mp.part_heads.into_iter().zip(rs).flat_map(move |(head, r)| {
                let data = fill.reader(r.start, Some(r.end)).boxed();
                [futures_util::stream::once(async move { Ok(head) }).boxed(), data]
            });
            let body = futures_util::stream::iter(parts)
                .flatten()
                .chain(futures_util::stream::once(async move { Ok(mp.close) }));
            respond(StatusCode::PARTIAL_CONTENT, headers, streamed(body))
        }
    }
}

fn streamed(s: impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    Body::Right(BodyExt::boxed_unsync(StreamBody::new(s.map(|r| r.map(hyper::body::Frame::data)))))
}

fn hv(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    respond(status, h, Body::Left(Full::new(Bytes::from_static(text.as_bytes()))))
}

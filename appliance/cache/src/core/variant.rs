//! A stored response (one variant of a key) and the decision for a request.
//!
//! Freshness comes from `http-cache-semantics` (RFC 9111 §4.2: max-age,
//! s-maxage, Expires, Age, heuristics; no-store, private and authorization
//! at storage). What it leaves to us: choosing among the variants of one
//! key by `Vary` (it holds one response), and RFC 5861's windows.

use crate::wire::directives::{self, StaleWindows};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, request, response};
use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use std::time::{Duration, SystemTime};

/// Hop-by-hop fields (RFC 9110 §7.6.1): they end at this hop, in either direction.
pub const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Fields a cache never replays besides those: a cookie is one client's,
/// and `Age` is the cache's own to send.
const NOT_STORED: [&str; 2] = ["set-cookie", "age"];

/// What the cache keeps of one response besides its body.
#[derive(Debug, Clone)]
pub struct Meta {
    policy: CachePolicy,
    pub status: StatusCode,
    /// The fields replayed to clients: hop-by-hop ones and `Age` removed.
    pub headers: HeaderMap,
    /// The request's values of each field the response's `Vary` names.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// `Vary: *`: this variant never answers another request (RFC 9111 §4.1).
    vary_star: bool,
    /// When the response stops being fresh.
    expires: SystemTime,
    pub stale: StaleWindows,
    pub tags: Vec<String>,
}

/// What to do with a stored variant for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Fresh,
    /// Serve it stale and refresh it in the background (RFC 5861 §3).
    ServeStale,
    /// Ask the origin first (conditional request); stale-if-error may still serve it.
    Revalidate,
    /// Another representation: `Vary` does not match.
    Mismatch,
}

/// A stored response from `request` at `response_time`, or `None` when RFC
/// 9111 forbids storing it (no-store, private, an authorized request, an
/// uncacheable status …) or it is not a full 200 we can replay.
///
/// `uri` is the cache key as a path: the policy is built against it so that
/// the host a client named (one site per tenant cache) does not split keys.
pub fn meta_for(
    uri: &http::Uri,
    request: &request::Parts,
    response: &response::Parts,
    response_time: SystemTime,
) -> Option<Meta> {
    if response.status != StatusCode::OK {
        // 206 and others are passed through, not stored: ranges are cut from full objects.
        return None;
    }
    let req = synthetic(uri, &request.method, &request.headers);
    let mut stored = response::Response::new(());
    *stored.status_mut() = response.status;
    *stored.headers_mut() = owned(&response.headers);
    let (response, ()) = stored.into_parts();
    let response = &response;
    let policy = CachePolicy::new_options(&req, response, response_time, CacheOptions::default());
    if !policy.is_storable() || response.headers.contains_key(http::header::SET_COOKIE) {
        return None;
    }
    let mut headers = response.headers.clone();
    for name in HOP_BY_HOP.iter().chain(&NOT_STORED) {
        headers.remove(*name);
    }
    let mut vary = Vec::new();
    let mut vary_star = false;
    for name in comma_values(&response.headers, http::header::VARY) {
        if name == "*" {
            vary_star = true;
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            let value = req.headers.get(&name).cloned();
            vary.push((name, value));
        }
    }
    let cc = || response.headers.get_all(http::header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok());
    // RFC 9111 §4.2.4: no stale answers when the response forbids them.
    let forbids_stale = cc()
        .flat_map(|v| v.split(','))
        .map(|d| d.split('=').next().unwrap_or("").trim().to_ascii_lowercase())
        .any(|d| matches!(d.as_str(), "must-revalidate" | "proxy-revalidate" | "no-cache"));
    let stale = if forbids_stale { StaleWindows::default() } else { directives::stale_windows(cc()) };
    let tags = directives::tags(
        response
            .headers
            .get_all("cache-tag")
            .iter()
            .chain(response.headers.get_all("surrogate-key"))
            .filter_map(|v| v.to_str().ok()),
    );
    let expires = response_time + policy.time_to_live(response_time);
    Some(Meta { policy, status: response.status, headers, vary, vary_star, expires, stale, tags })
}

impl Meta {
    /// Whether this variant answers `request` at `now`, and how. `uri`
    /// gives the key as a URI, asked for only when the request carries
    /// directives of its own.
    pub fn decide(&self, uri: impl FnOnce() -> http::Uri, request: &request::Parts, now: SystemTime) -> Decision {
        if !self.vary_matches(&request.headers) {
            return Decision::Mismatch;
        }
        let plain = !request.headers.contains_key(http::header::CACHE_CONTROL)
            && !request.headers.contains_key(http::header::PRAGMA);
        let fresh = if plain {
            // The common case without a header map clone: with no request
            // directives, `before_request` reduces to freshness.
            now < self.expires
        } else {
            let req = synthetic(&uri(), &Method::GET, &request.headers);
            matches!(self.policy.before_request(&req, now), BeforeRequest::Fresh(_))
        };
        if fresh {
            return Decision::Fresh;
        }
        let no_cache = !plain && has_directive(&request.headers, "no-cache");
        if !no_cache && self.staleness(now) <= self.stale.while_revalidate && now >= self.expires {
            Decision::ServeStale
        } else {
            Decision::Revalidate
        }
    }

    /// How long past its freshness this variant is at `now` (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        now.duration_since(self.expires).unwrap_or_default()
    }

    /// Inside the stale-if-error window at `now`.
    pub fn usable_on_error(&self, now: SystemTime) -> bool {
        self.staleness(now) <= self.stale.if_error
    }

    /// The `Age` to send at `now`, in seconds.
    pub fn age(&self, now: SystemTime) -> u64 {
        self.policy.age(now).as_secs()
    }

    /// Whether `other` answers the same requests (same `Vary` selection), so
    /// it supersedes this one in the store.
    pub fn same_selection(&self, other: &Meta) -> bool {
        !self.vary_star && !other.vary_star && self.vary == other.vary
    }

    /// Whether the fields `Vary` names carry the same values in `headers`.
    pub fn vary_matches(&self, headers: &HeaderMap) -> bool {
        !self.vary_star && self.vary.iter().all(|(name, value)| headers.get(name) == value.as_ref())
    }

    /// The validators to revalidate this variant with (RFC 9111 §4.3.1):
    /// its entity-tag as `If-None-Match`, its `Last-Modified` as `If-Modified-Since`.
    pub fn validators(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        let etag = self.headers.get(http::header::ETAG).map(|v| (http::header::IF_NONE_MATCH, v.clone()));
        let lm = self.headers.get(http::header::LAST_MODIFIED).map(|v| (http::header::IF_MODIFIED_SINCE, v.clone()));
        etag.into_iter().chain(lm)
    }

    /// This variant updated by the origin's answer to a revalidation: `Some`
    /// with new metadata (the body is unchanged) on a matching 304.
    pub fn after_not_modified(
        &self,
        uri: &http::Uri,
        request: &request::Parts,
        response: &response::Parts,
        response_time: SystemTime,
    ) -> Option<Meta> {
        let req = synthetic(uri, &request.method, &request.headers);
        match self.policy.after_response(&req, response, response_time) {
            http_cache_semantics::AfterResponse::NotModified(_, parts) => {
                let mut merged = response::Response::new(());
                *merged.status_mut() = StatusCode::OK;
                *merged.headers_mut() = parts.headers;
                let (parts, ()) = merged.into_parts();
                meta_for(uri, request, &parts, response_time).map(|mut m| {
                    m.tags.clone_from(&self.tags);
                    m
                })
            }
            http_cache_semantics::AfterResponse::Modified(..) => None,
        }
    }
}

/// A copy of `h` whose values own their bytes.
///
/// hyper parses a message's fields as slices of its connection's read
/// buffer, and a clone shares them: a stored field would keep that whole
/// buffer (tens of KiB) alive as long as the object, memory the byte budget
/// never sees. Everything the store keeps goes through here.
pub fn owned(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
            out.append(k.clone(), v);
        }
    }
    out
}

/// A request as the policy sees it: the key as its URI, no `Host` (one site per cache).
fn synthetic(uri: &http::Uri, method: &Method, headers: &HeaderMap) -> request::Parts {
    let mut req = request::Request::new(());
    *req.uri_mut() = uri.clone();
    *req.method_mut() = if method == Method::HEAD { Method::GET } else { method.clone() };
    let mut headers = owned(headers);
    headers.remove(http::header::HOST);
    *req.headers_mut() = headers;
    req.into_parts().0
}

fn comma_values(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    comma_values(headers, http::header::CACHE_CONTROL)
        .chain(comma_values(headers, http::header::PRAGMA))
        .any(|d| d.eq_ignore_ascii_case(directive))
}

//! The fields a client or an origin hands the edge cache: `Range`, the
//! conditionals, `Cache-Control` (RFC 9111 and RFC 5861), `Vary` and tags.
//! Input: lines of `name: value`, the first half for the request, the rest
//! (after a blank line) for the origin's response. Nothing panics, and a
//! planned range lies inside the representation.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use netserv_cache::core::{conditional, variant};
use netserv_cache::wire::{directives, range};
use std::time::{Duration, SystemTime};

fn fields(text: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim())) {
            h.append(k, v);
        }
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (req_text, res_text) = text.split_once("\n\n").unwrap_or((text, ""));
    let req_h = fields(req_text);
    let res_h = fields(res_text);

    let len = data.len() as u64 * 37;
    for value in req_h.get_all("range").iter().filter_map(|v| v.to_str().ok()) {
        if let Ok(range::RangePlan::Partial(rs)) = range::parse_range(value).map(|s| range::plan(&s, len)) {
            for r in rs {
                assert!(r.start < r.end && r.end <= len, "{r:?} outside {len}");
            }
        }
    }
    let cc = res_h.get_all("cache-control").iter().filter_map(|v| v.to_str().ok());
    let _ = directives::stale_windows(cc);
    let tags = directives::tags(res_h.get_all("cache-tag").iter().filter_map(|v| v.to_str().ok()));
    assert!(tags.len() <= directives::MAX_TAGS);
    let _ = conditional::not_modified(&req_h, &res_h);
    let _ = conditional::range_applies(&req_h, &res_h);

    let mut req = Request::get("/k").body(()).expect("static");
    *req.headers_mut() = req_h;
    let (req, ()) = req.into_parts();
    let mut res = Response::new(());
    *res.headers_mut() = res_h;
    let (res, ()) = res.into_parts();
    let uri: http::Uri = "/k".parse().expect("static");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(meta) = variant::meta_for(&uri, &req, &res, t0) {
        for dt in [0, 1, 3600, 400 * 24 * 3600] {
            let now = t0 + Duration::from_secs(dt);
            let _ = meta.decide(|| uri.clone(), &req, now);
            let _ = meta.age(now);
            let _ = meta.usable_on_error(now);
        }
        let _ = meta.validators().count();
        let _ = meta.after_not_modified(&uri, &req, &res, t0 + Duration::from_secs(5));
    }
});

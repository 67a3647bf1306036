//! The seam to the content provider's module: only what it declared enters
//! it, its decisions are carried out, and a fault fails open.

mod origin;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, request, response};
use http_body_util::BodyExt;
use netserv_cache::{Cache, CacheConfig, HookFault, Hooks, RequestAction, ResponseAction};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

#[derive(Default)]
struct Provider {
    requests: AtomicU32,
    responses: AtomicU32,
}

impl Hooks for Provider {
    fn wants_request(&self, path: &str) -> bool {
        path.starts_with("/m/")
    }
    fn on_request(&self, r: &request::Parts, _client: Option<IpAddr>) -> Result<RequestAction, HookFault> {
        self.requests.fetch_add(1, Relaxed);
        let path = r.uri.path();
        Ok(match path {
            "/m/old" => RequestAction::Redirect(StatusCode::FOUND, HeaderValue::from_static("/m/new")),
            "/m/secret" => RequestAction::Deny(StatusCode::FORBIDDEN),
            "/m/live" => RequestAction::Bypass,
            "/m/trap" => return Err(HookFault("trapped".into())),
            "/m/slow" => {
                // A module that spends its whole deadline.
                std::thread::sleep(Duration::from_millis(400));
                RequestAction::Cache(None)
            }
            // Tracking parameters do not split the cache.
            p => RequestAction::Cache(Some(p.to_owned())),
        })
    }
    fn wants_response(&self, content_type: Option<&str>) -> bool {
        content_type.is_some_and(|t| t.starts_with("application/octet-stream"))
    }
    fn transform_max_bytes(&self) -> u64 {
        4096
    }
    fn on_response(
        &self,
        r: &request::Parts,
        _client: Option<IpAddr>,
        _head: &response::Parts,
        body: Option<&Bytes>,
    ) -> Result<ResponseAction, HookFault> {
        self.responses.fetch_add(1, Relaxed);
        if r.uri.path() == "/m/notstored" {
            return Ok(ResponseAction { store: false, ..ResponseAction::unchanged() });
        }
        let body = body.map(|b| {
            let mut v = b"BANNER:".to_vec();
            v.extend_from_slice(b);
            Bytes::from(v)
        });
        Ok(ResponseAction {
            ttl: Some(Duration::from_secs(300)),
            set_headers: vec![(http::HeaderName::from_static("x-provider"), HeaderValue::from_static("yes"))],
            body,
            ..ResponseAction::unchanged()
        })
    }
}

async fn get(cache: &Cache, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let r = cache.handle(Request::get(path).body(()).expect("req")).await;
    let (p, b) = r.into_parts();
    (p.status, p.headers, b.collect().await.expect("body").to_bytes())
}

async fn setup() -> (Cache, Arc<Provider>, Arc<origin::Origin>) {
    let (addr, o) = origin::start().await;
    let p = Arc::new(Provider::default());
    let cfg = CacheConfig::new(format!("http://{addr}/").parse().expect("url"));
    (Cache::with_hooks(cfg, Some(p.clone() as Arc<dyn Hooks>)).expect("cache"), p, o)
}

#[tokio::test]
async fn requests_outside_the_declared_prefixes_never_enter_the_module() {
    let (cache, p, _o) = setup().await;
    for _ in 0..3 {
        get(&cache, "/plain").await;
    }
    assert_eq!(p.requests.load(Relaxed), 0);
    // Its answers still pass on-response (the type matches), once: the rest are hits.
    assert_eq!(p.responses.load(Relaxed), 1);
}

#[tokio::test]
async fn redirect_deny_bypass_and_key() {
    let (cache, _p, o) = setup().await;
    let (s, h, _) = get(&cache, "/m/old").await;
    assert_eq!((s, h["location"].to_str().expect("loc")), (StatusCode::FOUND, "/m/new"));
    assert_eq!(get(&cache, "/m/secret").await.0, StatusCode::FORBIDDEN);
    assert_eq!(o.fetches("/m/old") + o.fetches("/m/secret"), 0);
    for _ in 0..2 {
        let (_, h, _) = get(&cache, "/m/live").await;
        assert_eq!(h["x-cache"], "PASS");
    }
    assert_eq!(o.fetches("/m/live"), 2, "bypass: the origin every time");
    get(&cache, "/m/a?utm=1").await;
    let (_, h, _) = get(&cache, "/m/a?utm=2").await;
    assert_eq!(h["x-cache"], "HIT", "the module's key drops the query");
    assert_eq!(o.fetches("/m/a"), 1);
}

#[tokio::test]
async fn transforms_ttl_and_admission() {
    let (cache, _p, o) = setup().await;
    let (_, h, b) = get(&cache, "/m/page?size=100").await;
    assert!(b.starts_with(b"BANNER:"));
    assert_eq!(b.len(), 107);
    assert_eq!(h["content-length"], "107");
    assert_eq!(h["cache-control"], "max-age=300");
    assert_eq!(h["x-provider"], "yes");
    assert!(h["etag"].to_str().expect("etag").starts_with("W/"), "a transformed body's tag is weak");
    let (_, h2, b2) = get(&cache, "/m/page?size=100").await;
    assert_eq!((h2["x-cache"].to_str().expect("x"), b2), ("HIT", b), "the transformed body is what is stored");
    // Too large to transform: the head is still the module's, the body the origin's.
    let (_, h, b) = get(&cache, "/m/big?size=10000").await;
    assert_eq!((b.len(), h["cache-control"].to_str().expect("cc")), (10_000, "max-age=300"));
    for _ in 0..2 {
        assert_eq!(get(&cache, "/m/notstored").await.1["x-cache"], "PASS");
    }
    assert_eq!(o.fetches("/m/notstored"), 2);
}

#[tokio::test]
async fn a_faulting_hook_fails_open() {
    let (cache, _p, _o) = setup().await;
    let (s, h, _) = get(&cache, "/m/trap").await;
    assert_eq!((s, h["x-cache"].to_str().expect("x")), (StatusCode::OK, "MISS"), "cached by its path");
    assert_eq!(cache.stats().hook_faults.load(Relaxed), 1);
}

#[tokio::test]
async fn a_path_never_leaves_the_origin() {
    let (cache, _p, o) = setup().await;
    let (s, _, _) = get(&cache, "//elsewhere.example/x").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(o.fetches("//elsewhere.example/x"), 1, "fetched from the origin, as a path");
}

#[tokio::test]
async fn a_slow_hook_delays_only_the_requests_that_wait_for_it() {
    let (cache, _p, _o) = setup().await;
    get(&cache, "/plain").await;
    // On this test's single async thread: the hit answers while the hook
    // runs (its 400 ms from the start would show in the hit's time).
    let t = std::time::Instant::now();
    let slow = tokio::spawn({
        let c = cache.clone();
        async move { get(&c, "/m/slow").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, h, _) = get(&cache, "/plain").await;
    assert_eq!((status, h["x-cache"].to_str().expect("x")), (StatusCode::OK, "HIT"));
    assert!(t.elapsed() < Duration::from_millis(200), "a hit waited {:?} for another request's hook", t.elapsed());
    assert_eq!(slow.await.expect("task").0, StatusCode::OK);
}

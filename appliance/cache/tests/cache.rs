//! The cache building block against a scriptable origin on loopback: RFC
//! 9111 reuse, coalescing, RFC 5861, ranges, Vary, purge and the budget.

mod origin;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use netserv_cache::{Cache, CacheConfig};
use origin::body_of;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn x_cache(&self) -> &str {
        self.headers.get("x-cache").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn get(cache: &Cache, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = cache.handle(b.body(()).expect("request")).await;
    let (parts, body) = r.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got { status: parts.status, headers: parts.headers, body }
}

async fn setup(tweak: impl FnOnce(&mut CacheConfig)) -> (Cache, std::sync::Arc<origin::Origin>) {
    let (addr, o) = origin::start().await;
    let mut cfg = CacheConfig::new(format!("http://{addr}/").parse().expect("url"));
    tweak(&mut cfg);
    (Cache::new(cfg).expect("cache"), o)
}

#[tokio::test]
async fn a_fresh_object_is_fetched_once_and_then_hit() {
    let (cache, o) = setup(|_| {}).await;
    let first = get(&cache, "/a?size=5000", &[]).await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(first.body, body_of("/a", 0, 5000));
    let again = get(&cache, "/a?size=5000", &[]).await;
    assert_eq!((again.status, again.x_cache()), (StatusCode::OK, "HIT"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["content-length"], "5000");
    assert!(again.headers.contains_key("age"));
    assert_eq!(o.fetches("/a"), 1);
    assert_eq!(cache.stats().hits.load(Relaxed), 1);
}

#[tokio::test]
async fn uncacheable_answers_are_passed_never_stored() {
    let (cache, o) = setup(|_| {}).await;
    for path in ["/private", "/nostore", "/cookie"] {
        for _ in 0..2 {
            let g = get(&cache, path, &[]).await;
            assert_eq!((g.status, g.x_cache()), (StatusCode::OK, "PASS"), "{path}");
            assert!(!g.headers.contains_key("accept-ranges"));
        }
        assert_eq!(o.fetches(path), 2, "{path}");
    }
    // An authorized request's answer is not stored without public / s-maxage (RFC 9111 §3.5).
    get(&cache, "/auth", &[("authorization", "Bearer x")]).await;
    get(&cache, "/auth", &[("authorization", "Bearer x")]).await;
    assert_eq!(o.fetches("/auth"), 2);
}

#[tokio::test]
async fn a_thousand_concurrent_cold_requests_make_one_origin_fetch() {
    let (cache, o) = setup(|_| {}).await;
    o.stall_ms.store(200, Relaxed);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = cache.clone();
            tokio::spawn(async move { get(&c, "/hot?size=2000", &[]).await })
        })
        .collect();
    for t in tasks {
        let g = t.await.expect("task");
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(g.body.len(), 2000);
    }
    assert_eq!(o.fetches("/hot"), 1);
    assert!(cache.stats().coalesced.load(Relaxed) >= 990);
}

#[tokio::test]
async fn coalescing_holds_for_a_body_of_unknown_length_until_it_is_whole() {
    let (cache, o) = setup(|_| {}).await;
    let first = tokio::spawn({
        let c = cache.clone();
        async move { get(&c, "/chunked?size=10000", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = get(&cache, "/chunked?size=10000", &[]).await;
    assert_eq!(second.body, body_of("/chunked", 0, 10000));
    assert_eq!(first.await.expect("task").body, second.body);
    assert_eq!(get(&cache, "/chunked?size=10000", &[]).await.x_cache(), "HIT");
    assert_eq!(o.fetches("/chunked"), 1);
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let (cache, o) = setup(|_| {}).await;
    get(&cache, "/swr", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    o.stall_ms.store(2000, Relaxed);
    o.version.store(1, Relaxed);
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let g = get(&cache, "/swr", &[]).await;
        worst = worst.max(t.elapsed());
        assert_eq!((g.status, g.x_cache()), (StatusCode::OK, "STALE"));
        assert_eq!(g.body, body_of("/swr", 0, 1000));
    }
    assert!(worst < Duration::from_millis(50), "stale answers waited {worst:?} during the origin's stall");
    // The refresh runs as its own task: let it reach the origin.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(o.fetches("/swr"), 2, "one first fetch, one background refresh");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let g = get(&cache, "/swr", &[]).await;
    assert_eq!((g.x_cache(), g.body.as_ref()), ("HIT", body_of("/swr", 1, 1000).as_slice()), "the refresh landed");
}

#[tokio::test]
async fn stale_if_error_serves_when_the_origin_is_down_or_gone() {
    let (cache, o) = setup(|_| {}).await;
    get(&cache, "/sie", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    o.down.store(true, Relaxed);
    for _ in 0..5 {
        let g = get(&cache, "/sie", &[]).await;
        assert_eq!((g.status, g.x_cache()), (StatusCode::OK, "STALE"), "origin answers 503");
        assert_eq!(g.body, body_of("/sie", 0, 1000));
    }
    // must-revalidate forbids it (RFC 9111 §4.2.4), whatever stale-if-error says.
    o.down.store(false, Relaxed);
    get(&cache, "/mustreval", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    o.down.store(true, Relaxed);
    assert_eq!(get(&cache, "/mustreval", &[]).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_unreachable_origin_is_a_502_or_stale() {
    // An origin address nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr");
    drop(dead);
    let cache = Cache::new(CacheConfig::new(format!("http://{addr}/").parse().expect("url"))).expect("cache");
    assert_eq!(get(&cache, "/x", &[]).await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn revalidation_with_a_304_keeps_the_body() {
    let (cache, o) = setup(|_| {}).await;
    let first = get(&cache, "/short", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let g = get(&cache, "/short", &[]).await;
    assert_eq!((g.status, g.x_cache()), (StatusCode::OK, "REVALIDATED"));
    assert_eq!(g.body, first.body);
    assert_eq!(o.conditional.load(Relaxed), 1);
    assert_eq!(get(&cache, "/short", &[]).await.x_cache(), "HIT");
    // A changed object: the origin answers 200, the new body replaces the old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    o.version.store(7, Relaxed);
    let g = get(&cache, "/short", &[]).await;
    assert_eq!((g.x_cache(), g.body.as_ref()), ("MISS", body_of("/short", 7, 1000).as_slice()));
}

#[tokio::test]
async fn client_conditionals_get_304_from_the_cache() {
    let (cache, o) = setup(|_| {}).await;
    let g = get(&cache, "/c", &[]).await;
    let etag = g.headers["etag"].to_str().expect("etag").to_owned();
    let nm = get(&cache, "/c", &[("if-none-match", &etag)]).await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    assert!(nm.body.is_empty());
    assert_eq!(get(&cache, "/c", &[("if-none-match", "\"other\"")]).await.status, StatusCode::OK);
    assert_eq!(o.fetches("/c"), 1);
}

#[tokio::test]
async fn ranges_single_multi_suffix_and_unsatisfiable() {
    let (cache, _o) = setup(|_| {}).await;
    let whole = body_of("/r", 0, 10_000);
    get(&cache, "/r?size=10000", &[]).await;
    let g = get(&cache, "/r?size=10000", &[("range", "bytes=100-199")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(g.headers["content-range"], "bytes 100-199/10000");
    assert_eq!(g.body, whole[100..200]);
    let g = get(&cache, "/r?size=10000", &[("range", "bytes=-10")]).await;
    assert_eq!(g.body, whole[9990..]);
    let g = get(&cache, "/r?size=10000", &[("range", "bytes=20000-")]).await;
    assert_eq!(g.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(g.headers["content-range"], "bytes */10000");
    let g = get(&cache, "/r?size=10000", &[("range", "items=1-2")]).await;
    assert_eq!((g.status, g.body.len()), (StatusCode::OK, 10_000), "a field we cannot read is ignored");
    let g = get(&cache, "/r?size=10000", &[("range", "bytes=0-9,5000-5009,-5")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    let ct = g.headers["content-type"].to_str().expect("ct").to_owned();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").expect("multipart");
    assert_eq!(g.headers["content-length"], g.body.len().to_string());
    let parts = multipart_parts(&g.body, boundary);
    assert_eq!(
        parts,
        vec![
            ("bytes 0-9/10000".to_owned(), whole[0..10].to_vec()),
            ("bytes 5000-5009/10000".to_owned(), whole[5000..5010].to_vec()),
            ("bytes 9995-9999/10000".to_owned(), whole[9995..].to_vec()),
        ]
    );
    // If-Range with another entity-tag: the whole object, not a range.
    let g = get(&cache, "/r?size=10000", &[("range", "bytes=0-9"), ("if-range", "\"stale\"")]).await;
    assert_eq!((g.status, g.body.len()), (StatusCode::OK, 10_000));
}

/// Splits a multipart/byteranges body into (Content-Range, bytes) pairs.
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = find(rest, delim.as_bytes()) {
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").expect("part head");
        let head = std::str::from_utf8(&rest[..head_end]).expect("utf8");
        let cr = head.lines().find_map(|l| l.strip_prefix("Content-Range: ")).expect("content-range").to_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delim}").as_bytes()).expect("next delimiter");
        out.push((cr, rest[..end].to_vec()));
        rest = &rest[end + 2..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn ranges_are_cut_from_an_object_still_filling() {
    let (cache, o) = setup(|_| {}).await;
    let whole = body_of("/drip", 0, 100_000);
    let first = tokio::spawn({
        let c = cache.clone();
        async move { get(&c, "/drip?size=100000", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    let t = Instant::now();
    let g = get(&cache, "/drip?size=100000", &[("range", "bytes=50000-50099")]).await;
    assert_eq!(g.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(g.body, whole[50_000..50_100]);
    assert_eq!(g.x_cache(), "HIT", "served from the filling object");
    let g2 = get(&cache, "/drip?size=100000", &[("range", "bytes=0-9,99990-")]).await;
    assert_eq!(g2.status, StatusCode::PARTIAL_CONTENT);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(first.await.expect("task").body, whole);
    assert_eq!(o.fetches("/drip"), 1);
}

#[tokio::test]
async fn vary_keeps_variants_apart() {
    let (cache, o) = setup(|_| {}).await;
    let en = get(&cache, "/vary", &[("accept-language", "en")]).await;
    let fr = get(&cache, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!((en.body.as_ref(), fr.body.as_ref()), (&b"lang=en"[..], &b"lang=fr"[..]));
    for _ in 0..3 {
        assert_eq!(get(&cache, "/vary", &[("accept-language", "en")]).await.body, "lang=en");
        assert_eq!(get(&cache, "/vary", &[("accept-language", "fr")]).await.body, "lang=fr");
    }
    let none = get(&cache, "/vary", &[]).await;
    assert_eq!(none.body, "lang=none");
    assert_eq!(o.fetches("/vary"), 3, "one fetch per variant");
}

#[tokio::test]
async fn coalesced_clients_of_another_variant_fetch_their_own() {
    let (cache, o) = setup(|_| {}).await;
    o.stall_ms.store(100, Relaxed);
    let en = tokio::spawn({
        let c = cache.clone();
        async move { get(&c, "/vary", &[("accept-language", "en")]).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fr = get(&cache, "/vary", &[("accept-language", "fr")]).await;
    assert_eq!(fr.body, "lang=fr");
    assert_eq!(en.await.expect("task").body, "lang=en");
}

#[tokio::test]
async fn purge_by_key_prefix_and_tag_is_visible_at_once() {
    let (cache, o) = setup(|_| {}).await;
    for p in ["/img/1", "/img/2", "/css/a", "/tagged/x", "/tagged/y"] {
        get(&cache, p, &[]).await;
    }
    let t = Instant::now();
    assert_eq!(cache.purge_key("/css/a"), 1);
    assert!(t.elapsed() < Duration::from_millis(10), "purge took {:?}", t.elapsed());
    assert_eq!(get(&cache, "/css/a", &[]).await.x_cache(), "MISS");
    assert_eq!(cache.purge_prefix("/img/"), 2);
    assert_eq!(get(&cache, "/img/1", &[]).await.x_cache(), "MISS");
    assert_eq!(get(&cache, "/tagged/x", &[]).await.x_cache(), "HIT");
    assert_eq!(cache.purge_tag("front"), 2);
    assert_eq!(cache.purge_tag("all"), 0, "already gone");
    assert_eq!(get(&cache, "/tagged/y", &[]).await.x_cache(), "MISS");
    assert_eq!(o.fetches("/img/1"), 2);
}

#[tokio::test]
async fn the_store_stays_within_its_byte_budget() {
    let budget = 2 << 20;
    let (cache, _o) = setup(|c| c.budget_bytes = budget).await;
    for i in 0..400 {
        get(&cache, &format!("/fill/{i}?size=16000"), &[]).await;
    }
    let (bytes, objects) = cache.usage();
    assert!(bytes <= budget, "{bytes} > {budget}");
    assert!(bytes >= budget * 9 / 10, "{bytes}: the budget is used");
    assert!(objects < 400 && objects > 50, "{objects}");
    assert!(cache.stats().evictions.load(Relaxed) > 0);
}

#[tokio::test]
async fn oversize_bodies_are_passed_not_stored() {
    let (cache, o) = setup(|c| c.max_object_bytes = 4096).await;
    for _ in 0..2 {
        let g = get(&cache, "/big?size=10000", &[]).await;
        assert_eq!((g.x_cache(), g.body.len()), ("PASS", 10_000));
    }
    assert_eq!(o.fetches("/big"), 2);
}

#[tokio::test]
async fn head_and_unsafe_methods() {
    let (cache, o) = setup(|_| {}).await;
    let r = cache.handle(Request::head("/h?size=300").body(()).expect("req")).await;
    assert_eq!(r.headers()["content-length"], "300");
    assert!(r.into_body().collect().await.expect("body").to_bytes().is_empty());
    assert_eq!(get(&cache, "/h?size=300", &[]).await.x_cache(), "HIT");
    let r = cache.handle(Request::post("/h?size=300").body(()).expect("req")).await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(&cache, "/h?size=300", &[]).await.x_cache(), "MISS", "a POST invalidates its target");
    assert_eq!(o.fetches("/h"), 2);
}

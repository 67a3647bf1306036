//! ActiveCDN end to end: the provider's director and origin in `core`, the
//! appliance in `edge`, clients in `ua` that the test's GeoIP database
//! places in New York, Boston and Tokyo. The first client is served by the
//! origin and the director deploys the cache on the edge (SETUP, PROBE);
//! the next client of the region is redirected there. curl checks fields
//! and bodies, headless Chromium sees the banner, and purge, Vary, ranges
//! and stale-if-error with the origin down are each checked at the edge.
//! Needs root, python3, curl and chromium.

use netserv_tests::appliance::TempDir;
use netserv_tests::cdn::{self, BANNER, CACHE_PORT, CDN_TOKEN, DIRECTOR, FAR, NEAR_1, NEAR_2, NODE, ORIGIN, curl};
use netserv_tests::{Appliance, Testbed, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn the_director_deploys_the_cache_at_the_edge_and_sends_clients_there() {
    if !netserv_tests::e2e_ready("the_director_deploys_the_cache_at_the_edge_and_sends_clients_there") {
        return;
    }
    let tb = Testbed::new("cdn").expect("testbed (run as root)");
    tb.add_ua_address(NEAR_2).expect("address");
    tb.add_ua_address(FAR).expect("address");
    let dir = TempDir::new("cdn").expect("tmp");
    let app = Appliance::start(&tb, &cdn::appliance_config()).expect("appliance starts");
    let mut origin = cdn::start_origin(&tb, &dir.0).expect("origin");
    let _director = cdn::start_director(&tb, &dir.0).expect("director");
    let logs = || {
        format!(
            "--- appliance\n{}\n--- director\n{}",
            app.log(),
            std::fs::read_to_string(dir.0.join("director.log")).unwrap_or_default()
        )
    };
    let front = format!("http://{DIRECTOR}/page.html");
    let edge = |path: &str| format!("http://{NODE}:{CACHE_PORT}{path}");

    // 1. The first client: no node near, the origin answers; the director deploys.
    let g = curl(&tb, NEAR_1, &front, &[]).expect("first client");
    assert_eq!(g.status, 200, "{}", logs());
    assert!(g.text().contains("the provider's page") && !g.text().contains(BANNER));
    let m =
        wait_for("the cache deployed on the edge", Duration::from_secs(30), || app.module("cdn-a", "active-cdn").ok());
    assert_eq!(m["kind"], "cache", "{m}");
    let status = wait_for("the director learned the node", Duration::from_secs(30), || {
        let s = tb.output(&tb.core, "curl", &["-s", &format!("http://{DIRECTOR}/netserv/status")]).ok()?;
        let v: Value = serde_json::from_str(&s).ok()?;
        (v["nodes"].as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(status["nodes"][0]["address"], NODE, "{status}");

    // 2. The next client of the region is redirected to the edge, and served there.
    let g = curl(&tb, NEAR_2, &front, &[]).expect("redirect");
    assert_eq!((g.status, g.header("location")), (302, Some(edge("/page.html").as_str())), "{}", logs());
    let g = curl(&tb, NEAR_2, &front, &["-L"]).expect("through the edge");
    assert_eq!((g.status, g.header("x-cache")), (200, Some("MISS")), "{}", logs());
    assert!(g.text().contains(&format!("<body>{BANNER}<p id=content>")), "the banner: {}", g.text());
    assert_eq!(g.header("cache-control"), Some("max-age=300"), "the module's TTL");
    let again = curl(&tb, NEAR_1, &front, &["-L"]).expect("again");
    assert_eq!((again.header("x-cache"), again.body.as_slice()), (Some("HIT"), g.body.as_slice()));

    // 3. Far away (Tokyo): the origin, not the edge.
    let g = curl(&tb, FAR, &front, &[]).expect("far client");
    assert_eq!((g.status, g.header("x-cache")), (200, None));

    // 4. A browser: headless Chromium follows the redirect and sees the banner.
    let profile = format!("--user-data-dir={}", dir.0.join("chromium").display());
    let dom = tb
        .output(&tb.ua, "chromium", &["--headless", "--no-sandbox", "--disable-gpu", &profile, "--dump-dom", &front])
        .expect("chromium");
    assert!(dom.contains("id=\"edge-banner\"") && dom.contains("the provider's page"), "{dom}");

    // 5. Ranges: single and multi, byte-identical to the origin's object.
    let whole = curl(&tb, NEAR_1, &format!("http://{ORIGIN}/blob.bin"), &[]).expect("origin blob").body;
    assert_eq!(whole.len(), 100_000);
    let g = curl(&tb, NEAR_1, &edge("/blob.bin"), &["-r", "1000-1999"]).expect("range");
    assert_eq!((g.status, g.header("content-range")), (206, Some("bytes 1000-1999/100000")));
    assert_eq!(g.body, whole[1000..2000]);
    let g = curl(&tb, NEAR_1, &edge("/blob.bin"), &["-r", "0-9,50000-50009,-5"]).expect("multi-range");
    assert_eq!(g.status, 206);
    let boundary = g.header("content-type").and_then(|t| t.split("boundary=").nth(1)).expect("multipart").to_owned();
    let parts = multipart(&g.body, &boundary);
    assert_eq!(parts, vec![whole[0..10].to_vec(), whole[50_000..50_010].to_vec(), whole[99_995..].to_vec()]);

    // 6. Vary: variants never mixed.
    for _ in 0..2 {
        for lang in ["en", "fr"] {
            let g = curl(&tb, NEAR_1, &edge("/lang"), &["-H", &format!("Accept-Language: {lang}")]).expect("vary");
            assert_eq!(g.text(), format!("lang={lang}"));
        }
    }

    // 7. Purge by the tenant: gone from the edge at once.
    let (code, v) = app
        .api("POST", "/api/v1/modules/cdn-a/active-cdn/purge", Some(&json!({"key": "/page.html"})), CDN_TOKEN)
        .expect("purge");
    assert_eq!((code, v["purged"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(curl(&tb, NEAR_1, &edge("/page.html"), &[]).expect("after purge").header("x-cache"), Some("MISS"));

    // 8. The origin goes down: inside stale-if-error the edge still answers.
    // (Not HTML: the module's TTL for pages would keep this one fresh.)
    let fresh = curl(&tb, NEAR_1, &edge("/short.txt"), &[]).expect("short");
    assert_eq!(fresh.status, 200);
    std::thread::sleep(Duration::from_millis(1200));
    origin.signal_and_wait("KILL", Duration::from_secs(5)).expect("origin stops");
    for _ in 0..3 {
        let g = curl(&tb, NEAR_1, &edge("/short.txt"), &[]).expect("stale");
        assert_eq!((g.status, g.header("x-cache")), (200, Some("STALE")), "{}", logs());
        assert_eq!(g.body, fresh.body);
    }

    let metrics = app.metrics().expect("metrics");
    assert!(metrics.contains(r#"netserv_cache_requests_total{tenant="cdn-a",module="active-cdn",outcome="hit"}"#));
}

/// The parts' bodies of a multipart/byteranges body.
fn multipart(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    let delim = format!("\r\n--{boundary}");
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let find = |hay: &[u8], n: &[u8]| hay.windows(n.len()).position(|w| w == n);
    let mut out = Vec::new();
    let mut rest = text.as_slice();
    while let Some(at) = find(rest, delim.as_bytes()) {
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else { break };
        rest = &rest[head_end + 4..];
        let end = find(rest, delim.as_bytes()).unwrap_or(rest.len());
        out.push(rest[..end].to_vec());
    }
    out
}

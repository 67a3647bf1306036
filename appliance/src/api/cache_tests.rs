//! An edge cache module end to end on loopback, through the admin API: the
//! real controller, runtime and `active-cdn` module, a real origin, clients
//! over TCP. A tenant purges, sees and removes only its own cache.

use super::*;
use crate::config::Config;
use crate::dataplane::Table;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use tower::ServiceExt as _;

const ADMIN: &str = "admin-token-0123456789";
const CDN_A: &str = "cdn-a-token-0123456789ab";
const CDN_B: &str = "cdn-b-token-0123456789ab";
const BANNER: &str = "<div id=\"edge-banner\">served at the edge</div>";

fn active_cdn_wasm() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/netserv_active_cdn.wasm");
    assert!(p.exists(), "build the module first: cargo build --release --target wasm32-wasip2 -p netserv-active-cdn");
    p
}

/// An origin: an HTML page, an image, and an API that counts its calls.
async fn origin() -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let api_calls = Arc::new(AtomicU32::new(0));
    let calls = api_calls.clone();
    let app = Router::new()
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "max-age=60")],
                    "<html><head><title>t</title></head><body><p>origin page</p></body></html>",
                )
            }),
        )
        .route(
            "/img/a.bin",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, "max-age=60")],
                    vec![7u8; 5000],
                )
            }),
        )
        .route(
            "/api/now",
            get(move || {
                let n = calls.fetch_add(1, Relaxed);
                async move { ([(header::CACHE_CONTROL, "max-age=60")], format!("call {n}")) }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, api_calls)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn state(origin: std::net::SocketAddr, port_a: u16, port_b: u16) -> AppState {
    let cfg = Config::parse(&format!(
        r#"node_id = "edge-cache-test"
[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"
[dataplane]
enabled = false
[servers]
address = "127.0.0.1"
[[tenants]]
name = "cdn-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "{CDN_A}"
listen_ports = [{port_a}]
[tenants.limits]
cache_bytes = 4194304
[tenants.cache]
origin = "http://{origin}/"
[[tenants]]
name = "cdn-b"
public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
api_token = "{CDN_B}"
listen_ports = [{port_b}]
"#
    ))
    .expect("config");
    let runtime = Runtime::new().expect("runtime");
    let table = Arc::new(ArcSwap::from_pointee(Table::default()));
    AppState {
        controller: Controller::new(cfg, runtime, table, None, None, 2).expect("controller"),
        queues: Arc::new(Vec::new()),
        signaling: Default::default(),
    }
}

async fn call(s: &AppState, method: &str, uri: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(body.map_or_else(Body::empty, |v| Body::from(v.to_string())))
        .expect("request");
    let resp = app(s.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn install(tenant: &str, port: u16) -> Value {
    json!({
        "tenant": tenant, "name": "active-cdn",
        "source": { "path": active_cdn_wasm() },
        "listen": [{ "transport": "tcp", "port": port }],
        "properties": { "banner": BANNER, "bypass": "/api/", "html_ttl_secs": "300" },
        "ttl_secs": 600,
    })
}

async fn fetch(port: u16, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}")).send().await.expect("cache answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cache_module_serves_purges_and_stays_its_tenants() {
    let (origin, api_calls) = origin().await;
    let (port_a, port_b) = (free_port(), free_port());
    let s = state(origin, port_a, port_b);

    // A tenant with no origin configured may not run a cache.
    let (code, m) = call(&s, "POST", "/api/v1/modules", ADMIN, Some(install("cdn-b", port_b))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{m}");
    let (code, m) = call(&s, "POST", "/api/v1/modules", CDN_A, Some(install("cdn-a", port_a))).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "a tenant installs no module from a path on the node: {m}");
    let (code, m) = call(&s, "POST", "/api/v1/modules", ADMIN, Some(install("cdn-a", port_a))).await;
    assert_eq!(code, StatusCode::CREATED, "{m}");
    assert_eq!((m["kind"].as_str(), m["state"].as_str()), (Some("cache"), Some("active")));

    // The provider's processing: its banner in the page, stored once, served natively after.
    let first = fetch(port_a, "/page.html").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(first.headers()["cache-control"], "max-age=300", "the module's TTL");
    let body = first.text().await.expect("body");
    assert!(body.contains(&format!("<body>{BANNER}<p>origin page")), "{body}");
    let again = fetch(port_a, "/page.html").await;
    assert_eq!(again.headers()["x-cache"], "HIT");
    assert_eq!(again.text().await.expect("body"), body);
    // Not HTML: not the module's, cached as the origin said.
    let img = fetch(port_a, "/img/a.bin").await;
    assert_eq!(img.bytes().await.expect("body").len(), 5000);
    assert_eq!(fetch(port_a, "/img/a.bin").await.headers()["x-cache"], "HIT");
    // Bypass: the origin every time.
    fetch(port_a, "/api/now").await;
    assert_eq!(fetch(port_a, "/api/now").await.headers()["x-cache"], "PASS");
    assert_eq!(api_calls.load(Relaxed), 2);

    // Purge: the owner only; another tenant is told there is no such module.
    let (code, _) =
        call(&s, "POST", "/api/v1/modules/cdn-a/active-cdn/purge", CDN_B, Some(json!({"prefix": "/img/"}))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, v) =
        call(&s, "POST", "/api/v1/modules/cdn-a/active-cdn/purge", CDN_A, Some(json!({"prefix": "/img/"}))).await;
    assert_eq!((code, v["purged"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(fetch(port_a, "/img/a.bin").await.headers()["x-cache"], "MISS");
    let (code, v) = call(&s, "POST", "/api/v1/modules/cdn-a/active-cdn/purge", CDN_A, Some(json!({"url": "/"}))).await;
    assert_eq!(
        (code, v["error"].as_str().is_some_and(|m| m.contains("`url`"))),
        (StatusCode::BAD_REQUEST, true),
        "{v}"
    );

    // What it shows: its cache in the API and /metrics, to it and the admin only.
    let (_, m) = call(&s, "GET", "/api/v1/modules/cdn-a/active-cdn", CDN_A, None).await;
    assert!(m["cache"]["hits"].as_u64().is_some_and(|h| h >= 2), "{m}");
    assert_eq!(m["module_counters"]["banners_inserted"], 1);
    assert!(m["cache"]["stored_bytes"].as_u64().is_some_and(|b| b > 0 && b <= 4 << 20));
    let (_, text) = call(&s, "GET", "/metrics", CDN_A, None).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains(r#"netserv_cache_requests_total{tenant="cdn-a",module="active-cdn",outcome="hit"}"#),
        "{text}"
    );
    let (_, other) = call(&s, "GET", "/metrics", CDN_B, None).await;
    assert!(!other.as_str().unwrap_or_default().contains("cdn-a"));

    // Removed: its port closes.
    assert_eq!(call(&s, "DELETE", "/api/v1/modules/cdn-a/active-cdn", CDN_B, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&s, "DELETE", "/api/v1/modules/cdn-a/active-cdn", CDN_A, None).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let gone = reqwest::Client::new().get(format!("http://127.0.0.1:{port_a}/page.html")).send().await;
    assert!(gone.is_err(), "the listener is closed");
}

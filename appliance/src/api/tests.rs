//! The admin API driven with `oneshot`, no sockets, no dataplane: the real
//! controller, runtime and keepalive module.

use super::*;
use crate::config::Config;
use crate::dataplane::Table;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ADMIN: &str = "admin-token-0123456789";
const TENANT_A: &str = "tenant-a-token-0123456789";
const TENANT_B: &str = "tenant-b-token-0123456789";

fn keepalive_wasm() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/netserv_keepalive.wasm");
    assert!(p.exists(), "build the module first: cargo build --release --target wasm32-wasip2 -p netserv-keepalive");
    p
}

fn state() -> AppState {
    state_with("")
}

/// [`state`] with `a_extra` in tenant A's table (e.g. its limits).
fn state_with(a_extra: &str) -> AppState {
    let cfg = Config::parse(&format!(
        r#"node_id = "edge-api-test"
[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"
[dataplane]
enabled = false
[[tenants]]
name = "itsp-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "{TENANT_A}"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5060]
{a_extra}
[[tenants]]
name = "itsp-b"
public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
api_token = "{TENANT_B}"
filter_prefixes = ["198.19.0.0/16"]
listen_ports = [5070]
"#
    ))
    .expect("config");
    let runtime = Runtime::new().expect("runtime");
    let table = std::sync::Arc::new(ArcSwap::from_pointee(Table::default()));
    AppState {
        controller: Controller::new(cfg, runtime, table, None, None, 2).expect("controller"),
        queues: std::sync::Arc::new(Vec::new()),
        signaling: Default::default(),
    }
}

async fn call(s: &AppState, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = b.body(body.map_or_else(Body::empty, |v| Body::from(v.to_string()))).expect("request");
    let resp = app(s.clone()).oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn install_body(tenant: &str, destination: &str, port: u16) -> Value {
    json!({
        "tenant": tenant, "name": "keepalive",
        "source": { "path": keepalive_wasm() },
        "filter": { "transport": "udp", "destination": destination, "ports": [port] },
        "properties": { "server": "test" },
        "ttl_secs": 60,
    })
}

#[tokio::test]
async fn health_needs_no_token_but_the_api_does() {
    let s = state();
    assert_eq!(call(&s, "GET", "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(call(&s, "GET", "/api/v1/modules", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&s, "GET", "/api/v1/modules", Some("wrong-token-0123456789"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(&s, "GET", "/api/v1/tenants", Some(TENANT_A), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(call(&s, "GET", "/api/v1/tenants", Some(ADMIN), None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn tenants_see_and_manage_only_their_own_modules() {
    let s = state();
    let (code, m) =
        call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(install_body("itsp-a", "198.18.2.20/32", 5060))).await;
    assert_eq!(code, StatusCode::CREATED, "{m}");
    assert_eq!(m["state"], "active");
    assert!(m["ttl_remaining_secs"].as_u64().is_some_and(|t| t <= 60));

    let (_, a) = call(&s, "GET", "/api/v1/modules", Some(TENANT_A), None).await;
    assert_eq!(a.as_array().map(Vec::len), Some(1));
    let (_, b) = call(&s, "GET", "/api/v1/modules", Some(TENANT_B), None).await;
    assert_eq!(b.as_array().map(Vec::len), Some(0));
    assert_eq!(
        call(&s, "GET", "/api/v1/modules/itsp-a/keepalive", Some(TENANT_B), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&s, "DELETE", "/api/v1/modules/itsp-a/keepalive", Some(TENANT_B), None).await.0,
        StatusCode::NOT_FOUND
    );

    // Metrics: as the rest of the API, only with a token; the admin sees the
    // node, a tenant its own modules only.
    let (code, _) = call(&s, "GET", "/metrics", None, None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, text) = call(&s, "GET", "/metrics", Some(ADMIN), None).await;
    assert_eq!(code, StatusCode::OK);
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("netserv_modules_installed{node=\"edge-api-test\"} 1"), "{text}");
    assert!(text.contains("tenant=\"itsp-a\""), "{text}");
    assert!(text.contains("netserv_queue_") || text.contains("netserv_signaling_requests"), "{text}");
    let (code, own) = call(&s, "GET", "/metrics", Some(TENANT_B), None).await;
    assert_eq!(code, StatusCode::OK);
    let own = own.as_str().unwrap_or_default().to_owned();
    assert!(own.contains("netserv_modules_installed{node=\"edge-api-test\"} 0"), "{own}");
    assert!(!own.contains("itsp-a"), "tenant B sees nothing of tenant A: {own}");
    assert!(!own.contains("netserv_signaling_") && !own.contains("netserv_queue_"), "no node-wide counters: {own}");

    // Usage: one instance per worker (two here), seen by the admin for
    // every tenant and by a tenant for itself only.
    let (code, all) = call(&s, "GET", "/api/v1/usage", Some(ADMIN), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(all[0]["tenant"], "itsp-a");
    assert_eq!(all[0]["modules"], 1);
    assert!(all[0]["memory_bytes"].as_u64().is_some_and(|b| b > 0), "{all}");
    let (_, own) = call(&s, "GET", "/api/v1/usage", Some(TENANT_B), None).await;
    assert_eq!(own.as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own[0]["tenant"], "itsp-b");
    let (_, m) = call(&s, "GET", "/api/v1/modules/itsp-a/keepalive", Some(TENANT_A), None).await;
    assert_eq!(m["counters"]["memory_bytes"], all[0]["memory_bytes"], "{m}");

    assert_eq!(call(&s, "DELETE", "/api/v1/modules/itsp-a/keepalive", Some(TENANT_A), None).await.0, StatusCode::OK);
    assert_eq!(call(&s, "GET", "/api/v1/modules/itsp-a/keepalive", Some(ADMIN), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn refusals_name_their_reason_and_install_nothing() {
    let s = state();
    // Another tenant's prefix.
    let (code, e) =
        call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(install_body("itsp-b", "198.18.2.20/32", 5070))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(e["error"].as_str().unwrap_or_default().contains("outside the prefixes"), "{e}");
    // A port the tenant does not own.
    let (code, e) =
        call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(install_body("itsp-a", "198.18.2.20/32", 5070))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(e["error"].as_str().unwrap_or_default().contains("port 5070"), "{e}");
    // A tenant installing for another, and from a local path.
    assert_eq!(
        call(&s, "POST", "/api/v1/modules", Some(TENANT_B), Some(install_body("itsp-a", "198.18.2.20/32", 5060)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (code, e) =
        call(&s, "POST", "/api/v1/modules", Some(TENANT_A), Some(install_body("itsp-a", "198.18.2.20/32", 5060))).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(e["error"].as_str().unwrap_or_default().contains("local path"), "{e}");
    // Wrong sha256.
    let mut body = install_body("itsp-a", "198.18.2.20/32", 5060);
    body["sha256"] = "00".repeat(32).into();
    let (code, e) = call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(body)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["kind"], "sha256_mismatch");
    // Properties the module refuses.
    let mut body = install_body("itsp-a", "198.18.2.20/32", 5060);
    body["properties"] = json!({ "colour": "red" });
    let (code, e) = call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(body)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e["error"].as_str().unwrap_or_default().contains("colour"), "{e}");
    // A malformed body names the field.
    let (code, e) = call(
        &s,
        "POST",
        "/api/v1/modules",
        Some(ADMIN),
        Some(json!({ "tenant": "itsp-a", "name": "x", "filter": {} })),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap_or_default().contains("source")
            || e["error"].as_str().unwrap_or_default().contains("transport"),
        "{e}"
    );
    // Nothing was installed by any of these.
    let (_, all) = call(&s, "GET", "/api/v1/modules", Some(ADMIN), None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(0), "{all}");
}

#[tokio::test]
async fn installing_again_refreshes_and_ttl_expiry_removes() {
    let s = state();
    let mut body = install_body("itsp-a", "198.18.2.20/32", 5060);
    let bytes = std::fs::read(keepalive_wasm()).expect("wasm");
    body["sha256"] = crate::runtime::ModuleHash::of(&bytes).to_hex().into();
    assert_eq!(call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(body.clone())).await.0, StatusCode::CREATED);
    body["ttl_secs"] = 1.into();
    let (code, m) = call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(body)).await;
    assert_eq!(code, StatusCode::CREATED);
    assert!(m["ttl_remaining_secs"].as_u64().is_some_and(|t| t <= 1), "refresh must take the new TTL: {m}");
    assert_eq!(s.controller.expire(std::time::Instant::now() + std::time::Duration::from_secs(2)).await, 1);
    let (_, all) = call(&s, "GET", "/api/v1/modules", Some(ADMIN), None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn load_reports_reach_only_the_tenants_own_module_and_bad_ones_name_the_field() {
    let s = state();
    let (code, v) =
        call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(install_body("itsp-a", "198.18.2.20/32", 5060))).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let uri = "/api/v1/modules/itsp-a/keepalive/feedback";
    let report = json!({ "server": "198.18.2.20:5060", "algorithm": "loss", "oc": 30, "seq": 1 });
    let (code, v) = call(&s, "POST", uri, Some(TENANT_A), Some(report.clone())).await;
    assert_eq!((code, &v["workers"]), (StatusCode::ACCEPTED, &json!(2)), "{v}");
    let (code, _) = call(&s, "POST", uri, None, Some(report.clone())).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, v) = call(&s, "POST", uri, Some(TENANT_B), Some(report.clone())).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "another tenant's module does not exist for it: {v}");
    let (code, _) = call(&s, "POST", "/api/v1/modules/itsp-a/nothing/feedback", Some(TENANT_A), Some(report)).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let bad = json!({ "server": "198.18.2.20:5060", "algorithm": "loss", "oc": 300, "seq": 2 });
    let (code, v) = call(&s, "POST", uri, Some(TENANT_A), Some(bad)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("`oc`")), "{v}");
}

/// Installs racing past the limit check (each downloads and compiles before
/// it commits) still leave the tenant at its limit: the count is taken again
/// under the commit. Before it was, all six landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_installs_cannot_overshoot_the_tenants_module_limit() {
    let s = state_with("[tenants.limits]\nmax_modules = 2");
    let installs: Vec<_> = (0..6)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut body = install_body("itsp-a", "198.18.2.20/32", 5060);
                body["name"] = format!("keepalive-{i}").into();
                call(&s, "POST", "/api/v1/modules", Some(ADMIN), Some(body)).await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for i in installs {
        let (code, body) = i.await.expect("install task");
        assert!(code == StatusCode::CREATED || code == StatusCode::TOO_MANY_REQUESTS, "{code} {body}");
        codes.push(code);
    }
    assert_eq!(codes.iter().filter(|c| **c == StatusCode::CREATED).count(), 2, "{codes:?}");
    let (_, a) = call(&s, "GET", "/api/v1/modules", Some(TENANT_A), None).await;
    assert_eq!(a.as_array().map(Vec::len), Some(2), "{a}");
}

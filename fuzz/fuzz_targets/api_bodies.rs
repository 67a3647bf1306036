//! The admin and feedback API as a client reaches it: the axum router with
//! its extractors and the controller behind it, fed arbitrary bodies on the
//! routes that take one — an install as a tenant and as the admin, a load
//! report, a relay secret. The first byte picks the route. Nothing panics,
//! and a body is never the server's fault: no answer is a 500.
#![no_main]

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use netserv_appliance::api::{AppState, app};
use netserv_appliance::config::Config;
use netserv_appliance::controller::Controller;
use netserv_appliance::dataplane::Table;
use netserv_appliance::runtime::Runtime;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;

const ADMIN: &str = "admin-token-0123456789";
const TENANT: &str = "tenant-a-token-0123456789";

struct Fixture {
    rt: tokio::runtime::Runtime,
    state: AppState,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        let cfg = Config::parse(&format!(
            r#"node_id = "edge-fuzz"
[api]
listen = "127.0.0.1:0"
admin_token = "{ADMIN}"
[dataplane]
enabled = false
[[tenants]]
name = "itsp-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "{TENANT}"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5060]
"#
        ))
        .expect("config");
        let state = rt.block_on(async {
            let runtime = Runtime::new().expect("runtime");
            let table = Arc::new(ArcSwap::from_pointee(Table::default()));
            AppState {
                controller: Controller::new(cfg, runtime, table, None, None, 1).expect("controller"),
                queues: Arc::new(Vec::new()),
                signaling: Default::default(),
            }
        });
        Fixture { rt, state }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    let (method, uri, token) = match route % 4 {
        0 => ("POST", "/api/v1/modules", TENANT),
        1 => ("POST", "/api/v1/modules", ADMIN),
        2 => ("POST", "/api/v1/modules/itsp-a/overload/feedback", TENANT),
        _ => ("PUT", "/api/v1/tenants/itsp-a/secrets/turn-secret", TENANT),
    };
    let f = fixture();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let status = f.rt.block_on(async { app(f.state.clone()).oneshot(req).await.expect("infallible").status() });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri} with {:?}", String::from_utf8_lossy(body));
});

//! The director's front door on loopback: a client far from every node is
//! served from the origin (and a deployment is signaled towards it); once a
//! node near it runs the cache, it is redirected there.

use netserv_cdn_director::config::Config;
use netserv_cdn_director::daemon::{Director, app};
use netserv_cdn_director::geo::Location;
use netserv_cdn_director::placement::Landed;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const NYC: Location = Location { latitude: 40.7128, longitude: -74.006 };

async fn serve(router: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, router.into_make_service_with_connect_info::<SocketAddr>()).await });
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_first_then_the_nearest_node() {
    let dir = std::env::temp_dir().join(format!("netserv-director-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("key"), "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").expect("key");
    std::fs::write(dir.join("m.wasm"), b"\0asm-module-bytes").expect("module");
    std::fs::write(
        dir.join("geo.mmdb"),
        netserv_cdn_director::geo::write_test_db(&[("127.0.0.0/8", NYC)]).expect("written"),
    )
    .expect("mmdb");
    let origin = serve(axum::Router::new().route("/hello", axum::routing::get(|| async { "from origin" }))).await;
    let cfg = Config::parse(&format!(
        r#"tenant = "cdn-a"
key_file = "{d}/key"
listen = "127.0.0.1:0"
origin = "http://{origin}/"
geoip = "{d}/geo.mmdb"
[module]
file = "{d}/m.wasm"
advertise = "127.0.0.1:9"
port = 8080
[signaling]
query_attempts = 1
timeout_ms = 1000
trusted_isp_keys = ["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"]
"#,
        d = dir.display()
    ))
    .expect("config");
    let d = Director::new(&cfg).expect("director");
    let front = serve(app(d.clone())).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let r = http.get(format!("http://{front}/hello")).send().await.expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "from origin");
    assert_eq!(d.stats.from_origin.load(Relaxed), 1);
    // A deployment was signaled towards the client; no appliance is on loopback's path.
    for _ in 0..50 {
        if d.stats.deploys.load(Relaxed) == 1 && d.stats.deploys_landed.load(Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(d.stats.deploys.load(Relaxed), 1);

    // A node near the client runs the cache now: the client goes there.
    d.placement.lock().landed(
        0,
        "127.0.0.1".parse().expect("ip"),
        vec![Landed { address: "127.0.0.2".parse().expect("ip"), node_id: "edge-1".into(), location: Some(NYC) }],
    );
    let r = http.get(format!("http://{front}/hello?x=1")).send().await.expect("answer");
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "http://127.0.0.2:8080/hello?x=1");
    assert_eq!(r.headers()["cache-control"], "no-store");

    let status = http.get(format!("http://{front}/netserv/status")).send().await.expect("status");
    let status: serde_json::Value = serde_json::from_slice(&status.bytes().await.expect("body")).expect("json");
    assert_eq!(status["nodes"][0]["node_id"], "edge-1");
    assert_eq!(status["redirects"], 1);
    let metrics = http.get(format!("http://{front}/netserv/metrics")).send().await.expect("m").text().await.expect("t");
    assert!(metrics.contains(r#"netserv_director_requests_total{to="edge"} 1"#), "{metrics}");
    let module = http.get(format!("http://{front}/netserv/modules/active-cdn.wasm")).send().await.expect("module");
    assert_eq!(module.bytes().await.expect("bytes").as_ref(), b"\0asm-module-bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

//! ActiveCDN in the testbed: the provider's origin and director in `core`
//! (198.18.2.20: origin on 8081, director on 80), the appliance in `edge`
//! serving tenant `cdn-a`'s cache on 198.18.1.1:8080 once the director
//! deployed it, and clients in `ua` that the test's GeoIP database places
//! in cities.

use crate::appliance::node_config;
use crate::netns::{Proc, Testbed};
use crate::path::SEED_A;
use crate::paths;
use netserv_cdn_director::geo::{Location, write_test_db};
use std::path::Path;
use std::time::Duration;

pub const ORIGIN: &str = "198.18.2.20:8081";
pub const DIRECTOR: &str = "198.18.2.20:80";
pub const CACHE_PORT: u16 = 8080;
pub const CDN_TOKEN: &str = "cdn-a-token-0123456789ab";
pub const BANNER: &str = "<div id=\"edge-banner\">served at the edge</div>";

/// Clients and the node, by city: two clients near New York's node, one in Tokyo.
pub const NEAR_1: &str = "198.18.1.10";
pub const NEAR_2: &str = "198.18.1.11";
pub const FAR: &str = "198.18.1.12";
pub const NODE: &str = "198.18.1.1";
const NYC: Location = Location { latitude: 40.7128, longitude: -74.006 };
const BOSTON: Location = Location { latitude: 42.3601, longitude: -71.0589 };
const TOKYO: Location = Location { latitude: 35.6762, longitude: 139.6503 };

/// Tenant `cdn-a` (the director's key) with the cache port and the origin,
/// as a `[[tenants]]` block to append to an appliance's config.
pub fn tenant_block() -> String {
    format!(
        r#"
[[tenants]]
name = "cdn-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "{CDN_TOKEN}"
listen_ports = [{CACHE_PORT}]
[tenants.limits]
cache_bytes = 16777216
[tenants.cache]
origin = "http://{ORIGIN}/"
origin_timeout_ms = 2000
"#
    )
}

/// The appliance: server modules on the edge's ua-side address, and [`tenant_block`].
pub fn appliance_config() -> String {
    let base = node_config("queues = 1", &tenant_block());
    format!("{base}\n[servers]\naddress = \"{NODE}\"\n")
}

pub fn director_config(dir: &Path) -> String {
    format!(
        r#"tenant = "cdn-a"
key_file = {key:?}
listen = "{DIRECTOR}"
origin = "http://{ORIGIN}/"
geoip = {geo:?}

[module]
file = {module:?}
advertise = "{DIRECTOR}"
port = {CACHE_PORT}
properties = {{ banner = '{BANNER}', bypass = "/count", html_ttl_secs = "300" }}

[placement]
max_km = 500.0
ttl_secs = 60
refresh_before_secs = 20
retry_secs = 2

[signaling]
query_attempts = 2
timeout_ms = 8000
trusted_isp_keys = ["{isp}"]
"#,
        key = dir.join("cdn-a.key"),
        geo = dir.join("testbed.mmdb"),
        module = paths::module("netserv_active_cdn"),
        isp = crate::identity::isp_public_key(),
    )
}

/// The origin (python3), in core.
pub fn start_origin(tb: &Testbed, dir: &Path) -> anyhow::Result<Proc> {
    let script = paths::fixture("cdn/origin.py");
    let script = script.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let (ip, port) = ORIGIN.split_once(':').ok_or_else(|| anyhow::anyhow!("origin address"))?;
    let p = tb.spawn(&tb.core, "python3", &[script, ip, port], Some(&dir.join("origin.log")))?;
    wait_http(tb, &tb.core, &format!("http://{ORIGIN}/count"))?;
    Ok(p)
}

/// The director, in core: its key, GeoIP database and config written to `dir`.
pub fn start_director(tb: &Testbed, dir: &Path) -> anyhow::Result<Proc> {
    std::fs::write(dir.join("cdn-a.key"), SEED_A)?;
    let places = [
        (format!("{NODE}/32"), NYC),
        (format!("{NEAR_1}/32"), NYC),
        (format!("{NEAR_2}/32"), BOSTON),
        (format!("{FAR}/32"), TOKYO),
    ];
    let places: Vec<(&str, Location)> = places.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    std::fs::write(dir.join("testbed.mmdb"), write_test_db(&places)?)?;
    let cfg = dir.join("director.toml");
    std::fs::write(&cfg, director_config(dir))?;
    let cfg = cfg.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let p = tb.spawn(
        &tb.core,
        paths::bin("netserv-cdn-director"),
        &["run", "--config", cfg],
        Some(&dir.join("director.log")),
    )?;
    wait_http(tb, &tb.core, &format!("http://{DIRECTOR}/netserv/status"))?;
    Ok(p)
}

fn wait_http(tb: &Testbed, ns: &str, url: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tb
            .output(ns, "curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", url])
            .is_ok_and(|c| c == "200")
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{url} did not answer")
}

/// What curl got: status, fields (lower-case names), body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl` from `client` (an address of `ua`) with extra arguments; the last
/// response's head (after redirects with `-L`) and body.
pub fn curl(tb: &Testbed, client: &str, url: &str, extra: &[&str]) -> anyhow::Result<Got> {
    let dir = crate::appliance::TempDir::new("curl")?;
    let (head, body) = (dir.0.join("head"), dir.0.join("body"));
    let mut args = vec!["-s", "-m", "10", "--interface", client, "-D"];
    let (h, b) = (head.to_str().unwrap_or_default(), body.to_str().unwrap_or_default());
    args.extend([h, "-o", b]);
    args.extend(extra);
    args.push(url);
    let out = tb.cmd(&tb.ua, "curl").args(&args).output()?;
    if !out.status.success() {
        anyhow::bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let head = std::fs::read_to_string(&head)?;
    // With -L, several heads: the last block is the final answer's.
    let last = head.split("\r\n\r\n").filter(|b| b.starts_with("HTTP/")).last().unwrap_or("");
    let mut lines = last.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Got { status, headers, body: std::fs::read(&body)? })
}

//! The three caches, each started by the benchmark in the testbed's `core`
//! namespace on loopback, pinned to the same CPU, in front of the same
//! origin: ours (the appliance with the `active-cdn` module), nginx 1.22
//! `proxy_cache` and Varnish 7.1.

use netserv_tests::appliance::{ADMIN_TOKEN, TempDir};
use netserv_tests::{Appliance, Proc, Testbed, paths};
use serde_json::json;

pub const ORIGIN: &str = "127.0.0.1:18180";
pub const CDN_TOKEN: &str = "cdn-bench-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Edge,
    Nginx,
    Varnish,
}

impl Cache {
    pub const ALL: [Cache; 3] = [Cache::Edge, Cache::Nginx, Cache::Varnish];

    pub fn name(self) -> &'static str {
        match self {
            Cache::Edge => "edge",
            Cache::Nginx => "nginx",
            Cache::Varnish => "varnish",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Cache::Edge => 18181,
            Cache::Nginx => 18182,
            Cache::Varnish => 18183,
        }
    }

    pub fn url(self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }
}

/// The memory test's cache: tenant `cdn-m`, its own budget, this port.
pub const MEM_PORT: u16 = 18184;

/// The appliance's config: no dataplane or signaling (the caches alone);
/// tenant `cdn-a` fronts the origin with `budget` bytes, `cdn-m` with
/// `mem_budget` (the memory test's).
pub fn edge_config(budget: u64, mem_budget: u64) -> String {
    format!(
        r#"node_id = "edge-cdn-bench"
[api]
listen = "127.0.0.1:8270"
admin_token = "{ADMIN_TOKEN}"
[dataplane]
enabled = false
[signaling]
enabled = false
[servers]
address = "127.0.0.1"
[[tenants]]
name = "cdn-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "{CDN_TOKEN}"
listen_ports = [{port}]
[tenants.limits]
cache_bytes = {budget}
[tenants.cache]
origin = "http://{ORIGIN}/"
max_object_bytes = 1048576
[[tenants]]
name = "cdn-m"
public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
api_token = "cdn-m-token-0123456789abc"
listen_ports = [{MEM_PORT}]
[tenants.limits]
cache_bytes = {mem_budget}
[tenants.cache]
origin = "http://{ORIGIN}/"
max_object_bytes = 1048576
"#,
        port = Cache::Edge.port(),
    )
}

/// Starts the appliance in `ns` on `cpu` and installs the ActiveCDN module
/// for both tenants (no properties: no hook, so no hit enters wasm).
pub fn start_edge(ns: &str, cpu: &str, budget: u64, mem_budget: u64) -> anyhow::Result<Appliance> {
    let app = Appliance::start_with(ns, &edge_config(budget, mem_budget), Some(cpu))?;
    for (tenant, port) in [("cdn-a", Cache::Edge.port()), ("cdn-m", MEM_PORT)] {
        let body = json!({
            "tenant": tenant, "name": "active-cdn",
            "source": { "path": paths::module("netserv_active_cdn") },
            "listen": [{ "transport": "tcp", "port": port }],
        });
        let (code, v) = app.api("POST", "/api/v1/modules", Some(&body), ADMIN_TOKEN)?;
        anyhow::ensure!(code == 201, "install refused ({code}): {v}\n{}", app.log());
    }
    Ok(app)
}

pub fn nginx_conf(dir: &std::path::Path) -> String {
    format!(
        r#"worker_processes 1;
daemon off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  proxy_cache_path {dir}/cache levels=1:2 keys_zone=edge:64m max_size=512m inactive=1h use_temp_path=off;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://{ORIGIN};
      proxy_cache edge;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
      proxy_cache_use_stale updating error timeout http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
"#,
        dir = dir.display(),
        port = Cache::Nginx.port(),
    )
}

/// Varnish's VCL: the origin, and a failed background fetch abandoned so
/// the stale object keeps serving (its stale-if-error).
pub fn varnish_vcl() -> String {
    let (host, port) = ORIGIN.split_once(':').unwrap_or((ORIGIN, "80"));
    format!(
        r#"vcl 4.1;
backend origin {{ .host = "{host}"; .port = "{port}"; }}
sub vcl_backend_response {{
  if (beresp.status >= 500 && bereq.is_bgfetch) {{ return (abandon); }}
  set beresp.keep = 600s;
}}
"#
    )
}

pub struct Anchors {
    _nginx: Proc,
    _varnish: Proc,
    _dir: TempDir,
}

pub fn start_anchors(tb: &Testbed, cpu: &str) -> anyhow::Result<Anchors> {
    let dir = TempDir::new("cdnbench")?;
    std::fs::create_dir_all(dir.0.join("cache"))?;
    let conf = dir.0.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir.0))?;
    let (c, p) = (conf.to_str().unwrap_or_default(), dir.0.to_str().unwrap_or_default());
    let nginx =
        tb.spawn(&tb.core, "taskset", &["-c", cpu, "nginx", "-c", c, "-p", p], Some(&dir.0.join("nginx.out")))?;
    let vcl = dir.0.join("bench.vcl");
    std::fs::write(&vcl, varnish_vcl())?;
    let work = dir.0.join("varnish");
    let listen = format!("127.0.0.1:{}", Cache::Varnish.port());
    let varnish = tb.spawn(
        &tb.core,
        "taskset",
        &[
            "-c",
            cpu,
            "varnishd",
            "-F",
            "-n",
            work.to_str().unwrap_or_default(),
            "-a",
            &listen,
            "-f",
            vcl.to_str().unwrap_or_default(),
            "-s",
            "malloc,512m",
            "-p",
            "thread_pools=1",
        ],
        Some(&dir.0.join("varnish.out")),
    )?;
    Ok(Anchors { _nginx: nginx, _varnish: varnish, _dir: dir })
}

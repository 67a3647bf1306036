//! Starts `netserv-appliance` in the testbed's edge namespace and talks to its
//! admin API (with curl inside that namespace).

use crate::netns::{Proc, Testbed};
use crate::paths;
use anyhow::{Context as _, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
pub const TENANT_A_TOKEN: &str = "tenant-a-token-0123456789";
pub const TENANT_B_TOKEN: &str = "tenant-b-token-0123456789";
const API: &str = "http://127.0.0.1:8270";

/// RFC 8032 §7.1 test public keys (valid Ed25519 points).
const KEY_A: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const KEY_B: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

/// The test config: tenant `itsp-a` owns core's SIP port, `itsp-b` port 5070.
pub fn test_config(extra_tenants: &str) -> String {
    test_config_with("", extra_tenants)
}

/// [`test_config`] with extra lines in its `[dataplane]` table.
pub fn test_config_with(dataplane: &str, extra_tenants: &str) -> String {
    node_config(&format!("queues = 2\n{dataplane}"), extra_tenants)
}

/// The test node's config with exactly `dataplane` in its `[dataplane]`
/// table (empty: the appliance's defaults, as a benchmark wants them).
pub fn node_config(dataplane: &str, extra_tenants: &str) -> String {
    format!(
        r#"node_id = "edge-test"

[api]
listen = "127.0.0.1:8270"
admin_token = "{ADMIN_TOKEN}"

[dataplane]
{dataplane}

[[tenants]]
name = "itsp-a"
public_key = "{KEY_A}"
api_token = "{TENANT_A_TOKEN}"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5060]

[[tenants]]
name = "itsp-b"
public_key = "{KEY_B}"
api_token = "{TENANT_B_TOKEN}"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5070]
{extra_tenants}
"#
    )
}

pub struct Appliance {
    pub proc: Proc,
    pub edge: String,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// With `[api] tls_cert` in the config: the API is called over https,
    /// trusting that certificate (curl `--cacert`).
    pub tls_cert: Option<PathBuf>,
    _dir: TempDir,
}

/// The `tls_cert = "..."` a config names, if any.
fn tls_cert_of(config: &str) -> Option<PathBuf> {
    config.lines().find_map(|l| {
        let v = l.trim().strip_prefix("tls_cert")?.trim().strip_prefix('=')?.trim();
        Some(PathBuf::from(v.trim_matches('"')))
    })
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let p = std::env::temp_dir().join(format!("netserv-{tag}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // NETSERV_KEEP_LOGS=1 keeps a run's files (logs, configs) to read
        // after a failure; the path is printed.
        if std::env::var_os("NETSERV_KEEP_LOGS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Appliance {
    /// Starts the appliance in `tb.edge` with `config` and waits for /healthz.
    pub fn start(tb: &Testbed, config: &str) -> anyhow::Result<Self> {
        Self::start_in(&tb.edge, config)
    }

    /// Starts the appliance in namespace `ns` and waits for /healthz.
    pub fn start_in(ns: &str, config: &str) -> anyhow::Result<Self> {
        Self::start_with(ns, config, None)
    }

    /// [`Appliance::start_in`], confined to the CPUs `cpus` (a `taskset`
    /// list) when given — as a benchmark gives the appliance CPUs of its own.
    pub fn start_with(ns: &str, config: &str, cpus: Option<&str>) -> anyhow::Result<Self> {
        let dir = TempDir::new("appliance")?;
        let config_path = dir.0.join("appliance.toml");
        // Each test appliance keeps its state apart from every other's, unless
        // the config names a directory (to test restarts).
        let config = if config.lines().any(|l| l.trim_start().starts_with("state_dir")) {
            config.to_owned()
        } else {
            format!("state_dir = {:?}\n{config}", dir.0.join("state"))
        };
        // Certified by the testbed's ISP, which the test plugins trust.
        let config = crate::identity::certified(&config, &dir.0)?;
        std::fs::write(&config_path, config)?;
        let cfg = config_path.to_str().context("utf-8 path")?;
        let log_path = dir.0.join("appliance.log");
        let bin = paths::bin("netserv-appliance");
        let bin = bin.to_str().context("utf-8 path")?;
        let proc = match cpus {
            Some(c) => crate::netns::spawn(ns, "taskset", &["-c", c, bin, "run", "--config", cfg], Some(&log_path))?,
            None => crate::netns::spawn(ns, bin, &["run", "--config", cfg], Some(&log_path))?,
        };
        let tls_cert = tls_cert_of(&std::fs::read_to_string(&config_path)?);
        let me = Self { proc, edge: ns.to_owned(), config_path, log_path, tls_cert, _dir: dir };
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = me.api("GET", "/healthz", None, ADMIN_TOKEN) {
                return Ok(me);
            }
            // A restart compiles every saved module not in its compile
            // cache: seconds each in a debug build on a busy 2-core machine.
            if start.elapsed() > Duration::from_secs(60) {
                let log = me.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!("appliance did not become healthy within 60 s; its log ends:\n{}", tail.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One API call; returns the status and the body parsed as JSON (or as a
    /// JSON string when it is not JSON).
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        token: &str,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = match self.tls_cert {
            None => format!("{API}{path}"),
            Some(_) => format!("{}{path}", API.replacen("http:", "https:", 1)),
        };
        let auth = format!("Authorization: Bearer {token}");
        let ca = self.tls_cert.as_ref().and_then(|c| c.to_str()).unwrap_or_default().to_owned();
        let mut args = vec![
            "netns",
            "exec",
            &self.edge,
            "curl",
            "-s",
            "-m",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "-H",
            &auth,
        ];
        if self.tls_cert.is_some() {
            args.extend(["--cacert", &ca]);
        }
        let data;
        if let Some(b) = body {
            data = b.to_string();
            args.extend(["-H", "Content-Type: application/json", "--data-binary", &data]);
        }
        args.push(&url);
        let out = std::process::Command::new("ip").args(&args).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').context("no status from curl")?;
        let code: u16 = code.trim().parse().context("status")?;
        if code == 0 {
            bail!("API not reachable");
        }
        let json = serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_owned()));
        Ok((code, json))
    }

    /// Installs a module as admin and fails the test on refusal.
    pub fn install(&self, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let (code, v) = self.api("POST", "/api/v1/modules", Some(body), ADMIN_TOKEN)?;
        if code != 201 {
            bail!("install refused ({code}): {v}");
        }
        Ok(v)
    }

    pub fn module(&self, tenant: &str, name: &str) -> anyhow::Result<serde_json::Value> {
        let (code, v) = self.api("GET", &format!("/api/v1/modules/{tenant}/{name}"), None, ADMIN_TOKEN)?;
        if code != 200 {
            bail!("module {tenant}/{name}: {code} {v}");
        }
        Ok(v)
    }

    /// The appliance's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> anyhow::Result<String> {
        match self.api("GET", "/metrics", None, ADMIN_TOKEN)? {
            (200, serde_json::Value::String(s)) => Ok(s),
            (code, v) => bail!("metrics: {code} {v}"),
        }
    }
}

/// The install body for the keepalive module guarding core's SIP port.
pub fn keepalive_install(ttl_secs: Option<u64>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "tenant": "itsp-a",
        "name": "keepalive",
        "source": { "path": paths::module("netserv_keepalive") },
        "filter": { "transport": "udp", "destination": "198.18.2.20/32", "ports": [5060] },
        "properties": { "server": "NetServ-test" },
    });
    if let Some(t) = ttl_secs {
        v["ttl_secs"] = t.into();
    }
    v
}

/// `count` more tenants `t0`, `t1`, ... (tokens `bench-tenant-token-000000`
/// ...), tenant `ti` owning port `first_port + i` of core's address.
pub fn extra_tenants(count: u64, first_port: u64) -> String {
    let mut extra = String::new();
    for i in 0..count {
        extra.push_str(&format!(
            "\n[[tenants]]\nname = \"t{i}\"\npublic_key = \"{KEY_A}\"\napi_token = \"bench-tenant-token-{i:06}\"\nfilter_prefixes = [\"198.18.2.20/32\"]\nlisten_ports = [{}]\n",
            first_port + i
        ));
    }
    extra
}

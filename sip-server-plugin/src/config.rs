//! The plugin's TOML config, checked once at start-up; errors name the field.

use crate::policy::PolicyConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tenant name the appliances know this ITSP by.
    pub tenant: String,
    /// The ITSP's Ed25519 signing key (64 hex digits).
    pub key_file: PathBuf,
    /// The SIP server the phones reach (the keepalive module's filter).
    pub server: SocketAddr,
    /// Where Kamailio's siptrace sends HEP.
    #[serde(default = "default_hep")]
    pub hep_listen: SocketAddr,
    /// Who may send HEP: the SIP server's address and loopback always, and
    /// these prefixes besides (further SIP servers mirroring to this plugin).
    /// A datagram from anyone else is dropped and counted: what HEP says
    /// decides where modules get deployed.
    #[serde(default)]
    pub hep_allow: Vec<ipnet::IpNet>,
    /// Status, metrics and module downloads.
    #[serde(default = "default_http")]
    pub http_listen: SocketAddr,
    /// The registry file (survives restarts).
    #[serde(default = "default_registry")]
    pub registry: PathBuf,
    pub module: ModuleConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub signaling: SignalingConfig,
    /// The media relay: deployed towards phones when they REGISTER.
    #[serde(default)]
    pub relay: Option<RelayConfig>,
    /// Overload control: the plugin as the server's load monitor, deploying
    /// the sending entity at the edge when the server is overloaded.
    #[serde(default)]
    pub overload: Option<OverloadConfig>,
}

/// `[overload]`: the server's capacity and the thresholds of control, the
/// sending-entity module, and how to reach the server's statistics and the
/// appliances' feedback API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverloadConfig {
    #[serde(default = "default_overload_name")]
    pub name: String,
    /// The module file (served at `/modules/<name>.wasm` unless `url` is set).
    pub file: PathBuf,
    pub url: Option<String>,
    /// Kamailio's `jsonrpcs` datagram socket (`modparam("jsonrpcs", "dgram_socket", …)`).
    pub rpc_socket: PathBuf,
    /// Requests a second the server serves well, if known: a ceiling on
    /// top of what its receive queue shows, and a sign of overload where the
    /// plugin cannot see the queue.
    pub capacity: Option<f64>,
    /// With `capacity`: control engages when the server processes this share of it.
    #[serde(default = "default_engage_at")]
    pub engage_at: f64,
    /// With `capacity`: the share of it that control lets through at most.
    #[serde(default = "default_target")]
    pub target: f64,
    /// What control holds the server's UDP receive queue at, bytes (the
    /// kernel's count: 1–2 KiB a SIP datagram). Twice it, or a drop, is
    /// overload.
    #[serde(default = "default_queue_target")]
    pub queue_target_bytes: u64,
    /// No longer used (control now ends once nothing was shed and no
    /// overload was seen for `release_after_secs`): accepted so that older
    /// configs still load, with a warning.
    #[serde(default)]
    pub release_below: Option<f64>,
    /// Keep the entity deployed towards the sources of traffic before any
    /// overload (it passes everything until a report comes), so that
    /// control starts within a tick of a surge instead of after a SETUP.
    #[serde(default)]
    pub standby: bool,
    /// Control ends when nothing has been shed and the server has shown no
    /// overload for this long.
    #[serde(default = "default_release_after")]
    pub release_after_secs: u32,
    /// How often the server is sampled and every entity gets a report.
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// How long each report holds: control ends by itself this long after
    /// the plugin stops reporting.
    #[serde(default = "default_validity")]
    pub validity_ms: u32,
    #[serde(default = "default_algorithm")]
    pub algorithm: crate::overload::Algorithm,
    /// Sources of traffic the entity is deployed towards at most.
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
    /// The tenant's API token on its appliances (their feedback API).
    pub appliance_token: String,
    /// Module properties (`retry_after`, `burst`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_overload_name() -> String {
    "overload".into()
}
fn default_engage_at() -> f64 {
    0.9
}
fn default_target() -> f64 {
    0.9
}
fn default_queue_target() -> u64 {
    32 * 1024
}
fn default_release_after() -> u32 {
    5
}
fn default_interval() -> u32 {
    250
}
fn default_validity() -> u32 {
    1000
}
fn default_algorithm() -> crate::overload::Algorithm {
    crate::overload::Algorithm::Loss
}
fn default_max_sources() -> usize {
    8
}

impl OverloadConfig {
    /// The entity's properties as deployed: the configured ones, and
    /// `advertise = off` unless they say otherwise. The plugin steers its
    /// entities through their feedback API, so offering overload control to
    /// the server in the Via (for in-band reports) would only cost the
    /// server: Kamailio 5.6, which this plugin stands in for as the
    /// receiving entity, does not report in-band.
    pub fn module_properties(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = self.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if !self.properties.contains_key("advertise") {
            p.push(("advertise".into(), "off".into()));
        }
        p
    }

    /// The monitor's settings; deployments are refreshed as `policy` says.
    pub fn monitor(&self, policy: &PolicyConfig) -> crate::overload::MonitorConfig {
        crate::overload::MonitorConfig {
            capacity: self.capacity,
            engage_at: self.engage_at,
            target: self.target,
            queue_target_bytes: self.queue_target_bytes,
            release_after_ms: u64::from(self.release_after_secs) * 1000,
            validity_ms: self.validity_ms,
            algorithm: self.algorithm,
            max_sources: self.max_sources,
            refresh_every_ms: u64::from(policy.ttl_secs.saturating_sub(policy.refresh_before_secs).max(1)) * 1000,
            standby: self.standby,
        }
    }
}

/// `[relay]`: the media relay module, and the TURN REST credentials the
/// plugin hands phones (`GET /turn`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    #[serde(default = "default_relay_name")]
    pub name: String,
    /// The module file (served at `/modules/<name>.wasm` unless `url` is set).
    pub file: PathBuf,
    pub url: Option<String>,
    /// The port relays listen on (UDP); the tenant must be authorized for it.
    #[serde(default = "default_turn_port")]
    pub port: u16,
    /// The TURN REST shared secret: the same the tenant sets on its
    /// appliances as the secret `turn-secret`.
    pub shared_secret: String,
    /// How long the credentials `/turn` hands out are valid.
    #[serde(default = "default_credential_ttl")]
    pub credential_ttl_secs: u32,
    /// The ITSP's own relays, for phones no edge relay serves.
    #[serde(default)]
    pub fallback_uris: Vec<String>,
    /// Module properties (`realm`, quotas, lifetimes …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The relay deployments' registry (survives restarts).
    #[serde(default = "default_relay_registry")]
    pub registry: PathBuf,
    /// When set, `GET /turn` needs `Authorization: Bearer <turn_token>`.
    #[serde(default)]
    pub turn_token: Option<String>,
}

fn default_relay_name() -> String {
    "relay".into()
}

fn default_turn_port() -> u16 {
    3478
}

fn default_credential_ttl() -> u32 {
    86_400
}

fn default_relay_registry() -> PathBuf {
    PathBuf::from("/var/lib/netserv-plugin/relay-registry.json")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    #[serde(default = "default_module_name")]
    pub name: String,
    /// The module file; the plugin serves it and signs its sha256.
    pub file: PathBuf,
    /// Where appliances download it. Default: served by this plugin at
    /// `http://<http_advertise>/modules/<name>.wasm`.
    pub url: Option<String>,
    /// The address appliances reach this plugin's HTTP server at.
    pub http_advertise: Option<SocketAddr>,
    /// Module properties (e.g. `server`, `domains`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    pub query_attempts: u32,
    pub timeout_ms: u64,
    /// Public keys (64 hex digits) of the ISPs whose appliances this ITSP
    /// uses. An appliance's answer counts — as deployed, as serving a phone,
    /// in the offload figures — only when it is signed by a node key one of
    /// these certified; anything else (an appliance of another ISP, or the
    /// phone at the end of the path answering for one) is a hint, logged
    /// and counted in `netserv_plugin_unverified_entries_total`.
    pub trusted_isp_keys: Vec<String>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self { query_attempts: 3, timeout_ms: 10_000, trusted_isp_keys: Vec::new() }
    }
}

fn default_hep() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9060))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8280))
}
fn default_registry() -> PathBuf {
    PathBuf::from("/var/lib/netserv-plugin/registry.json")
}
fn default_module_name() -> String {
    "keepalive".into()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Syntax(String),
    #[error("`{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// What the deployed keepalive module will answer, read from its
    /// properties as the module reads them (`domains`, `notify`, `options`;
    /// both switches on unless set off).
    pub fn keepalive_rule(&self) -> crate::observe::KeepaliveRule {
        use netserv_sip_scan::keepalive::{domain_list, flag_value};
        let p = &self.module.properties;
        let on = |k: &str| p.get(k).and_then(|v| flag_value(v)).unwrap_or(true);
        crate::observe::KeepaliveRule {
            server: self.server.ip(),
            domains: domain_list(p.get("domains").map_or("", String::as_str)).map(str::to_ascii_lowercase).collect(),
            notify: on("notify"),
            options: on("options"),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text)
    }

    /// Whether a HEP datagram from `ip` is listened to (see `hep_allow`).
    pub fn hep_allowed(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        ip.is_loopback() || ip == self.server.ip() || self.hep_allow.iter().any(|n| n.contains(&ip))
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let bad = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.into() });
        if c.tenant.is_empty() {
            return bad("tenant", "must not be empty");
        }
        if c.module.url.is_none() && c.module.http_advertise.is_none() {
            return bad("module.url", "set it, or set module.http_advertise so the plugin serves the module");
        }
        let p = &c.policy;
        if p.ttl_secs == 0 {
            return bad("policy.ttl_secs", "must be at least 1");
        }
        if p.refresh_before_secs >= p.ttl_secs {
            return bad("policy.refresh_before_secs", "must be less than policy.ttl_secs");
        }
        if p.keepalive_threshold == 0 {
            return bad("policy.keepalive_threshold", "must be at least 1");
        }
        if let Some(r) = &c.relay {
            if r.url.is_none() && c.module.http_advertise.is_none() {
                return bad("relay.url", "set it, or set module.http_advertise so the plugin serves the module");
            }
            if r.shared_secret.len() < 16 {
                return bad("relay.shared_secret", "must be at least 16 characters");
            }
            if r.port == 0 {
                return bad("relay.port", "must not be 0");
            }
            if r.credential_ttl_secs == 0 {
                return bad("relay.credential_ttl_secs", "must be at least 1");
            }
            if r.name == c.module.name {
                return bad("relay.name", "must differ from module.name");
            }
            if r.turn_token.as_ref().is_some_and(|t| t.len() < 16) {
                return bad("relay.turn_token", "must be at least 16 characters");
            }
        }
        if let Some(o) = &c.overload {
            let share = |v: f64| v > 0.0 && v <= 1.0;
            if o.url.is_none() && c.module.http_advertise.is_none() {
                return bad("overload.url", "set it, or set module.http_advertise so the plugin serves the module");
            }
            if o.capacity.is_some_and(|c| !(c.is_finite() && c >= 1.0)) {
                return bad("overload.capacity", "must be at least 1 (requests a second)");
            }
            if !share(o.engage_at) {
                return bad("overload.engage_at", "must be a share of capacity in (0, 1]");
            }
            if !share(o.target) {
                return bad("overload.target", "must be a share of capacity in (0, 1]");
            }
            if !(1024..=64 * 1024 * 1024).contains(&o.queue_target_bytes) {
                return bad(
                    "overload.queue_target_bytes",
                    "must be 1024..=67108864 (below the server's receive buffer)",
                );
            }
            if o.properties.get("advertise").is_some_and(|v| {
                !matches!(v.trim(), "off" | "false" | "no" | "loss" | "on" | "true" | "yes" | "loss,rate" | "rate,loss")
            }) {
                return bad("overload.properties.advertise", "must be `off`, `loss` or `loss,rate`");
            }
            if o.release_below.is_some() {
                tracing::warn!(
                    "overload.release_below is no longer used: control ends once nothing was shed and the server showed no overload for release_after_secs"
                );
            }
            if !(50..=5000).contains(&o.interval_ms) {
                return bad("overload.interval_ms", "must be 50..=5000");
            }
            if o.validity_ms < o.interval_ms {
                return bad("overload.validity_ms", "must be at least overload.interval_ms");
            }
            if o.max_sources == 0 {
                return bad("overload.max_sources", "must be at least 1");
            }
            if o.appliance_token.len() < 16 {
                return bad("overload.appliance_token", "must be the tenant's API token (16 characters or more)");
            }
            if o.name == c.module.name || c.relay.as_ref().is_some_and(|r| r.name == o.name) {
                return bad("overload.name", "must differ from module.name and relay.name");
            }
        }
        if c.signaling.query_attempts == 0 || c.signaling.timeout_ms == 0 {
            return bad("signaling", "query_attempts and timeout_ms must be at least 1");
        }
        Ok(c)
    }

    /// The module's download URL.
    /// Where appliances download the relay module.
    pub fn relay_url(&self) -> Option<String> {
        let r = self.relay.as_ref()?;
        Some(match (&r.url, self.module.http_advertise) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("http://{a}/modules/{}.wasm", r.name),
            (None, None) => String::new(),
        })
    }

    /// Where appliances download the overload-control module.
    pub fn overload_url(&self) -> Option<String> {
        let o = self.overload.as_ref()?;
        Some(match (&o.url, self.module.http_advertise) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("http://{a}/modules/{}.wasm", o.name),
            (None, None) => String::new(),
        })
    }

    pub fn module_url(&self) -> String {
        match (&self.module.url, self.module.http_advertise) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("http://{a}/modules/{}.wasm", self.module.name),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
tenant = "itsp-a"
key_file = "/k"
server = "198.18.2.20:5060"
[module]
file = "/m.wasm"
http_advertise = "198.18.2.20:8280"
"#;

    fn field(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Invalid { field, .. }) => field.into(),
            other => format!("{other:?}"),
        }
    }

    /// HEP decides where modules go: only the SIP server (and loopback, and
    /// what `hep_allow` adds) may send it. Before, any sender was heard.
    #[test]
    fn hep_is_heard_only_from_the_server_loopback_and_the_allow_list() {
        let c = Config::parse(BASE).expect("valid");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(c.hep_allowed(ip("198.18.2.20")));
        assert!(c.hep_allowed(ip("127.0.0.1")));
        assert!(c.hep_allowed(ip("::1")));
        assert!(c.hep_allowed(ip("::ffff:198.18.2.20")));
        assert!(!c.hep_allowed(ip("198.18.1.10")), "a phone's address");
        assert!(!c.hep_allowed(ip("198.18.2.21")));
        let more =
            Config::parse(&BASE.replace("[module]", "hep_allow = [\"198.18.3.0/24\"]\n[module]")).expect("valid");
        assert!(more.hep_allowed(ip("198.18.3.7")));
        assert!(!more.hep_allowed(ip("198.18.4.7")));
    }

    #[test]
    fn errors_name_the_field() {
        let c = Config::parse(BASE).expect("valid");
        assert_eq!(c.module_url(), "http://198.18.2.20:8280/modules/keepalive.wasm");
        assert_eq!(field(&BASE.replace("http_advertise = \"198.18.2.20:8280\"", "")), "module.url");
        assert_eq!(
            field(&format!("{BASE}[policy]\nttl_secs = 10\nrefresh_before_secs = 10\n")),
            "policy.refresh_before_secs"
        );
        assert!(matches!(Config::parse(&format!("{BASE}bogus = 1\n")), Err(ConfigError::Syntax(_))));
        let relay = format!("{BASE}[relay]\nfile = \"/r.wasm\"\nshared_secret = \"north-wind-shared-secret\"\n");
        let c = Config::parse(&relay).expect("valid relay");
        assert_eq!(c.relay_url().as_deref(), Some("http://198.18.2.20:8280/modules/relay.wasm"));
        assert_eq!(field(&relay.replace("north-wind-shared-secret", "short")), "relay.shared_secret");
        assert_eq!(field(&format!("{relay}name = \"keepalive\"\n")), "relay.name");
        let oc = format!(
            "{BASE}[overload]\nfile = \"/o.wasm\"\nrpc_socket = \"/run/k.sock\"\ncapacity = 300\nappliance_token = \"tenant-a-token-0123456789\"\n"
        );
        let c = Config::parse(&oc).expect("valid overload");
        assert_eq!(c.overload_url().as_deref(), Some("http://198.18.2.20:8280/modules/overload.wasm"));
        assert_eq!(c.overload.as_ref().map(|o| o.monitor(&c.policy).release_after_ms), Some(5000));
        assert_eq!(c.overload.as_ref().map(|o| o.monitor(&c.policy).refresh_every_ms), Some(240_000));
        assert_eq!(field(&oc.replace("capacity = 300", "capacity = 0")), "overload.capacity");
        assert_eq!(field(&format!("{oc}engage_at = 1.5\n")), "overload.engage_at");
        assert_eq!(field(&format!("{oc}queue_target_bytes = 10\n")), "overload.queue_target_bytes");
        assert_eq!(field(&format!("{oc}properties = {{ advertise = \"maybe\" }}\n")), "overload.properties.advertise");
        assert!(Config::parse(&format!("{oc}release_below = 0.7\n")).is_ok(), "an older config still loads");
        // The entity is steered through its API: it offers the server nothing in the Via.
        let c = Config::parse(&oc).expect("valid");
        let o = c.overload.as_ref().expect("[overload]");
        assert!(o.module_properties().contains(&("advertise".into(), "off".into())));
        let own = Config::parse(&format!("{oc}properties = {{ advertise = \"loss\" }}\n")).expect("valid");
        assert_eq!(own.overload.expect("[overload]").module_properties(), [("advertise".into(), "loss".into())]);
        // Without a capacity the server's queue alone steers.
        assert!(Config::parse(&oc.replace("capacity = 300\n", "")).is_ok());
        assert_eq!(field(&format!("{oc}validity_ms = 100\n")), "overload.validity_ms");
        assert_eq!(field(&oc.replace("tenant-a-token-0123456789", "short")), "overload.appliance_token");
        assert!(matches!(Config::parse(&format!("{oc}algorithm = \"fair\"\n")), Err(ConfigError::Syntax(_))));
    }
}

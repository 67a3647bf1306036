//! The director's TOML config, checked once at start-up; errors name the field.

use crate::placement::PlacementConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tenant name the appliances know this content provider by.
    pub tenant: String,
    /// Its Ed25519 signing key (64 hex digits).
    pub key_file: PathBuf,
    /// The provider's front door: clients' requests arrive here.
    pub listen: SocketAddr,
    /// Where a client with no node near is served from.
    pub origin: String,
    /// A MaxMind-format database with `location` (GeoIP2 / GeoLite2 City).
    pub geoip: PathBuf,
    pub module: ModuleConfig,
    #[serde(default)]
    pub placement: PlacementConfig,
    #[serde(default)]
    pub signaling: SignalingConfig,
}

/// `[module]`: the cache module deployed, and where its listeners are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    #[serde(default = "default_name")]
    pub name: String,
    /// The module file: its sha256 goes in the SETUP; served at
    /// `/netserv/modules/<name>.wasm` unless `url` points elsewhere.
    pub file: PathBuf,
    /// Where appliances download it (default: this director, as above, at `advertise`).
    pub url: Option<String>,
    /// This director's address as appliances reach it (for the default `url`).
    pub advertise: Option<SocketAddr>,
    /// The cache's TCP port on each node (the tenant's authorized port there).
    pub port: u16,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_name() -> String {
    "active-cdn".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingConfig {
    pub query_attempts: u32,
    pub timeout_ms: u64,
    /// Public keys (64 hex digits) of the ISPs whose appliances count (as in the SIP plugin).
    pub trusted_isp_keys: Vec<String>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self { query_attempts: 3, timeout_ms: 10_000, trusted_isp_keys: Vec::new() }
    }
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
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let bad = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.into() });
        if c.tenant.is_empty() {
            return bad("tenant", "must not be empty");
        }
        match c.origin.parse::<reqwest::Url>() {
            Ok(u) if u.scheme() == "http" && u.host().is_some() => {}
            _ => return bad("origin", "must be an http:// URL with a host"),
        }
        if c.module.url.is_none() && c.module.advertise.is_none() {
            return bad("module.url", "set it, or set module.advertise so the director serves the module");
        }
        if c.module.port == 0 {
            return bad("module.port", "must be a port");
        }
        let p = &c.placement;
        if !(p.max_km.is_finite() && p.max_km >= 0.0) {
            return bad("placement.max_km", "must be a distance in km");
        }
        if p.ttl_secs == 0 || p.refresh_before_secs >= p.ttl_secs {
            return bad("placement.refresh_before_secs", "must be less than placement.ttl_secs (at least 1)");
        }
        if p.max_in_flight == 0 {
            return bad("placement.max_in_flight", "must be at least 1");
        }
        if c.signaling.trusted_isp_keys.is_empty() {
            return bad("signaling.trusted_isp_keys", "name the ISPs whose appliances count");
        }
        Ok(c)
    }

    /// Where appliances download the module.
    pub fn module_url(&self) -> String {
        match (&self.module.url, self.module.advertise) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("http://{a}/netserv/modules/{}.wasm", self.module.name),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
tenant = "cdn-a"
key_file = "/k"
listen = "198.18.2.40:80"
origin = "http://127.0.0.1:8080/"
geoip = "/g.mmdb"
[module]
file = "/m.wasm"
advertise = "198.18.2.40:80"
port = 8080
[signaling]
trusted_isp_keys = ["00"]
"#;

    fn field_of(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Invalid { field, .. }) => field.into(),
            Err(e) => e.to_string(),
            Ok(_) => "accepted".into(),
        }
    }

    #[test]
    fn a_good_config_and_its_defaults() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.module_url(), "http://198.18.2.40:80/netserv/modules/active-cdn.wasm");
        assert_eq!(c.placement.max_km, 500.0);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(&GOOD.replace("http://127.0.0.1:8080/", "ftp://x/")), "origin");
        assert_eq!(field_of(&GOOD.replace("port = 8080", "port = 0")), "module.port");
        assert_eq!(field_of(&GOOD.replace("advertise = \"198.18.2.40:80\"\n", "")), "module.url");
        assert_eq!(field_of(&GOOD.replace("[\"00\"]", "[]")), "signaling.trusted_isp_keys");
        assert_eq!(
            field_of(&format!("{GOOD}\n[placement]\nttl_secs = 10\nrefresh_before_secs = 10\n")),
            "placement.refresh_before_secs"
        );
        assert!(field_of(&GOOD.replace("tenant", "tennant")).contains("unknown field"));
    }
}

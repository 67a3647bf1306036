//! The appliance's TOML configuration: parsed and validated once, before any
//! socket binds or rule is written. Every error names the field.

mod cache;
mod limits;
mod servers;
mod signaling;
#[cfg(test)]
pub(crate) mod tests;

pub use cache::TenantCache;
pub use limits::Limits;
pub use servers::Servers;
pub use signaling::Signaling;

use base64::Engine as _;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// A configuration error, naming the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax, unknown fields and wrong types: toml's message already
    /// names the key and the line.
    #[error("{0}")]
    Syntax(String),
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: String,
    #[serde(default)]
    state_dir: Option<PathBuf>,
    api: RawApi,
    #[serde(default)]
    dataplane: Dataplane,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    signaling: Signaling,
    #[serde(default)]
    servers: Servers,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: SocketAddr,
    admin_token: String,
    /// Where tenants' SIP server sides reach this node's feedback API: told
    /// to them in every signaling response (`feedback=<address>`).
    #[serde(default)]
    advertise: Option<SocketAddr>,
    /// TLS for the API: a PEM certificate chain and its PEM private key
    /// (both, or neither: plain HTTP, for a management network or loopback).
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
}

/// The API's certificate and key, PEM files; SIGHUP reads them again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// NFQUEUE and iptables settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Dataplane {
    /// First NFQUEUE number; the appliance uses `queue_base .. queue_base + queues`.
    pub queue_base: u16,
    /// Number of queues, each with its own thread. Default: one per CPU this
    /// process may run on (its affinity: `taskset`, systemd's CPUAffinity),
    /// so that no two workers share a CPU.
    pub queues: u16,
    /// How packets are spread over the queues: `cpu` (by the CPU that
    /// processes them, each worker pinned there; lowest latency) or `flow`
    /// (by address hash, workers float).
    pub steering: Steering,
    /// Kernel-side queue length per queue.
    pub queue_max_len: u32,
    /// The iptables chain the appliance owns (created, flushed, removed).
    pub chain: String,
    /// Built-in chains that jump to `chain` (FORWARD for on-path traffic,
    /// INPUT when the intercepted server runs on the appliance itself).
    pub hooks: Vec<String>,
    /// Adaptive busy polling: while packets keep arriving at a queue less
    /// than this far apart (on average), its worker polls for the next one
    /// for up to this long instead of sleeping; when traffic is sparser, it
    /// blocks. Waking a sleeping thread costs tens of µs on virtual machines
    /// (up to ~100 measured); polling takes that out of every packet's
    /// latency while traffic flows, at the price of a busy core per queue
    /// that carries more than ~1/busy_poll_us packets a second. 0 always blocks.
    pub busy_poll_us: u32,
    /// Packets a worker takes per receive (one `recvmmsg`).
    pub batch: u16,
    /// Set to false to run without NFQUEUE (API and try-out only).
    pub enabled: bool,
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            queue_base: 270,
            queues: crate::dataplane::placement::default_queues(),
            steering: Steering::Cpu,
            queue_max_len: 8192,
            chain: "NETSERV".into(),
            hooks: vec!["FORWARD".into()],
            busy_poll_us: 200,
            batch: 32,
            enabled: true,
        }
    }
}

/// How the kernel spreads intercepted packets over the NFQUEUE queues.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Steering {
    /// `--queue-cpu-fanout`: a packet goes to the queue of the CPU that
    /// processes it, whose worker is pinned to that CPU (and spills to
    /// others when that CPU is contended).
    #[default]
    Cpu,
    /// `--queue-balance` by address hash; workers are not pinned.
    Flow,
}

/// Runtime-wide settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Largest module accepted, in bytes.
    pub module_size_max: u64,
    /// Faults within `fault_window_ms` after which a module is quarantined
    /// (a rate: good calls in between do not reset it).
    pub quarantine_after: u32,
    pub fault_window_ms: u64,
    /// First rebuild delay after a fault, doubled per recent fault (at most 5 s).
    pub reload_backoff_ms: u64,
    /// The window a module's CPU budget is counted over.
    pub budget_window_ms: u64,
    /// Windows in a row over budget after which a module is quarantined.
    pub throttle_quarantine_windows: u32,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            module_size_max: 8 << 20,
            quarantine_after: 5,
            fault_window_ms: 10_000,
            reload_backoff_ms: 50,
            budget_window_ms: 20,
            throttle_quarantine_windows: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    /// Ed25519 public key, base64 (standard) or hex.
    public_key: String,
    api_token: String,
    #[serde(default)]
    filter_prefixes: Vec<String>,
    #[serde(default)]
    listen_ports: Vec<u16>,
    /// The tenant's relay ports, "first-last".
    #[serde(default)]
    relay_ports: Option<String>,
    /// Peers its relay may reach that the peer policy denies by default.
    #[serde(default)]
    peer_allow: Vec<String>,
    /// Prefixes its module URLs may point into although they are denied by
    /// default (loopback, private, link-local, ULA, this node).
    #[serde(default)]
    module_origins: Vec<String>,
    #[serde(default)]
    limits: Option<Limits>,
    /// A content provider's edge cache: its origin.
    #[serde(default)]
    cache: Option<cache::RawCache>,
}

/// A tenant (ITSP or content provider) as configured.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub public_key: ed25519_dalek::VerifyingKey,
    pub api_token: String,
    /// Destination prefixes this tenant may intercept (its own servers).
    pub filter_prefixes: Vec<IpNet>,
    /// Ports this tenant may filter on or listen on.
    pub listen_ports: Vec<u16>,
    /// Ports its relay allocations may use (none: it may not relay).
    pub relay_ports: Option<RangeInclusive<u16>>,
    /// Prefixes its relay may reach although the peer policy denies them.
    pub peer_allow: Vec<IpNet>,
    /// Prefixes its module downloads may reach although they are denied by default.
    pub module_origins: Vec<IpNet>,
    pub limits: Limits,
    /// Its edge cache's origin (none: it may not run a cache module).
    pub cache: Option<TenantCache>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: String,
    /// Installed modules and cached module bytes survive restarts here.
    pub state_dir: PathBuf,
    pub api_listen: SocketAddr,
    /// The API address advertised to tenants for load reports (`[api] advertise`).
    pub api_advertise: Option<SocketAddr>,
    /// TLS on the API (`[api] tls_cert`, `tls_key`); None: plain HTTP.
    pub api_tls: Option<ApiTls>,
    pub admin_token: String,
    pub dataplane: Dataplane,
    pub runtime: Runtime,
    pub signaling: Signaling,
    pub servers: Servers,
    pub tenants: Vec<Tenant>,
}

/// Where installed state lives when the config names no `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netserv";

/// Tokens are compared in constant time; very short ones are refused.
const MIN_TOKEN_LEN: usize = 16;

impl Config {
    /// The settings that differ in `new` and that a running node cannot take
    /// on a reload (SIGHUP applies tenants, the admin token, `[runtime]`,
    /// `[servers]` and `api.advertise`; these need a restart): the fields,
    /// named as in the file.
    pub fn changes_needing_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.node_id != new.node_id {
            changed.push("node_id");
        }
        if self.state_dir != new.state_dir {
            changed.push("state_dir");
        }
        if self.api_listen != new.api_listen {
            changed.push("api.listen");
        }
        if self.api_tls != new.api_tls {
            changed.push("api.tls_cert / api.tls_key");
        }
        if self.dataplane != new.dataplane {
            changed.push("dataplane");
        }
        if self.signaling != new.signaling {
            changed.push("signaling");
        }
        changed
    }

    /// `self` with the settings of [`Config::changes_needing_restart`] taken
    /// from `running`: what a reload stores, so that what the node reports
    /// (`/healthz`, metrics) is what it runs on.
    pub fn keeping_restart_fields_of(mut self, running: &Config) -> Config {
        self.node_id.clone_from(&running.node_id);
        self.state_dir.clone_from(&running.state_dir);
        self.api_listen = running.api_listen;
        self.api_tls.clone_from(&running.api_tls);
        self.dataplane.clone_from(&running.dataplane);
        self.signaling.clone_from(&running.signaling);
        self
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        if raw.node_id.is_empty() || !raw.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(invalid("node_id", "must be non-empty letters, digits, '-', '_' or '.'"));
        }
        let api_tls = match (&raw.api.tls_cert, &raw.api.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ApiTls { cert: cert.clone(), key: key.clone() }),
            (Some(_), None) => return Err(invalid("api.tls_key", "is required with api.tls_cert")),
            (None, Some(_)) => return Err(invalid("api.tls_cert", "is required with api.tls_key")),
        };
        if raw.api.admin_token.len() < MIN_TOKEN_LEN {
            return Err(invalid("api.admin_token", format!("must be at least {MIN_TOKEN_LEN} characters")));
        }
        let dp = &raw.dataplane;
        if dp.queues == 0 || dp.queues > 64 {
            return Err(invalid("dataplane.queues", "must be 1..=64"));
        }
        if dp.busy_poll_us > 100_000 {
            return Err(invalid("dataplane.busy_poll_us", "must be at most 100000 (0.1 s)"));
        }
        if u32::from(dp.queue_base) + u32::from(dp.queues) > 65536 {
            return Err(invalid("dataplane.queue_base", "queue numbers run past 65535"));
        }
        let queues = u32::from(dp.queue_base)..u32::from(dp.queue_base) + u32::from(dp.queues);
        if raw.signaling.enabled && queues.contains(&u32::from(raw.signaling.queue)) {
            return Err(invalid("signaling.queue", "overlaps the dataplane queues (dataplane.queue_base + queues)"));
        }
        if dp.chain.is_empty()
            || dp.chain.len() > 28
            || !dp.chain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("dataplane.chain", "must be 1-28 letters, digits, '-' or '_'"));
        }
        for (i, hook) in dp.hooks.iter().enumerate() {
            // OUTPUT would queue what the node itself sends — its own GIST
            // Queries, the replies its modules make — to its own modules.
            if hook == "OUTPUT" {
                return Err(invalid(
                    format!("dataplane.hooks[{i}]"),
                    "OUTPUT would intercept the node's own packets; use FORWARD, INPUT or PREROUTING",
                ));
            }
            if !["FORWARD", "INPUT", "PREROUTING"].contains(&hook.as_str()) {
                return Err(invalid(format!("dataplane.hooks[{i}]"), "must be FORWARD, INPUT or PREROUTING"));
            }
        }
        raw.signaling.validate().map_err(|(field, why)| invalid(field, why))?;
        if raw.runtime.quarantine_after == 0 {
            return Err(invalid("runtime.quarantine_after", "must be at least 1"));
        }
        if raw.runtime.fault_window_ms == 0 {
            return Err(invalid("runtime.fault_window_ms", "must be at least 1"));
        }
        if raw.runtime.budget_window_ms == 0 || raw.runtime.budget_window_ms > 10_000 {
            return Err(invalid("runtime.budget_window_ms", "must be 1..=10000"));
        }
        if raw.runtime.throttle_quarantine_windows == 0 {
            return Err(invalid("runtime.throttle_quarantine_windows", "must be at least 1"));
        }
        if dp.batch == 0 || dp.batch > 1024 {
            return Err(invalid("dataplane.batch", "must be 1..=1024"));
        }
        raw.limits.validate("limits")?;
        if let Some(a) = raw.servers.address
            && (a.is_unspecified() || a.is_multicast())
        {
            return Err(invalid("servers.address", "must be one address of this node, not unspecified or multicast"));
        }
        if raw.servers.coalesce_us > servers::COALESCE_US_MAX {
            return Err(invalid("servers.coalesce_us", format!("must be 0..={}", servers::COALESCE_US_MAX)));
        }
        let mut tenants: Vec<Tenant> = Vec::with_capacity(raw.tenants.len());
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let at = |f: &str| format!("tenants[{i}].{f}");
            if t.name.is_empty() || !t.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                return Err(invalid(at("name"), "must be non-empty letters, digits, '-', '_' or '.'"));
            }
            if tenants.iter().any(|o| o.name == t.name) {
                return Err(invalid(at("name"), format!("tenant `{}` is defined twice", t.name)));
            }
            if t.api_token.len() < MIN_TOKEN_LEN {
                return Err(invalid(at("api_token"), format!("must be at least {MIN_TOKEN_LEN} characters")));
            }
            if t.api_token == raw.api.admin_token || tenants.iter().any(|o| o.api_token == t.api_token) {
                return Err(invalid(at("api_token"), "must differ from every other token"));
            }
            let public_key = parse_public_key(&t.public_key).map_err(|r| invalid(at("public_key"), r))?;
            let mut filter_prefixes = Vec::new();
            for (j, p) in t.filter_prefixes.iter().enumerate() {
                let net: IpNet = p
                    .parse()
                    .map_err(|_| invalid(at(&format!("filter_prefixes[{j}]")), format!("`{p}` is not an IP prefix")))?;
                if net.trunc() != net {
                    return Err(invalid(at(&format!("filter_prefixes[{j}]")), format!("`{p}` has host bits set")));
                }
                filter_prefixes.push(net);
            }
            if t.listen_ports.contains(&0) {
                return Err(invalid(at("listen_ports"), "port 0 is not a port"));
            }
            let limits = t.limits.unwrap_or_else(|| raw.limits.clone());
            limits.validate(&at("limits"))?;
            let relay_ports =
                t.relay_ports.as_deref().map(|r| servers::parse_port_range(&at("relay_ports"), r)).transpose()?;
            if let Some(r) = &relay_ports
                && t.listen_ports.iter().any(|p| r.contains(p))
            {
                return Err(invalid(at("relay_ports"), "overlaps the tenant's listen_ports"));
            }
            let peer_allow = servers::parse_prefixes(&at("peer_allow"), &t.peer_allow)?;
            let module_origins = servers::parse_prefixes(&at("module_origins"), &t.module_origins)?;
            let cache = t.cache.map(|c| c.validate(&at("cache"), limits.cache_bytes)).transpose()?;
            tenants.push(Tenant {
                name: t.name,
                public_key,
                api_token: t.api_token,
                filter_prefixes,
                listen_ports: t.listen_ports,
                relay_ports,
                peer_allow,
                module_origins,
                limits,
                cache,
            });
        }
        Ok(Config {
            node_id: raw.node_id,
            state_dir: raw.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            api_listen: raw.api.listen,
            api_advertise: raw.api.advertise,
            api_tls,
            admin_token: raw.api.admin_token,
            dataplane: raw.dataplane,
            runtime: raw.runtime,
            signaling: raw.signaling,
            servers: raw.servers,
            tenants,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name == name)
    }
}

fn parse_public_key(s: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| "is neither 64 hex digits nor base64".to_owned())?
    };
    let arr: [u8; 32] = bytes.try_into().map_err(|_| "must be 32 bytes (an Ed25519 public key)".to_owned())?;
    ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| "is not a valid Ed25519 point".to_owned())
}

//! Deployment properties, parsed once at `init`.

/// The module's configuration, from the deployment's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub notify: bool,
    pub options: bool,
    pub crlf: bool,
    pub stun: bool,
    pub probes: bool,
    /// Hosts (lower-case) the server answers OPTIONS for, besides its address.
    pub domains: Vec<String>,
    /// `Server` header for SIP answers, as the real server would send it.
    pub server: Option<String>,
    /// `Allow` header for OPTIONS answers.
    pub allow: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            notify: true,
            options: true,
            crlf: true,
            stun: true,
            probes: true,
            domains: Vec::new(),
            server: None,
            allow: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("property `{0}` is not known to the keepalive module")]
    Unknown(String),
    #[error("property `{0}` must be `on` or `off`")]
    NotABool(&'static str),
    #[error("property `{0}` must be printable ASCII without CR or LF")]
    BadHeaderValue(&'static str),
}

fn flag(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    netserv_sip_scan::keepalive::flag_value(v).ok_or(ConfigError::NotABool(key))
}

fn header_value(key: &'static str, v: &str) -> Result<String, ConfigError> {
    if v.bytes().all(|b| (0x20..0x7f).contains(&b)) { Ok(v.to_owned()) } else { Err(ConfigError::BadHeaderValue(key)) }
}

impl Config {
    pub fn from_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        for (k, v) in props {
            match k {
                "notify" => c.notify = flag("notify", v)?,
                "options" => c.options = flag("options", v)?,
                "crlf" => c.crlf = flag("crlf", v)?,
                "stun" => c.stun = flag("stun", v)?,
                "probes" => c.probes = flag("probes", v)?,
                "domains" => {
                    c.domains = netserv_sip_scan::keepalive::domain_list(v).map(str::to_ascii_lowercase).collect();
                }
                "server" => c.server = Some(header_value("server", v)?),
                "allow" => c.allow = Some(header_value("allow", v)?),
                other => return Err(ConfigError::Unknown(other.to_owned())),
            }
        }
        Ok(c)
    }
}

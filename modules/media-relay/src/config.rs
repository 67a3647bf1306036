//! The relay's settings, from the deployment's properties (SETUP or the
//! admin API). Unknown keys and bad values are refused, naming the key.

use std::collections::BTreeSet;

/// How clients authenticate (several may be on at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AuthScheme {
    /// TURN REST (coturn's `use-auth-secret`): the password is derived from
    /// the username under a shared secret.
    Rest,
    /// Long-term credentials of fixed users: the tenant stores each user's
    /// password as the secret `user.<name>`.
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub realm: String,
    pub auth: BTreeSet<AuthScheme>,
    /// The tenant secrets holding the REST shared secret, newest first
    /// (several during a rotation).
    pub rest_secrets: Vec<String>,
    pub rest_separator: char,
    /// Allocations one username may hold at once; 0: no limit (coturn's
    /// `user-quota` default).
    pub user_quota: u32,
    /// Relayed bytes per second per allocation; 0: only the tenant's total.
    pub max_bps: u64,
    pub default_lifetime_s: u32,
    pub max_lifetime_s: u32,
    pub permission_lifetime_s: u32,
    pub channel_lifetime_s: u32,
    pub nonce_lifetime_s: u64,
    /// 401 answers per second to one source address; beyond it requests
    /// without credentials are dropped (counted).
    pub unauthorized_per_s: u32,
    pub software: String,
    /// Bind channels 0x4000-0x4FFF only (RFC 8656 §12); otherwise also
    /// RFC 5766's 0x5000-0x7FFF, as coturn does and its clients and
    /// libwebrtc need.
    pub strict_channels: bool,
}

impl Default for Config {
    /// coturn's defaults: allocation 600 s (at most 3600), permission 300 s,
    /// channel 600 s, nonce 600 s.
    fn default() -> Self {
        Self {
            realm: "netserv".into(),
            auth: [AuthScheme::Rest].into(),
            rest_secrets: vec!["turn-secret".into()],
            rest_separator: ':',
            user_quota: 0,
            max_bps: 0,
            default_lifetime_s: 600,
            max_lifetime_s: 3600,
            permission_lifetime_s: 300,
            channel_lifetime_s: 600,
            nonce_lifetime_s: crate::credentials::NONCE_LIFETIME_SECS,
            unauthorized_per_s: 100,
            software: "NetServ media-relay".into(),
            strict_channels: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("property `{0}` is not one the media relay knows")]
    Unknown(String),
    #[error("property `{key}`: {why}")]
    Bad { key: String, why: String },
}

fn bad(key: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Bad { key: key.into(), why: why.into() }
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| bad(key, format!("`{v}` is not a number in range")))
}

impl Config {
    pub fn from_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        for (k, v) in props {
            match k {
                "realm" if !v.is_empty() && v.len() <= 127 => c.realm = v.into(),
                "realm" => return Err(bad(k, "must be 1-127 bytes")),
                "auth" => {
                    c.auth = v
                        .split(',')
                        .map(|s| match s.trim() {
                            "rest" => Ok(AuthScheme::Rest),
                            "static" => Ok(AuthScheme::Static),
                            other => Err(bad(k, format!("`{other}` is not `rest` or `static`"))),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "rest_secrets" => {
                    c.rest_secrets = v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
                    if c.rest_secrets.is_empty() {
                        return Err(bad(k, "names no secret"));
                    }
                }
                "rest_separator" => {
                    let mut chars = v.chars();
                    c.rest_separator = match (chars.next(), chars.next()) {
                        (Some(ch), None) => ch,
                        _ => return Err(bad(k, "must be one character")),
                    };
                }
                "user_quota" => c.user_quota = number(k, v)?,
                "max_bps" => c.max_bps = number(k, v)?,
                "default_lifetime_s" => c.default_lifetime_s = number(k, v)?,
                "max_lifetime_s" => c.max_lifetime_s = number(k, v)?,
                "permission_lifetime_s" => c.permission_lifetime_s = number(k, v)?,
                "channel_lifetime_s" => c.channel_lifetime_s = number(k, v)?,
                "nonce_lifetime_s" => c.nonce_lifetime_s = number(k, v)?,
                "unauthorized_per_s" => c.unauthorized_per_s = number(k, v)?,
                "software" => c.software = v.chars().take(127).collect(),
                "strict_channels" => {
                    c.strict_channels = match v {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(k, "must be `true` or `false`")),
                    }
                }
                other => return Err(ConfigError::Unknown(other.into())),
            }
        }
        if c.auth.is_empty() {
            return Err(bad("auth", "names no scheme"));
        }
        for (key, s) in [
            ("default_lifetime_s", c.default_lifetime_s),
            ("permission_lifetime_s", c.permission_lifetime_s),
            ("channel_lifetime_s", c.channel_lifetime_s),
        ] {
            if s == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if c.max_lifetime_s < c.default_lifetime_s {
            return Err(bad("max_lifetime_s", "is below default_lifetime_s"));
        }
        if c.nonce_lifetime_s == 0 {
            return Err(bad("nonce_lifetime_s", "must be at least 1"));
        }
        Ok(c)
    }

    /// The lifetime granted for a requested one (RFC 8656 §7.2): the
    /// default when none (or less) is asked, never more than the maximum.
    pub fn grant_lifetime(&self, requested: Option<u32>) -> u32 {
        requested.unwrap_or(self.default_lifetime_s).clamp(self.default_lifetime_s, self.max_lifetime_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_coturns() {
        let c = Config::from_properties([]).expect("defaults");
        assert_eq!(
            (c.default_lifetime_s, c.max_lifetime_s, c.permission_lifetime_s, c.channel_lifetime_s),
            (600, 3600, 300, 600)
        );
        assert_eq!(c.nonce_lifetime_s, 600);
    }

    #[test]
    fn lifetimes_are_clamped() {
        let c = Config::default();
        assert_eq!(c.grant_lifetime(None), 600);
        assert_eq!(c.grant_lifetime(Some(30)), 600);
        assert_eq!(c.grant_lifetime(Some(1200)), 1200);
        assert_eq!(c.grant_lifetime(Some(86_400)), 3600);
    }

    #[test]
    fn errors_name_the_property() {
        let e = Config::from_properties([("user_quota", "lots")]).expect_err("bad number");
        assert!(e.to_string().contains("`user_quota`"), "{e}");
        let e = Config::from_properties([("auth", "rest,kerberos")]).expect_err("bad scheme");
        assert!(e.to_string().contains("`auth`") && e.to_string().contains("kerberos"), "{e}");
        let e = Config::from_properties([("colour", "blue")]).expect_err("unknown");
        assert!(e.to_string().contains("`colour`"), "{e}");
        let e = Config::from_properties([("max_lifetime_s", "60")]).expect_err("below default");
        assert!(e.to_string().contains("`max_lifetime_s`"), "{e}");
    }

    #[test]
    fn several_schemes_and_secrets() {
        let c = Config::from_properties([("auth", "static, rest"), ("rest_secrets", "new,old")]).expect("ok");
        assert_eq!(c.auth, [AuthScheme::Rest, AuthScheme::Static].into());
        assert_eq!(c.rest_secrets, ["new", "old"]);
    }
}

//! `[tenants.cache]`: where a content provider's edge cache fetches from.
//! The origin is the operator's word, not the module's: a cache module
//! fetches from nowhere else.

use super::{ConfigError, invalid};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    /// `http://host[:port]/`: the tenant's origin.
    origin: String,
    /// Default: 8 MiB, or a quarter of the budget when that is less.
    #[serde(default)]
    max_object_bytes: Option<u64>,
    #[serde(default = "default_timeout_ms")]
    origin_timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// A tenant's cache settings, validated. Its byte budget is `limits.cache_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCache {
    pub origin: url::Url,
    /// Larger bodies pass through, never stored.
    pub max_object_bytes: u64,
    /// For the origin's head, and between its body's chunks.
    pub origin_timeout: Duration,
}

impl RawCache {
    pub(super) fn validate(self, at: &str, budget: u64) -> Result<TenantCache, ConfigError> {
        let origin: url::Url =
            self.origin.parse().map_err(|e| invalid(format!("{at}.origin"), format!("`{}`: {e}", self.origin)))?;
        if origin.scheme() != "http" || origin.host().is_none() {
            return Err(invalid(format!("{at}.origin"), "must be an http:// URL with a host"));
        }
        if !origin.username().is_empty() || origin.password().is_some() || origin.query().is_some() {
            return Err(invalid(format!("{at}.origin"), "must name a scheme, host and port only"));
        }
        let max_object_bytes = self.max_object_bytes.unwrap_or((8 << 20).min(budget / 4));
        if max_object_bytes == 0 || max_object_bytes > budget {
            return Err(invalid(format!("{at}.max_object_bytes"), "must be 1..= the tenant's limits.cache_bytes"));
        }
        if self.origin_timeout_ms == 0 || self.origin_timeout_ms > 300_000 {
            return Err(invalid(format!("{at}.origin_timeout_ms"), "must be 1..=300000"));
        }
        Ok(TenantCache { origin, max_object_bytes, origin_timeout: Duration::from_millis(self.origin_timeout_ms) })
    }
}

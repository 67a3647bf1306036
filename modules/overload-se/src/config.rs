//! Deployment properties, parsed once at `init`.

/// The module's configuration, from the deployment's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `Retry-After` (seconds) on the 503s it sends to clients that are not
    /// RFC 7339 clients themselves (those get none: RFC 7339 §5.10.1).
    pub retry_after: Option<u32>,
    /// Rate control's burst tolerance, in requests at the rate: for initial
    /// (category 1) requests, and for in-dialog and emergency ones, which
    /// the larger tolerance lets through while the first are refused.
    pub burst: u32,
    pub burst_priority: u32,
    /// Insert `oc` / `oc-algo` into the top Via of the requests it passes,
    /// so that an RFC 7339 server reports in-band.
    pub advertise: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { retry_after: None, burst: 4, burst_priority: 64, advertise: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("property `{0}` is not known to the overload-se module")]
    Unknown(String),
    #[error("property `{0}` must be a whole number in {1}")]
    Number(&'static str, &'static str),
    #[error("property `{0}` must be `on` or `off`")]
    NotABool(&'static str),
    #[error("property `burst_priority` must be at least `burst`")]
    PriorityBurst,
}

fn number(
    name: &'static str,
    v: &str,
    range: std::ops::RangeInclusive<u32>,
    text: &'static str,
) -> Result<u32, ConfigError> {
    v.trim().parse::<u32>().ok().filter(|n| range.contains(n)).ok_or(ConfigError::Number(name, text))
}

impl Config {
    pub fn from_properties<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        for (k, v) in props {
            match k {
                "retry_after" => c.retry_after = Some(number("retry_after", v, 0..=86_400, "0..=86400")?),
                "burst" => c.burst = number("burst", v, 0..=10_000, "0..=10000")?,
                "burst_priority" => c.burst_priority = number("burst_priority", v, 0..=100_000, "0..=100000")?,
                "advertise" => {
                    c.advertise = match v.trim() {
                        "on" | "true" | "yes" => true,
                        "off" | "false" | "no" => false,
                        _ => return Err(ConfigError::NotABool("advertise")),
                    }
                }
                other => return Err(ConfigError::Unknown(other.to_owned())),
            }
        }
        if c.burst_priority < c.burst {
            return Err(ConfigError::PriorityBurst);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_bad_ones_are_named() {
        let c = Config::from_properties([("retry_after", "2"), ("burst", "8"), ("advertise", "off")]).expect("valid");
        assert_eq!((c.retry_after, c.burst, c.burst_priority, c.advertise), (Some(2), 8, 64, false));
        assert_eq!(Config::from_properties([("colour", "red")]), Err(ConfigError::Unknown("colour".into())));
        assert_eq!(Config::from_properties([("burst", "-1")]), Err(ConfigError::Number("burst", "0..=10000")));
        assert_eq!(Config::from_properties([("advertise", "maybe")]), Err(ConfigError::NotABool("advertise")));
        assert_eq!(
            Config::from_properties([("burst", "100"), ("burst_priority", "10")]),
            Err(ConfigError::PriorityBurst)
        );
    }
}

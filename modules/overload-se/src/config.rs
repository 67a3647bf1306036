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
    /// What it offers in the top Via of the requests it passes, so that an
    /// RFC 7339 server reports in-band.
    pub advertise: Advertise,
}

/// What the module offers in the top Via of a request it passes (RFC 7339
/// §5.1: `oc` and the algorithms it supports in `oc-algo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advertise {
    /// Leave the Via alone: for a server that does not speak RFC 7339 and
    /// is steered through the feedback API only.
    Off,
    /// `;oc;oc-algo="loss"`: loss, which every RFC 7339 server implements.
    /// The default, because it is also the only list without a comma:
    /// Kamailio 5.6's Via parser rejects a request whose Via holds a comma
    /// inside a quoted parameter value (`oc-algo="loss,rate"`, RFC 7339's
    /// own example `oc-algo="loss,A"`) as a bad header, so offering both
    /// would make such a server drop every request the module passes.
    Loss,
    /// `;oc;oc-algo="loss,rate"`: for RFC 7415 servers that parse it.
    LossAndRate,
}

impl Advertise {
    /// The Via parameters added, with their leading `;`.
    pub fn params(self) -> &'static [u8] {
        match self {
            Self::Off => b"",
            Self::Loss => b";oc;oc-algo=\"loss\"",
            Self::LossAndRate => b";oc;oc-algo=\"loss,rate\"",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self { retry_after: None, burst: 4, burst_priority: 64, advertise: Advertise::Loss }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("property `{0}` is not known to the overload-se module")]
    Unknown(String),
    #[error("property `{0}` must be a whole number in {1}")]
    Number(&'static str, &'static str),
    #[error("property `advertise` must be `off`, `loss` or `loss,rate`")]
    Advertise,
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
                        "off" | "false" | "no" => Advertise::Off,
                        "loss" | "on" | "true" | "yes" => Advertise::Loss,
                        "loss,rate" | "rate,loss" => Advertise::LossAndRate,
                        _ => return Err(ConfigError::Advertise),
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
        assert_eq!((c.retry_after, c.burst, c.burst_priority, c.advertise), (Some(2), 8, 64, Advertise::Off));
        assert_eq!(Config::default().advertise, Advertise::Loss, "the one list without a comma");
        let both = Config::from_properties([("advertise", "loss,rate")]).expect("valid");
        assert_eq!(both.advertise.params(), b";oc;oc-algo=\"loss,rate\"");
        assert_eq!(Config::from_properties([("colour", "red")]), Err(ConfigError::Unknown("colour".into())));
        assert_eq!(Config::from_properties([("burst", "-1")]), Err(ConfigError::Number("burst", "0..=10000")));
        assert_eq!(Config::from_properties([("advertise", "maybe")]), Err(ConfigError::Advertise));
        assert_eq!(
            Config::from_properties([("burst", "100"), ("burst_priority", "10")]),
            Err(ConfigError::PriorityBurst)
        );
    }
}

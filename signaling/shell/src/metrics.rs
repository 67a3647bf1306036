//! The one Prometheus exposition of every NetServ binary, through the
//! `prometheus-client` crate (OpenMetrics text). A scrape copies the live
//! counters into an [`Exposition`] — families of samples with their labels —
//! and renders it; the crate does the format: names, `# HELP` / `# TYPE`,
//! label escaping, the `_total` suffix of counters, `# EOF`.
//!
//! A snapshot per scrape, rather than metrics registered once: the values
//! live where the work is done (atomics on the packet threads, the
//! controller's records), and what a scrape may see depends on who asks.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric as _};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Exposition::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

/// One scrape's metrics.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
}

/// The samples of one family, added in order.
pub struct Samples<'a>(&'a mut Family);

impl Samples<'_> {
    /// Adds a sample. Label values are escaped here (the crate writes them
    /// as given, and some come from tenants: module and counter names).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), escape(v))).collect();
        self.0.samples.push((labels, value.into()));
        self
    }
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter family. `name` without the `_total` suffix: the encoder
    /// adds it to every sample, as OpenMetrics requires.
    pub fn counter(&mut self, name: &str, help: &str) -> Samples<'_> {
        self.family(name, help, Kind::Counter)
    }

    pub fn gauge(&mut self, name: &str, help: &str) -> Samples<'_> {
        self.family(name, help, Kind::Gauge)
    }

    fn family(&mut self, name: &str, help: &str, kind: Kind) -> Samples<'_> {
        self.families.push(Family { name: name.to_owned(), help: help.to_owned(), kind, samples: Vec::new() });
        let last = self.families.len() - 1;
        Samples(&mut self.families[last])
    }

    /// The OpenMetrics text, or an error when the encoder refused a name
    /// or value: a cut-off exposition (no `# EOF`) would make the scraper
    /// reject it anyway, so the caller answers 500 instead.
    pub fn render(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

/// OpenMetrics label-value escaping: backslash, double quote, line feed.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => ConstCounter::<u64>::TYPE,
        Kind::Gauge => ConstGauge::<u64>::TYPE,
    }
}

fn encode_value(
    kind: Kind,
    value: Value,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (Kind::Counter, Value::Int(v)) => ConstCounter::new(v).encode(encoder),
        (Kind::Counter, Value::Float(v)) => ConstCounter::new(v).encode(encoder),
        // OpenMetrics gauges are signed: the encoder refuses a u64 above
        // i64::MAX, which no gauge of ours can honestly reach.
        (Kind::Gauge, Value::Int(v)) => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(encoder),
        (Kind::Gauge, Value::Float(v)) => ConstGauge::new(v).encode(encoder),
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut metric = encoder.encode_descriptor(&f.name, &f.help, None, metric_type(f.kind))?;
            // One sample without labels: `name value`, not `name{} value`.
            if let [(labels, value)] = f.samples.as_slice()
                && labels.is_empty()
            {
                encode_value(f.kind, *value, metric)?;
                continue;
            }
            for (labels, value) in &f.samples {
                encode_value(f.kind, *value, metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_openmetrics() {
        let mut x = Exposition::new();
        x.counter("netserv_things", "Things done.")
            .sample(&[("tenant", "a\"b")], 3u64)
            .sample(&[("tenant", "c")], 4u64)
            .sample(&[("tenant", "x\"} 1\nnetserv_forged_total 9\\")], 5u64);
        x.gauge("netserv_level", "A level.").sample(&[], 1.5);
        x.counter("netserv_none", "Nothing yet.");
        x.gauge("netserv_huge", "Beyond i64.").sample(&[], u64::MAX);
        let text = x.render().expect("renders");
        assert!(text.contains("# HELP netserv_things Things done.\n# TYPE netserv_things counter\n"), "{text}");
        assert!(text.contains("netserv_things_total{tenant=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("netserv_things_total{tenant=\"c\"} 4\n"), "{text}");
        // A tenant-chosen value cannot forge a line of its own.
        assert!(text.contains("netserv_things_total{tenant=\"x\\\"} 1\\nnetserv_forged_total 9\\\\\"} 5\n"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("netserv_forged")), "{text}");
        assert!(text.contains("# TYPE netserv_level gauge\nnetserv_level 1.5\n"), "{text}");
        assert!(text.contains("# TYPE netserv_none counter\n"), "{text}");
        assert!(text.contains("netserv_huge 9223372036854775807\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

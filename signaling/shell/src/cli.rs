//! The preamble every NetServ binary shares: `--log-format` as a typed value,
//! and `tracing` to stderr filtered by `RUST_LOG`.

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The flags every NetServ binary takes (`#[command(flatten)]` them).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// How log lines (on stderr) are written.
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// Installs tracing as these flags say; see [`init_tracing`].
    pub fn init_tracing(&self, default_filter: &str) {
        init_tracing(self.log_format, default_filter);
    }
}

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`
/// (e.g. "info" for daemons, "warn" for a CLI whose output is its answer).
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

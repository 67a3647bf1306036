//! `netserv-appliance`: the edge node's binary.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use netserv_appliance::{config::Config, daemon, try_module};
use netserv_shell::cli::CommonArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "netserv-appliance", version, about = "NetServ edge appliance")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance until SIGTERM (SIGHUP reloads the config).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with modules offline.
    Module {
        #[command(subcommand)]
        cmd: ModuleCmd,
    },
}

#[derive(Subcommand)]
enum ModuleCmd {
    /// Run one UDP packet through a module exactly as the dataplane would.
    Try {
        /// The module (.wasm component).
        module: PathBuf,
        /// A deployment property, `key=value`; repeatable.
        #[arg(long = "prop", value_parser = parse_prop)]
        props: Vec<(String, String)>,
        /// The packet's source (e.g. the phone): ip:port.
        #[arg(long)]
        from: SocketAddr,
        /// The packet's destination (e.g. the SIP server): ip:port.
        #[arg(long)]
        to: SocketAddr,
        /// File holding the UDP payload.
        #[arg(long)]
        payload: PathBuf,
        /// A node's config: run with its runtime policy and `--tenant`'s limits
        /// (default: the built-in defaults).
        #[arg(long, requires = "tenant")]
        config: Option<PathBuf>,
        /// The tenant of `--config` whose limits apply.
        #[arg(long, requires = "config")]
        tenant: Option<String>,
    },
}

fn parse_prop(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("`{s}` is not key=value"))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.common.init_tracing("info");
    let result = match cli.cmd {
        // Two async workers, or one when the node may use a single CPU
        // (`taskset`, a cpuset): two workers time-sharing one CPU hand
        // connections back and forth and add milliseconds to an edge cache's
        // p99 (measured with the `serve` example: p99 1.5–1.9 ms with one,
        // 3.4–122 ms with two, at ~85,000 requests a second).
        Cmd::Run { config } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(2)))
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(daemon::run(config))),
        Cmd::CheckConfig { config } => Config::load(&config)
            .map(|c| {
                println!("{}: ok (node `{}`, {} tenants)", config.display(), c.node_id, c.tenants.len());
            })
            .map_err(anyhow::Error::from),
        Cmd::Module { cmd: ModuleCmd::Try { module, props, from, to, payload, config, tenant } } => config
            .as_deref()
            .map(Config::load)
            .transpose()
            .map_err(anyhow::Error::from)
            .and_then(|cfg| {
                let p = std::fs::read(&payload).map_err(|e| anyhow::anyhow!("reading {}: {e}", payload.display()))?;
                let node = cfg.as_ref().zip(tenant.as_deref());
                try_module::run(&module, &props, from, to, &p, node)
            })
            .map(|r| {
                println!("verdict: {}", r.verdict);
                if let Some((src, dst, bytes)) = &r.reply {
                    println!("reply: {} bytes from {src} to {dst}", bytes.len());
                    println!("{}", try_module::show(bytes));
                }
                if let Some(bytes) = &r.replaced {
                    println!("replaced payload: {} bytes", bytes.len());
                    println!("{}", try_module::show(bytes));
                }
                if r.faults > 0 {
                    println!("faults: {}", r.faults);
                }
                for (k, v) in &r.counters {
                    println!("counter {k} = {v}");
                }
            }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

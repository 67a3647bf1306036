//! `netserv-cdn-director run --config director.toml` | `check-config --config director.toml`

use clap::{Parser, Subcommand};
use netserv_cdn_director::config::Config;
use netserv_shell::cli::CommonArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "netserv-cdn-director",
    version,
    about = "Sends a content provider's clients to its nearest edge cache, deploying one where none is near"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.common.init_tracing("info");
    let (Cmd::Run { config } | Cmd::CheckConfig { config }) = &cli.cmd;
    if let Err(e) = Config::load(config) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if matches!(cli.cmd, Cmd::CheckConfig { .. }) {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(netserv_cdn_director::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `netserv-sip-plugin run --config plugin.toml` | `check-config --config plugin.toml`

use clap::{Parser, Subcommand};
use netserv_shell::cli::CommonArgs;
use netserv_sip_plugin::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "netserv-sip-plugin", version, about = "Deploys NetServ edge modules from a SIP server's own traffic")]
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
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
    drop(cfg);
    match rt.block_on(netserv_sip_plugin::daemon::run(config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

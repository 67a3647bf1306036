//! The cache building block alone, without the appliance or a module: for
//! trying it against an origin and measuring its hit path.
//!
//! `cargo run --release -p netserv-cache --example serve -- 127.0.0.1:8081 http://127.0.0.1:8080/ [budget-bytes] [threads]`

use netserv_cache::{Cache, CacheConfig};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: serve LISTEN ORIGIN-URL [BUDGET-BYTES] [THREADS]");
        std::process::exit(2);
    };
    let budget: u64 = args.next().map_or(Ok(256 << 20), |b| b.parse())?;
    let threads: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let mut cfg = CacheConfig::new(origin.parse()?);
        cfg.budget_bytes = budget;
        let cache = Cache::new(cfg)?;
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("serving {listen}");
        netserv_cache::shell::serve(listener, cache, std::future::pending(), Duration::from_secs(1)).await;
        Ok(())
    })
}

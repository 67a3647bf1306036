//! `netserv-signal`: send NetServ NSLP requests along the path towards an
//! address, signed with the ITSP's key, and print what the appliances on the
//! path answered.
//!
//! ```text
//! netserv-signal keygen --out itsp.key
//! netserv-signal setup  --towards 198.18.1.10 --key itsp.key --user itsp-a \
//!     --module keepalive --url http://198.18.2.20:8080/keepalive.wasm --module-file keepalive.wasm \
//!     --filter-addr 198.18.2.20/32 --filter-port 5060 --ttl 300 --prop server=NetServ
//! netserv-signal probe  --towards 198.18.1.10 --key itsp.key --user itsp-a
//! netserv-signal remove --towards 198.18.1.10 --key itsp.key --user itsp-a --module keepalive
//! ```

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::SigningKey;
use netserv_gist::wire::Mri;
use netserv_nslp::wire::{Request, RequestKind, Response, Status};
use netserv_shell::cli::CommonArgs;
use netserv_shell::client::{self, ClientOptions, Outcome};
use netserv_shell::keys::read_signing_key;
use netserv_shell::net::unix_ms;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "netserv-signal", version, about = "Signal NetServ appliances on the path towards an address")]
struct Cli {
    /// Print the outcome as one JSON object.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install (or refresh) a module on every appliance on the path.
    Setup(Req),
    /// Remove a module from every appliance on the path.
    Remove(Req),
    /// List the appliances on the path, in order, with their modules and load.
    Probe(Req),
    /// Have the far end of the path signal back, installing on the reverse path.
    Trigger(Req),
    /// Send a request saved with `--save` again, byte for byte (appliances
    /// must refuse it as a replay once it has been accepted).
    Resend {
        #[arg(long)]
        towards: IpAddr,
        #[arg(long)]
        request: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        timeout_ms: u64,
    },
    /// Write a new Ed25519 signing key (readable by its owner only) and
    /// print its public key: a tenant's, an ISP's or an appliance's.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// As the ISP: certify an appliance's public key for its node id, so the
    /// ITSPs that trust the ISP's key count what the appliance answers.
    Certify {
        /// The ISP's signing key file.
        #[arg(long)]
        isp_key: PathBuf,
        /// The appliance's `node_id`.
        #[arg(long)]
        node_id: String,
        /// The appliance's public key (64 hex digits, from `keygen`).
        #[arg(long)]
        node_public_key: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct Req {
    /// Where the path leads (e.g. the phone's address).
    #[arg(long)]
    towards: IpAddr,
    /// The tenant's signing key: 64 hex digits (the Ed25519 seed).
    #[arg(long)]
    key: PathBuf,
    /// The tenant name the appliances know the key by.
    #[arg(long)]
    user: String,
    #[arg(long)]
    module: Option<String>,
    /// Where appliances download the module from.
    #[arg(long)]
    url: Option<String>,
    /// The module's sha256 (hex).
    #[arg(long, conflicts_with = "module_file")]
    sha256: Option<String>,
    /// Compute the sha256 from this local copy of the module.
    #[arg(long)]
    module_file: Option<PathBuf>,
    #[arg(long)]
    version: Option<String>,
    /// The traffic to intercept: destination prefix (the ITSP's server).
    #[arg(long)]
    filter_addr: Option<ipnet::IpNet>,
    #[arg(long = "filter-port")]
    filter_ports: Vec<u16>,
    #[arg(long, default_value = "udp")]
    filter_proto: String,
    /// Module property, `key=value`; repeatable.
    #[arg(long = "prop")]
    props: Vec<String>,
    /// Soft-state lifetime in seconds.
    #[arg(long)]
    ttl: Option<u32>,
    /// Only this appliance acts; the others forward.
    #[arg(long)]
    node_id: Option<String>,
    /// Overall wait for the response, in milliseconds.
    #[arg(long, default_value_t = 20_000)]
    timeout_ms: u64,
    /// Query transmissions (T1 = 500 ms, doubling) before concluding that no
    /// appliance is on the path.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Also write the signed request's bytes to this file.
    #[arg(long)]
    save: Option<PathBuf>,
}

fn build(kind: RequestKind, r: &Req) -> anyhow::Result<(Request, SigningKey)> {
    let key = read_signing_key(&r.key)?;
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let id = OsRng.next_u32();
    let mut req = Request::new(kind, id, r.user.clone(), unix_ms(), nonce);
    req.node_id = r.node_id.clone();
    req.module = r.module.clone();
    req.module_url = r.url.clone();
    req.version = r.version.clone();
    let sha = match (&r.sha256, &r.module_file) {
        (Some(h), _) => Some(hex::decode(h).ok().and_then(|v| v.try_into().ok()).context("--sha256: 64 hex digits")?),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            Some(Sha256::digest(&bytes).into())
        }
        (None, None) => None,
    };
    req.sha256 = sha;
    req.filter_addr = r.filter_addr.map(|n| (n.addr(), n.prefix_len()));
    req.filter_ports = r.filter_ports.clone();
    if !r.filter_ports.is_empty() || r.filter_addr.is_some() {
        req.filter_proto = Some(match r.filter_proto.as_str() {
            "udp" => 17,
            "tcp" => 6,
            other => bail!("--filter-proto: `{other}` is not udp or tcp"),
        });
    }
    for p in &r.props {
        let (k, v) = p.split_once('=').with_context(|| format!("--prop `{p}`: expected key=value"))?;
        req.properties.push((k.to_owned(), v.to_owned()));
    }
    req.ttl_secs = r.ttl;
    if kind == RequestKind::Setup && (req.module.is_none() || req.module_url.is_none() || req.sha256.is_none()) {
        bail!("setup needs --module, --url and --sha256 (or --module-file)");
    }
    if kind == RequestKind::Remove && req.module.is_none() {
        bail!("remove needs --module");
    }
    Ok((req, key))
}

fn print_stack(kind: RequestKind, target: IpAddr, r: &Response, elapsed: Duration) {
    let verdict = if r.all_ok() { "all ok" } else { "REFUSED" };
    println!(
        "{} towards {target}: {} appliance(s) on the path, {verdict} ({:.1} ms)",
        kind.as_str(),
        r.stack.len(),
        elapsed.as_secs_f64() * 1e3
    );
    for (i, e) in r.stack.iter().enumerate() {
        let addr = e.address.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!("  {}. {:<16} {:<16} {:<16} {}", i + 1, e.node_id, addr, e.status.as_str(), e.reason);
        if kind == RequestKind::Probe {
            println!("     capabilities: {}", e.capabilities.join(", "));
            println!("     modules: {}", if e.modules.is_empty() { "-".into() } else { e.modules.join(", ") });
            println!(
                "     load: {} active modules, {} packets/s; {} packets answered by the tenant's modules",
                e.active_modules, e.load_pps, e.answered
            );
        }
    }
}

fn stack_json(r: &Response) -> serde_json::Value {
    serde_json::Value::Array(
        r.stack
            .iter()
            .map(|e| {
                serde_json::json!({
                    "node_id": e.node_id, "address": e.address, "status": e.status.as_str(), "reason": e.reason,
                    "capabilities": e.capabilities, "modules": e.modules,
                    "active_modules": e.active_modules, "load_pps": e.load_pps, "answered": e.answered,
                })
            })
            .collect(),
    )
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (kind, r) = match cli.cmd {
        Cmd::Keygen { out } => {
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            netserv_shell::files::write_private(&out, format!("{}\n", hex::encode(seed)).as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            let public = hex::encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
            if cli.json {
                println!("{}", serde_json::json!({ "key_file": out, "public_key": public }));
            } else {
                println!("wrote {}; public key (for the appliances' tenant config):\n{public}", out.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Certify { isp_key, node_id, node_public_key, days, out } => {
            let isp = read_signing_key(&isp_key)?;
            let node_key = netserv_shell::keys::parse_public_key(&node_public_key, "--node-public-key")?;
            let not_after = unix_ms() / 1000 + u64::from(days) * 86_400;
            let cert = netserv_nslp::proof::certify(&isp, &node_id, &node_key, not_after);
            netserv_shell::keys::write_certificate(&out, &node_id, &cert)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "certificate": out, "node_id": node_id, "not_after_unix": not_after })
                );
            } else {
                println!("wrote {} for node {node_id}, valid until unix time {not_after}", out.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Resend { towards, request, timeout_ms } => {
            let bytes = std::fs::read(&request).with_context(|| format!("reading {}", request.display()))?;
            let (kind, id) = netserv_nslp::wire::peek_request(&bytes)
                .with_context(|| format!("{} does not hold a NetServ NSLP request", request.display()))?;
            let opts = ClientOptions { timeout: Duration::from_millis(timeout_ms), ..ClientOptions::default() };
            // Sent on the flow towards `towards`: verifies only where that is
            // the flow the request was signed for.
            let flow = client::flow_toward(towards, &opts).with_context(|| format!("no route towards {towards}"))?;
            return send(cli.json, kind, &flow, id, bytes, &opts).await;
        }
        Cmd::Setup(r) => (RequestKind::Setup, r),
        Cmd::Remove(r) => (RequestKind::Remove, r),
        Cmd::Probe(r) => (RequestKind::Probe, r),
        Cmd::Trigger(r) => (RequestKind::Trigger, r),
    };
    let (mut req, key) = build(kind, &r)?;
    let opts = ClientOptions {
        query_attempts: r.attempts,
        timeout: Duration::from_millis(r.timeout_ms),
        ..ClientOptions::default()
    };
    let flow = client::flow_toward(r.towards, &opts).with_context(|| format!("no route towards {}", r.towards))?;
    netserv_nslp::sign::sign(&mut req, &flow, &key).context("signing the request")?;
    let bytes = req.encode();
    if let Some(path) = &r.save {
        std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    send(cli.json, kind, &flow, req.id, bytes, &opts).await
}

async fn send(
    json: bool,
    kind: RequestKind,
    flow: &Mri,
    id: u32,
    bytes: Vec<u8>,
    opts: &ClientOptions,
) -> anyhow::Result<ExitCode> {
    let towards = flow.query_target();
    let start = Instant::now();
    let outcome = client::request(flow, id, bytes, opts).await;
    let elapsed = start.elapsed();
    let ms = (elapsed.as_secs_f64() * 1e4).round() / 10.0;
    match outcome {
        Ok(Outcome::Response(resp)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "request": kind.as_str(), "towards": towards, "ok": resp.all_ok(),
                        "elapsed_ms": ms, "stack": stack_json(&resp) })
                );
            } else {
                print_stack(kind, towards, &resp, elapsed);
            }
            let refused = resp.stack.iter().any(|e| e.status != Status::Ok);
            Ok(if refused { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Ok(Outcome::NoAppliance { icmp }) => {
            let why = if icmp { "the target answered ICMP unreachable" } else { "queries went unanswered" };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "request": kind.as_str(), "towards": towards, "ok": false,
                        "elapsed_ms": ms, "stack": [], "no_appliance": why })
                );
            } else {
                println!("{} towards {}: no NetServ appliance on the path ({why})", kind.as_str(), towards);
            }
            Ok(ExitCode::from(3))
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "request": kind.as_str(), "towards": towards, "ok": false, "error": e.to_string() })
                );
            } else {
                eprintln!("netserv-signal: {e}");
            }
            Ok(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Its answer goes to stdout; only warnings to stderr unless RUST_LOG says.
    cli.common.init_tracing("warn");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netserv-signal: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netserv-signal: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! The plugin daemon, the thin I/O shell around [`crate::policy`]: a UDP
//! socket for HEP from Kamailio, signaling through `netserv-signal`'s client,
//! the registry file, and an HTTP server for status, metrics and the module
//! file. Kamailio never waits on any of it: HEP is fire-and-forget UDP.

use crate::config::Config;
use crate::hep;
use crate::observe::{Observation, classify};
use crate::policy::{Action, Hop, Outcome, Policy, Registry};
use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ed25519_dalek::SigningKey;
use netserv_nslp::wire::{Request, RequestKind, Status};
use netserv_shell::client::{self, ClientOptions};
use netserv_shell::metrics::{CONTENT_TYPE, Exposition};
use netserv_shell::net::unix_ms as now_ms;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

struct Signer {
    cfg: Config,
    key: SigningKey,
    sha256: [u8; 32],
    url: String,
    opts: ClientOptions,
}

impl Signer {
    fn request(&self, kind: RequestKind) -> Request {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let mut r = Request::new(kind, OsRng.next_u32(), self.cfg.tenant.clone(), now_ms(), nonce);
        r.module = Some(self.cfg.module.name.clone());
        if kind == RequestKind::Setup {
            r.module_url = Some(self.url.clone());
            r.sha256 = Some(self.sha256);
            r.filter_proto = Some(17);
            r.filter_ports = vec![self.cfg.server.port()];
            r.filter_addr = Some((self.cfg.server.ip(), if self.cfg.server.is_ipv4() { 32 } else { 128 }));
            r.properties = self.cfg.module.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            r.ttl_secs = Some(self.cfg.policy.ttl_secs);
        }
        if kind == RequestKind::Probe {
            r.module = None;
        }
        netserv_nslp::sign::sign(&mut r, &self.key);
        r
    }

    /// Carries out one action and reports the stack (None on any failure).
    async fn run(&self, action: Action) -> Outcome {
        let (kind, target) = match &action {
            Action::Probe { phone } => (RequestKind::Probe, *phone),
            Action::Deploy { phone } => (RequestKind::Setup, *phone),
            Action::Refresh { towards, .. } => (RequestKind::Setup, *towards),
            Action::Remove { towards, .. } => (RequestKind::Remove, *towards),
        };
        let req = self.request(kind);
        let stack = match client::request(target, req.id, req.encode(), &self.opts).await {
            Ok(client::Outcome::Response(r)) => {
                let refused: Vec<_> = r.stack.iter().filter(|e| e.status != Status::Ok).collect();
                if !refused.is_empty() {
                    tracing::warn!(request = kind.as_str(), %target, refused = ?refused.iter().map(|e| (&e.node_id, e.status.as_str(), &e.reason)).collect::<Vec<_>>(), "appliances refused");
                }
                Some(
                    r.stack
                        .into_iter()
                        .map(|e| Hop {
                            ok: e.status == Status::Ok
                                || (kind == RequestKind::Remove && e.status == Status::NotInstalled),
                            node_id: e.node_id,
                            address: e.address,
                            modules: e.modules,
                            answered: e.answered,
                        })
                        .collect(),
                )
            }
            Ok(client::Outcome::NoAppliance { .. }) => {
                tracing::info!(request = kind.as_str(), %target, "no NetServ appliance on the path");
                None
            }
            Err(e) => {
                tracing::warn!(request = kind.as_str(), %target, error = %e, "signaling failed");
                None
            }
        };
        Outcome { action, stack }
    }
}

#[derive(Clone)]
struct Http {
    registry: watch::Receiver<Registry>,
    module: watch::Receiver<Arc<Vec<u8>>>,
    module_file: String,
}

async fn status(State(s): State<Http>) -> impl IntoResponse {
    let r = s.registry.borrow().clone();
    axum::Json(serde_json::json!({
        "counters": r.counters,
        "appliances": r.deployments.values().map(|d| serde_json::json!({
            "node_id": d.appliance, "address": d.address, "phones": d.phones,
            "expires_in_s": d.expires_ms.saturating_sub(now_ms()) / 1000, "refreshes": d.refreshes, "keepalives_offloaded": d.answered,
        })).collect::<Vec<_>>(),
        "phones": r.phones,
    }))
}

async fn metrics(State(s): State<Http>) -> impl IntoResponse {
    let r = s.registry.borrow().clone();
    let c = r.counters;
    let served = r.phones.values().filter(|p| p.appliance.is_some()).count();
    let mut x = Exposition::new();
    for (counter, name, help, v) in [
        (
            true,
            "netserv_plugin_keepalives_at_server",
            "Keep-alives that reached the SIP server (mirrored by Kamailio).",
            c.keepalives_seen,
        ),
        (
            false,
            "netserv_plugin_keepalives_offloaded",
            "Keep-alives the serving appliances answered for the server, as of the last signaling exchange with each.",
            r.deployments.values().map(|d| d.answered).sum::<u64>(),
        ),
        (true, "netserv_plugin_registers", "REGISTERs seen.", c.registers_seen),
        (true, "netserv_plugin_deployments", "Modules deployed towards phones (SETUP).", c.deployments),
        (true, "netserv_plugin_joined", "Phones that joined an existing deployment (learned from PROBE).", c.joined),
        (true, "netserv_plugin_refreshes", "Deployments refreshed before their TTL.", c.refreshes),
        (true, "netserv_plugin_removals", "Deployments removed (REMOVE) when their phones went idle.", c.removals),
        (true, "netserv_plugin_expiries", "Deployments left to expire.", c.expiries),
        (true, "netserv_plugin_failures", "Signaling that failed or was refused.", c.failures),
        (
            false,
            "netserv_plugin_appliances_known",
            "Appliances serving this ITSP's phones.",
            r.deployments.len() as u64,
        ),
        (false, "netserv_plugin_phones", "Phones known.", r.phones.len() as u64),
        (false, "netserv_plugin_phones_served", "Phones whose keep-alives are answered at the edge.", served as u64),
    ] {
        let mut f = if counter { x.counter(name, help) } else { x.gauge(name, help) };
        f.sample(&[], v);
    }
    match x.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => {
            tracing::error!("the metrics exposition did not encode");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn module_file(State(s): State<Http>, Path(file): Path<String>) -> impl IntoResponse {
    if file == s.module_file {
        let bytes = s.module.borrow().as_ref().clone();
        ([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn save(path: &std::path::Path, r: &Registry) {
    let result = serde_json::to_vec_pretty(r)
        .map_err(std::io::Error::other)
        .and_then(|b| netserv_shell::files::write_atomically(path, &b));
    if let Err(e) = result {
        tracing::error!(error = %e, path = %path.display(), "could not save the registry");
    }
}

/// The signing key, the module bytes and what is signed about them, from the
/// config (at start-up and on SIGHUP).
fn make_signer(cfg: &Config) -> anyhow::Result<(Signer, Arc<Vec<u8>>)> {
    let key = netserv_shell::keys::read_signing_key(&cfg.key_file).context("key_file")?;
    let module_bytes = std::fs::read(&cfg.module.file)
        .with_context(|| format!("reading module.file {}", cfg.module.file.display()))?;
    let signer = Signer {
        key,
        sha256: Sha256::digest(&module_bytes).into(),
        url: cfg.module_url(),
        opts: ClientOptions {
            node_id: format!("plugin-{}", cfg.tenant),
            query_attempts: cfg.signaling.query_attempts,
            timeout: Duration::from_millis(cfg.signaling.timeout_ms),
            ..ClientOptions::default()
        },
        cfg: cfg.clone(),
    };
    Ok((signer, Arc::new(module_bytes)))
}

/// Runs until SIGTERM. SIGHUP re-reads `config_path`: the policy, the key,
/// the module and its properties change; the listening addresses and the
/// registry file stay (a bad file keeps the running config).
pub async fn run(config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    let (signer, module_bytes) = make_signer(&cfg)?;
    let mut signer = Arc::new(signer);
    let (module_tx, module_rx) = watch::channel(module_bytes);
    let registry: Registry = match std::fs::read(&cfg.registry) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("registry {} is corrupt", cfg.registry.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
        Err(e) => return Err(e).with_context(|| format!("reading registry {}", cfg.registry.display())),
    };
    let mut policy = Policy::new(cfg.policy.clone(), &cfg.tenant, &cfg.module.name, registry);
    let (reg_tx, reg_rx) = watch::channel(policy.registry.clone());

    let hep_sock = tokio::net::UdpSocket::bind(cfg.hep_listen)
        .await
        .with_context(|| format!("binding hep_listen {}", cfg.hep_listen))?;
    let http = Http { registry: reg_rx, module: module_rx, module_file: format!("{}.wasm", cfg.module.name) };
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/modules/{file}", get(module_file))
        .with_state(http);
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("binding http_listen {}", cfg.http_listen))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(hep = %cfg.hep_listen, http = %cfg.http_listen, server = %cfg.server, module_url = %signer.url, "plugin running");

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Outcome>();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = vec![0u8; 65_536];
    let mut keepalives = cfg.keepalive_rule();
    loop {
        tokio::select! {
            r = hep_sock.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                match hep::decode(buf.get(..n).unwrap_or_default()) {
                    Ok(h) => match classify(&h, &keepalives) {
                        Observation::KeepAlive { phone } => policy.on_keepalive(now_ms(), phone.ip()),
                        Observation::Register { phone, expires } => policy.on_register(now_ms(), phone.ip(), expires),
                        Observation::Other => {}
                    },
                    Err(e) => tracing::debug!(error = %e, "not a HEP3 datagram"),
                }
            }
            Some(o) = out_rx.recv() => policy.on_outcome(now_ms(), o),
            _ = tick.tick() => policy.handle_timeout(now_ms()),
            _ = hup.recv() => {
                match Config::load(&config_path).map_err(anyhow::Error::from).and_then(|c| make_signer(&c).map(|s| (c, s))) {
                    Ok((c, (new_signer, bytes))) => {
                        policy.set_config(c.policy.clone());
                        keepalives = c.keepalive_rule();
                        signer = Arc::new(new_signer);
                        let _ = module_tx.send(bytes);
                        tracing::info!(module_url = %signer.url, "configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "configuration reload failed; keeping the running one"),
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: saving the registry and stopping");
                save(&cfg.registry, &policy.registry);
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                save(&cfg.registry, &policy.registry);
                return Ok(());
            }
        }
        while let Some(action) = policy.poll_action() {
            tracing::info!(?action, "signaling");
            let (s, tx) = (signer.clone(), out_tx.clone());
            tokio::spawn(async move {
                let _ = tx.send(s.run(action).await);
            });
        }
        if policy.dirty {
            policy.dirty = false;
            save(&cfg.registry, &policy.registry);
            let _ = reg_tx.send(policy.registry.clone());
        }
    }
}

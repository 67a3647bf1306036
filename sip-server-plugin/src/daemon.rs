//! The plugin daemon, the thin I/O shell around [`crate::policy`]: a UDP
//! socket for HEP from Kamailio, signaling through `netserv-signal`'s client,
//! the registry file, and an HTTP server for status, metrics and the module
//! file. Kamailio never waits on any of it: HEP is fire-and-forget UDP.

use crate::config::Config;
use crate::hep;
use crate::observe::{Observation, classify};
use crate::overload::shell::{Feedback, Sample};
use crate::overload::{Action as OcAction, Monitor};
use crate::policy::{Action, Hop, Outcome, Policy, Registry};
use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ed25519_dalek::{SigningKey, VerifyingKey};
use netserv_gist::wire::Mri;
use netserv_nslp::wire::{Request, RequestKind, Status};
use netserv_shell::client::{self, ClientOptions};
use netserv_shell::metrics::{CONTENT_TYPE, Exposition};
use netserv_shell::net::unix_ms as now_ms;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What a signer deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deploys {
    /// The keepalive module, filtering the SIP server's traffic.
    Keepalive,
    /// The media relay, a server module listening on the relay port.
    Relay,
    /// The overload-control sending entity, filtering the SIP server's traffic.
    Overload,
}

struct Signer {
    cfg: Config,
    key: SigningKey,
    /// The ISP keys whose certified appliances' answers count.
    trusted: Arc<Vec<VerifyingKey>>,
    sha256: [u8; 32],
    url: String,
    opts: ClientOptions,
    deploys: Deploys,
}

impl Signer {
    /// A request of `kind`, signed for `flow` (the MRI it travels on).
    fn request(&self, kind: RequestKind, flow: &Mri) -> Result<Request, netserv_nslp::sign::VerifyError> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let mut r = Request::new(kind, OsRng.next_u32(), self.cfg.tenant.clone(), now_ms(), nonce);
        let relay = self.cfg.relay.as_ref().filter(|_| self.deploys == Deploys::Relay);
        let overload = self.cfg.overload.as_ref().filter(|_| self.deploys == Deploys::Overload);
        r.module = Some(match (relay, overload) {
            (Some(c), _) => c.name.clone(),
            (None, Some(o)) => o.name.clone(),
            (None, None) => self.cfg.module.name.clone(),
        });
        if kind == RequestKind::Setup {
            r.module_url = Some(self.url.clone());
            r.sha256 = Some(self.sha256);
            r.filter_proto = Some(17);
            r.ttl_secs = Some(self.cfg.policy.ttl_secs);
            match relay {
                // A server module: no filter-addr, its ports are its listeners.
                Some(c) => {
                    r.filter_ports = vec![c.port];
                    r.properties = c.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                }
                None => {
                    r.filter_ports = vec![self.cfg.server.port()];
                    r.filter_addr = Some((self.cfg.server.ip(), if self.cfg.server.is_ipv4() { 32 } else { 128 }));
                    r.properties = match overload {
                        Some(o) => o.module_properties(),
                        None => self.cfg.module.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    };
                }
            }
        }
        if kind == RequestKind::Probe {
            r.module = None;
        }
        netserv_nslp::sign::sign(&mut r, flow, &self.key)?;
        Ok(r)
    }

    /// Carries out one action and reports the stack (None on any failure).
    async fn run(&self, action: Action) -> Outcome {
        let (kind, target) = match &action {
            Action::Probe { phone } => (RequestKind::Probe, *phone),
            Action::Deploy { phone } => (RequestKind::Setup, *phone),
            Action::Refresh { towards, .. } => (RequestKind::Setup, *towards),
            Action::Remove { towards, .. } => (RequestKind::Remove, *towards),
        };
        let signed = client::flow_toward(target, &self.opts)
            .map_err(|e| e.to_string())
            .and_then(|flow| Ok((self.request(kind, &flow).map_err(|e| e.to_string())?, flow)));
        let (req, flow) = match signed {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(request = kind.as_str(), %target, %error, "no flow to sign the request for");
                return Outcome { action, stack: None };
            }
        };
        let stack = match client::request(&flow, req.id, req.encode(), &self.opts).await {
            Ok(client::Outcome::Response(r)) => {
                let refused: Vec<_> = r.stack.iter().filter(|e| e.status != Status::Ok).collect();
                if !refused.is_empty() {
                    tracing::warn!(request = kind.as_str(), %target, refused = ?refused.iter().map(|e| (&e.node_id, e.status.as_str(), &e.reason)).collect::<Vec<_>>(), "appliances refused");
                }
                let now = now_ms() / 1000;
                // Only certified appliances' entries on the path the request
                // took make the stack the policy sees (`verified_path`).
                let first = netserv_shell::net::local_toward(target).ok();
                let (path, dropped) = client::verified_path(r.stack, &req.nonce, &self.trusted, now, first);
                UNVERIFIED.fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
                Some(
                    path.into_iter()
                        .map(|e| Hop {
                            ok: e.status == Status::Ok
                                || (kind == RequestKind::Remove && e.status == Status::NotInstalled),
                            // A relay is reached where the appliance's server
                            // modules listen, which it advertises.
                            address: match self.deploys {
                                Deploys::Relay => client::server_address(&e.capabilities).or(e.address),
                                Deploys::Keepalive | Deploys::Overload => e.address,
                            },
                            feedback: e.capabilities.iter().find_map(|c| c.strip_prefix("feedback=")?.parse().ok()),
                            node_id: e.node_id,
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

/// Module files the plugin serves, by file name.
type ModuleFiles = Arc<Vec<(String, Vec<u8>)>>;

#[derive(Clone)]
struct Http {
    registry: watch::Receiver<Arc<Registry>>,
    relay_registry: watch::Receiver<Arc<Registry>>,
    /// Module files served by name (`keepalive.wasm`, `relay.wasm`).
    modules: watch::Receiver<ModuleFiles>,
    config: watch::Receiver<Arc<Config>>,
    /// Overload control's state (null without `[overload]`).
    overload: watch::Receiver<serde_json::Value>,
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
        "relays": s.relay_registry.borrow().deployments.values().map(|d| serde_json::json!({
            "node_id": d.appliance, "address": d.address, "phones": d.phones,
            "expires_in_s": d.expires_ms.saturating_sub(now_ms()) / 1000, "refreshes": d.refreshes,
        })).collect::<Vec<_>>(),
        "relay_users": s.relay_registry.borrow().users.len(),
        "overload": s.overload.borrow().clone(),
    }))
}

/// HEP datagrams from senders not allowed to mirror (`hep_allow`).
static HEP_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Response entries not signed by an appliance a trusted ISP certified.
static UNVERIFIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
            true,
            "netserv_plugin_phones_evicted",
            "Unserved phones forgotten to keep the registry within max_phones.",
            c.phones_evicted,
        ),
        (
            true,
            "netserv_plugin_phones_refused",
            "New phones not taken in: the registry was full of served ones.",
            c.phones_refused,
        ),
        (
            false,
            "netserv_plugin_appliances_known",
            "Appliances serving this ITSP's phones.",
            r.deployments.len() as u64,
        ),
        (false, "netserv_plugin_phones", "Phones known.", r.phones.len() as u64),
        (false, "netserv_plugin_phones_served", "Phones whose keep-alives are answered at the edge.", served as u64),
        (
            true,
            "netserv_plugin_hep_refused",
            "HEP datagrams dropped because their sender is not the SIP server, loopback or in hep_allow.",
            HEP_REFUSED.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            true,
            "netserv_plugin_registry_saves",
            "Registry files written (whole, fsync'd): at most one per 500 ms tick, whatever the keep-alive rate.",
            REGISTRY_SAVES.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            true,
            "netserv_plugin_registry_bytes_written",
            "Bytes of registry files written.",
            REGISTRY_BYTES.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            true,
            "netserv_plugin_unverified_entries",
            "Answers in response stacks not signed by an appliance a trusted ISP certified: hints, never counted.",
            UNVERIFIED.load(std::sync::atomic::Ordering::Relaxed),
        ),
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
    let modules = s.modules.borrow().clone();
    match modules.iter().find(|(name, _)| *name == file) {
        Some((_, bytes)) => ([(header::CONTENT_TYPE, "application/wasm")], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct TurnQuery {
    service: Option<String>,
    username: Option<String>,
}

/// `GET /turn?service=turn&username=<user>`: short-lived TURN REST
/// credentials (draft-uberti-behave-turn-rest) naming the relay at the
/// edge nearest the user's phone, or the ITSP's own relays when none
/// serves it.
async fn turn(
    State(s): State<Http>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<TurnQuery>,
) -> impl IntoResponse {
    let cfg = s.config.borrow().clone();
    let bad = |why: &str| (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": why }))).into_response();
    let Some(relay) = cfg.relay.as_ref() else {
        return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": "this plugin deploys no relay" })))
            .into_response();
    };
    if let Some(token) = &relay.turn_token {
        use subtle::ConstantTimeEq as _;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "a valid bearer token is required" })),
            )
                .into_response();
        }
    }
    if q.service.as_deref().is_some_and(|v| v != "turn") {
        return bad("`service` must be `turn`");
    }
    let Some(user) =
        q.username.filter(|u| crate::observe::uri_user(format!("sip:{u}@x").as_bytes()).as_deref() == Some(u))
    else {
        return bad("`username` must be 1-64 characters of a SIP user part");
    };
    let edge = s.relay_registry.borrow().serving(&user).and_then(|d| d.address);
    let uris: Vec<String> = match edge {
        Some(ip) => {
            let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
            vec![format!("turn:{host}:{}?transport=udp", relay.port)]
        }
        None => relay.fallback_uris.clone(),
    };
    if uris.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "error": "no relay serves this user" })),
        )
            .into_response();
    }
    let expiry = now_ms() / 1000 + u64::from(relay.credential_ttl_secs);
    let username = format!("{expiry}:{user}");
    let password = netserv_media_relay::credentials::rest_password(relay.shared_secret.as_bytes(), &username);
    axum::Json(serde_json::json!({
        "username": username,
        "password": password,
        "ttl": relay.credential_ttl_secs,
        "uris": uris,
        "edge": edge.is_some(),
    }))
    .into_response()
}

/// Registry saves (each a whole file, written and fsync'd) and their bytes.
static REGISTRY_SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static REGISTRY_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn save(path: &std::path::Path, r: &Registry) {
    let result = serde_json::to_vec(r).map_err(std::io::Error::other).and_then(|b| {
        netserv_shell::files::write_atomically(path, &b)?;
        REGISTRY_SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        REGISTRY_BYTES.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        tracing::error!(error = %e, path = %path.display(), "could not save the registry");
    }
}

/// The signing key, the module bytes and what is signed about them, from the
/// config (at start-up and on SIGHUP): the keepalive module's signer, and
/// the relay's when the config has a `[relay]`.
fn make_signers(cfg: &Config) -> anyhow::Result<Signers> {
    let key = netserv_shell::keys::read_signing_key(&cfg.key_file).context("key_file")?;
    let trusted = cfg
        .signaling
        .trusted_isp_keys
        .iter()
        .enumerate()
        .map(|(i, k)| netserv_shell::keys::parse_public_key(k, &format!("signaling.trusted_isp_keys[{i}]")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if trusted.is_empty() {
        tracing::warn!(
            "signaling.trusted_isp_keys is empty: no appliance's answer will count, and nothing will be deployed"
        );
    }
    let trusted = Arc::new(trusted);
    let opts = ClientOptions {
        node_id: format!("plugin-{}", cfg.tenant),
        query_attempts: cfg.signaling.query_attempts,
        timeout: Duration::from_millis(cfg.signaling.timeout_ms),
        ..ClientOptions::default()
    };
    let module_bytes = std::fs::read(&cfg.module.file)
        .with_context(|| format!("reading module.file {}", cfg.module.file.display()))?;
    let keepalive = Signer {
        key: key.clone(),
        trusted: trusted.clone(),
        sha256: Sha256::digest(&module_bytes).into(),
        url: cfg.module_url(),
        opts: opts.clone(),
        cfg: cfg.clone(),
        deploys: Deploys::Keepalive,
    };
    let mut files = vec![(format!("{}.wasm", cfg.module.name), module_bytes)];
    let relay = match &cfg.relay {
        None => None,
        Some(r) => {
            let bytes = std::fs::read(&r.file).with_context(|| format!("reading relay.file {}", r.file.display()))?;
            let signer = Signer {
                key,
                trusted: trusted.clone(),
                sha256: Sha256::digest(&bytes).into(),
                url: cfg.relay_url().unwrap_or_default(),
                opts,
                cfg: cfg.clone(),
                deploys: Deploys::Relay,
            };
            files.push((format!("{}.wasm", r.name), bytes));
            Some(Arc::new(signer))
        }
    };
    let overload = match &cfg.overload {
        None => None,
        Some(o) => {
            let bytes =
                std::fs::read(&o.file).with_context(|| format!("reading overload.file {}", o.file.display()))?;
            let signer = Signer {
                key: netserv_shell::keys::read_signing_key(&cfg.key_file).context("key_file")?,
                trusted,
                sha256: Sha256::digest(&bytes).into(),
                url: cfg.overload_url().unwrap_or_default(),
                opts: keepalive.opts.clone(),
                cfg: cfg.clone(),
                deploys: Deploys::Overload,
            };
            files.push((format!("{}.wasm", o.name), bytes));
            Some(Arc::new(signer))
        }
    };
    Ok(Signers { keepalive: Arc::new(keepalive), relay, overload, files: Arc::new(files) })
}

struct Signers {
    keepalive: Arc<Signer>,
    relay: Option<Arc<Signer>>,
    overload: Option<Arc<Signer>>,
    files: ModuleFiles,
}

fn load_registry(path: &std::path::Path) -> anyhow::Result<Registry> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("registry {} is corrupt", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(e) => Err(e).with_context(|| format!("reading registry {}", path.display())),
    }
}

/// Runs until SIGTERM. SIGHUP re-reads `config_path`: the policy, the key,
/// the modules and their properties change; the listening addresses and the
/// registry files stay (a bad file keeps the running config).
pub async fn run(config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    let mut signers = make_signers(&cfg)?;
    let (modules_tx, modules_rx) = watch::channel(signers.files.clone());
    let (config_tx, config_rx) = watch::channel(Arc::new(cfg.clone()));
    let mut policy = Policy::new(cfg.policy.clone(), &cfg.tenant, &cfg.module.name, load_registry(&cfg.registry)?);
    // The relay's deployments are a policy of their own: PROBE / SETUP on a
    // phone's REGISTER, refreshed while it stays registered.
    let mut relay_policy = match &cfg.relay {
        Some(r) => Some(Policy::new(cfg.policy.clone(), &cfg.tenant, &r.name, load_registry(&r.registry)?)),
        None => None,
    };
    // Overload control: the monitor, its samples, and the appliances' feedback API.
    // Report sequence numbers start at the time, in RFC 7339's `oc-seq`
    // units (10^-5 s), and rise by one a report: an entity that stayed
    // deployed across a restart of the plugin takes only rising ones.
    let seq_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 100_000 + u64::from(d.subsec_micros() / 10));
    let mut overload = cfg.overload.as_ref().map(|o| Monitor::new(o.monitor(&cfg.policy)).with_seq(seq_start));
    let (sample_tx, mut sample_rx) = mpsc::channel::<Sample>(1024);
    let feedback = match &cfg.overload {
        Some(o) => {
            let interval = Duration::from_millis(u64::from(o.interval_ms));
            tokio::spawn(crate::overload::shell::poll_server(o.rpc_socket.clone(), interval, sample_tx.clone()));
            tokio::spawn(crate::overload::shell::poll_socket(cfg.server, interval, sample_tx.clone()));
            let http = reqwest::Client::builder().timeout(interval * 4).build().context("the HTTP client")?;
            Some(Feedback {
                http,
                tenant: cfg.tenant.clone(),
                module: o.name.clone(),
                token: o.appliance_token.clone(),
                server: cfg.server,
            })
        }
        None => None,
    };
    let mut oc_tick =
        tokio::time::interval(Duration::from_millis(cfg.overload.as_ref().map_or(1000, |o| u64::from(o.interval_ms))));
    let (oc_tx, oc_rx) = watch::channel(serde_json::Value::Null);
    let (reg_tx, reg_rx) = watch::channel(Arc::new(policy.registry.clone()));
    let (relay_reg_tx, relay_reg_rx) =
        watch::channel(Arc::new(relay_policy.as_ref().map(|p| p.registry.clone()).unwrap_or_default()));

    let hep_sock = tokio::net::UdpSocket::bind(cfg.hep_listen)
        .await
        .with_context(|| format!("binding hep_listen {}", cfg.hep_listen))?;
    let http = Http {
        registry: reg_rx,
        relay_registry: relay_reg_rx,
        modules: modules_rx,
        config: config_rx,
        overload: oc_rx,
    };
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/modules/{file}", get(module_file))
        .route("/turn", get(turn))
        .with_state(http);
    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("binding http_listen {}", cfg.http_listen))?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(hep = %cfg.hep_listen, http = %cfg.http_listen, server = %cfg.server, module_url = %signers.keepalive.url, relay = ?cfg.relay_url(), "plugin running");
    if cfg.relay.as_ref().is_some_and(|r| r.turn_token.is_none()) {
        tracing::warn!(http = %cfg.http_listen, "relay.turn_token is not set: anyone who reaches http_listen may get TURN credentials");
    }

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(Deploys, Outcome)>();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = vec![0u8; 65_536];
    let mut keepalives = cfg.keepalive_rule();
    let mut saver = Saver::new(cfg.registry.clone());
    // Who may send HEP, as the running config says (SIGHUP changes it).
    let mut hep_rule = Arc::new(cfg.clone());
    let mut relay_saver = cfg.relay.as_ref().map(|r| Saver::new(r.registry.clone()));
    loop {
        tokio::select! {
            r = hep_sock.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if !hep_rule.hep_allowed(from.ip()) {
                    if HEP_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                        tracing::warn!(%from, "HEP from a sender not in hep_allow: dropped (counted in netserv_plugin_hep_refused)");
                    }
                    continue;
                }
                match hep::decode(buf.get(..n).unwrap_or_default()) {
                    Ok(h) => match classify(&h, &keepalives) {
                        Observation::KeepAlive { phone } => policy.on_keepalive(now_ms(), phone.ip()),
                        Observation::Register { phone, expires, user } => {
                            policy.on_register(now_ms(), phone.ip(), expires, user.as_deref());
                            if let Some(rp) = relay_policy.as_mut() {
                                rp.on_register(now_ms(), phone.ip(), expires, user.as_deref());
                                if let Some(u) = &user {
                                    rp.on_user(u, phone.ip());
                                }
                                if expires > 0 {
                                    rp.want(now_ms(), phone.ip());
                                }
                            }
                        }
                        Observation::Invite { source } => {
                            if let Some(m) = overload.as_mut() {
                                m.on_request_source(now_ms(), source.ip());
                            }
                        }
                        Observation::Other => {}
                    },
                    Err(e) => tracing::debug!(error = %e, "not a HEP3 datagram"),
                }
            }
            Some((which, o)) = out_rx.recv() => match (which, relay_policy.as_mut()) {
                (Deploys::Relay, Some(rp)) => rp.on_outcome(now_ms(), o),
                (Deploys::Relay, None) => {}
                (Deploys::Keepalive, _) => policy.on_outcome(now_ms(), o),
                (Deploys::Overload, _) => {
                    if let (Some(m), Action::Deploy { phone }) = (overload.as_mut(), &o.action) {
                        let at: Vec<_> = o.stack.unwrap_or_default().into_iter()
                            .filter(|h| h.ok)
                            .filter_map(|h| match h.feedback {
                                Some(api) => Some((h.node_id, api)),
                                None => {
                                    tracing::warn!(node = %h.node_id, "overload control: the appliance advertises no feedback API ([api] advertise); it cannot be steered");
                                    None
                                }
                            })
                            .collect();
                        tracing::info!(towards = %phone, appliances = ?at, "overload control: sending entities deployed");
                        m.on_deployed(*phone, at);
                    }
                }
            },
            Some(s) = sample_rx.recv() => {
                if let Some(m) = overload.as_mut() {
                    match s {
                        Sample::Server(n) => m.on_server(now_ms(), n),
                        Sample::Socket(s) => m.on_socket(s.rx_queue, s.drops),
                        Sample::Edge(node, counts) => m.on_edge_counts(now_ms(), &node, counts),
                    }
                }
            }
            _ = oc_tick.tick() => {
                if let Some(m) = overload.as_mut() {
                    m.tick(now_ms());
                    let _ = oc_tx.send(serde_json::json!({
                        "state": m.state, "server_rate": m.server_rate, "offered": m.offered(),
                        "queue_bytes": m.queue, "queue_visible": m.queue_visible(), "shed": m.shed,
                        "learned_capacity": m.learned_capacity,
                        "capacity": m.cfg.capacity, "engaged": m.engaged, "released": m.released,
                        "edges": m.edges,
                    }));
                }
            }
            _ = tick.tick() => {
                policy.handle_timeout(now_ms());
                saver.tick(&mut policy, &reg_tx);
                if let Some(rp) = relay_policy.as_mut() {
                    rp.handle_timeout(now_ms());
                    if let Some(s) = relay_saver.as_mut() {
                        s.tick(rp, &relay_reg_tx);
                    }
                }
            }
            _ = hup.recv() => {
                match Config::load(&config_path).map_err(anyhow::Error::from).and_then(|c| make_signers(&c).map(|s| (c, s))) {
                    Ok((c, new)) => {
                        policy.set_config(c.policy.clone());
                        if let (Some(m), Some(o)) = (overload.as_mut(), &c.overload) {
                            m.set_config(o.monitor(&c.policy));
                        }
                        if let Some(rp) = relay_policy.as_mut() {
                            rp.set_config(c.policy.clone());
                        }
                        keepalives = c.keepalive_rule();
                        let _ = modules_tx.send(new.files.clone());
                        signers = new;
                        let c = Arc::new(c);
                        hep_rule = c.clone();
                        let _ = config_tx.send(c);
                        tracing::info!(module_url = %signers.keepalive.url, "configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "configuration reload failed; keeping the running one"),
                }
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: saving the registries and stopping");
                saver.finish(&policy.registry).await;
                if let (Some(s), Some(rp)) = (relay_saver.as_mut(), relay_policy.as_ref()) {
                    s.finish(&rp.registry).await;
                }
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                saver.finish(&policy.registry).await;
                if let (Some(s), Some(rp)) = (relay_saver.as_mut(), relay_policy.as_ref()) {
                    s.finish(&rp.registry).await;
                }
                return Ok(());
            }
        }
        let mut pending: Vec<(Arc<Signer>, Action)> = Vec::new();
        while let Some(action) = policy.poll_action() {
            pending.push((signers.keepalive.clone(), action));
        }
        if let (Some(rp), Some(rs)) = (relay_policy.as_mut(), signers.relay.as_ref()) {
            while let Some(action) = rp.poll_action() {
                pending.push((rs.clone(), action));
            }
        }
        if let (Some(m), Some(os), Some(fb)) = (overload.as_mut(), signers.overload.as_ref(), feedback.as_ref()) {
            while let Some(action) = m.poll_action() {
                match action {
                    OcAction::Deploy { towards } => pending.push((os.clone(), Action::Deploy { phone: towards })),
                    OcAction::Retire { node_id, towards } => {
                        pending.push((os.clone(), Action::Remove { appliance: node_id, towards }));
                    }
                    OcAction::Report { node_id, api, oc, validity_ms, seq } => {
                        fb.report(node_id, api, m.cfg.algorithm.as_str(), oc, validity_ms, seq);
                    }
                    OcAction::Poll { node_id, api } => fb.poll(node_id, api, sample_tx.clone()),
                }
            }
        }
        for (signer, action) in pending {
            tracing::info!(?action, deploys = ?signer.deploys, "signaling");
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let which = signer.deploys;
                let _ = tx.send((which, signer.run(action).await));
            });
        }
    }
}

/// Saves a registry that changed since the last tick, off the runtime (a
/// registry of 100,000 phones is megabytes of JSON, written and fsync'd),
/// and publishes it to the status endpoints. A change that matters across a
/// restart (a deployment, a registration, a phone served or forgotten) is
/// saved on the next tick; keep-alive times and counts alone, at most every
/// [`SOFT_SAVE_INTERVAL`] — with 100,000 phones keeping alive, every tick
/// would rewrite the whole file twice a second. Never two writes of one
/// file at once (a save whose last one still runs waits for the next tick).
struct Saver {
    path: std::path::PathBuf,
    running: Option<tokio::task::JoinHandle<()>>,
    /// Changes published but not saved yet, and whether any mattered.
    unsaved: bool,
    structural: bool,
    last_save: std::time::Instant,
}

/// How stale the saved keep-alive times may get.
const SOFT_SAVE_INTERVAL: Duration = Duration::from_secs(30);

impl Saver {
    fn new(path: std::path::PathBuf) -> Self {
        Self { path, running: None, unsaved: false, structural: false, last_save: std::time::Instant::now() }
    }

    /// One copy of the registry a tick when it changed, shared by the status
    /// endpoints and, when a save is due, the writer.
    fn tick(&mut self, policy: &mut Policy, status: &watch::Sender<Arc<Registry>>) {
        if policy.dirty || policy.touched {
            self.structural |= std::mem::take(&mut policy.dirty);
            policy.touched = false;
            self.unsaved = true;
            let _ = status.send(Arc::new(policy.registry.clone()));
        }
        let due = self.structural || (self.unsaved && self.last_save.elapsed() >= SOFT_SAVE_INTERVAL);
        if !due || self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        (self.unsaved, self.structural, self.last_save) = (false, false, std::time::Instant::now());
        let snapshot = status.borrow().clone();
        let path = self.path.clone();
        self.running = Some(tokio::task::spawn_blocking(move || save(&path, &snapshot)));
    }

    /// The last save done, then this one, in place (shutdown).
    async fn finish(&mut self, registry: &Registry) {
        if let Some(h) = self.running.take() {
            let _ = h.await;
        }
        save(&self.path, registry);
    }
}

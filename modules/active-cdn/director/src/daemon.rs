//! The director's shell: the provider's front door (axum), the placement
//! behind a lock, and the signaling tasks. Runs until SIGTERM.

use crate::config::Config;
use crate::geo::GeoDb;
use crate::placement::{Action, Placement, Route};
use crate::signal::Signer;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use netserv_nslp::wire::RequestKind;
use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Stats {
    pub redirects: AtomicU64,
    pub from_origin: AtomicU64,
    pub origin_errors: AtomicU64,
    pub unplaced_clients: AtomicU64,
    pub deploys: AtomicU64,
    pub deploys_landed: AtomicU64,
    pub refreshes: AtomicU64,
    pub removals: AtomicU64,
}

pub struct Director {
    pub placement: Mutex<Placement>,
    pub geo: GeoDb,
    pub signer: Signer,
    pub stats: Stats,
    origin: reqwest::Url,
    port: u16,
    module: (String, Vec<u8>),
    http: reqwest::Client,
    started: Instant,
}

impl Director {
    pub fn new(cfg: &Config) -> anyhow::Result<Arc<Self>> {
        let module = std::fs::read(&cfg.module.file)
            .map_err(|e| anyhow::anyhow!("module.file {}: {e}", cfg.module.file.display()))?;
        let geo = GeoDb::open(&cfg.geoip).map_err(|e| anyhow::anyhow!("geoip: {e}"))?;
        Ok(Arc::new(Self {
            placement: Mutex::new(Placement::new(cfg.placement.clone())),
            geo,
            signer: Signer::new(cfg, &module)?,
            stats: Stats::default(),
            origin: cfg.origin.parse()?,
            port: cfg.module.port,
            module: (format!("{}.wasm", cfg.module.name), module),
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?,
            started: Instant::now(),
        }))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// SETUP towards a client, then PROBE: which nodes on its path run the cache.
    async fn deploy(self: Arc<Self>, toward: IpAddr) {
        self.stats.deploys.fetch_add(1, Relaxed);
        let installed = self.signer.send(RequestKind::Setup, toward).await;
        let landed = match installed {
            Some(stack) if stack.iter().any(|e| e.status == netserv_nslp::wire::Status::Ok) => self
                .signer
                .send(RequestKind::Probe, toward)
                .await
                .map(|probe| self.signer.landed(&probe, RequestKind::Probe, &self.geo))
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        tracing::info!(%toward, nodes = ?landed.iter().map(|l| l.address).collect::<Vec<_>>(), "deployment towards a client");
        let now = self.now_ms();
        if landed.is_empty() {
            self.placement.lock().failed(now, toward);
        } else {
            self.stats.deploys_landed.fetch_add(1, Relaxed);
            self.placement.lock().landed(now, toward, landed);
        }
    }

    async fn act(self: Arc<Self>, action: Action) {
        match action {
            Action::Refresh { node, toward } => {
                self.stats.refreshes.fetch_add(1, Relaxed);
                let stack = self.signer.send(RequestKind::Setup, toward).await.unwrap_or_default();
                let landed = self.signer.landed(&stack, RequestKind::Setup, &self.geo);
                let now = self.now_ms();
                self.placement.lock().refreshed(now, node, toward, landed);
            }
            Action::Remove { node, toward } => {
                self.stats.removals.fetch_add(1, Relaxed);
                tracing::info!(%node, "retiring an idle node");
                let _ = self.signer.send(RequestKind::Remove, toward).await;
                self.placement.lock().removed(node);
            }
        }
    }
}

fn origin_error(d: &Director) -> Response {
    d.stats.origin_errors.fetch_add(1, Relaxed);
    (StatusCode::BAD_GATEWAY, "the origin did not answer\n").into_response()
}

/// Every request of a client: a redirect to its nearest node, or the origin's answer.
async fn front(State(d): State<Arc<Director>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    let client = peer.ip();
    let at = d.geo.locate(client);
    if at.is_none() {
        d.stats.unplaced_clients.fetch_add(1, Relaxed);
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let route = d.placement.lock().route(d.now_ms(), client, at);
    match route {
        Route::Redirect { node, km } => {
            d.stats.redirects.fetch_add(1, Relaxed);
            let host = match node {
                IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            };
            tracing::debug!(%client, %node, km, "redirected");
            let location = format!("http://{host}:{}{path}", d.port);
            let mut r = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            // The choice follows the deployments: no one may keep it.
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Route::Origin { deploy } => {
            if deploy {
                tokio::spawn(Arc::clone(&d).deploy(client));
            }
            d.stats.from_origin.fetch_add(1, Relaxed);
            let mut url = d.origin.clone();
            url.set_path(req.uri().path());
            url.set_query(req.uri().query());
            let mut headers = req.headers().clone();
            for h in ["host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"] {
                headers.remove(h);
            }
            let sent = d.http.request(req.method().clone(), url).headers(headers).send();
            let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), sent).await else {
                return origin_error(&d);
            };
            let mut out = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if !matches!(k.as_str(), "connection" | "keep-alive" | "transfer-encoding") {
                    out = out.header(k, v);
                }
            }
            out.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| origin_error(&d))
        }
    }
}

async fn status(State(d): State<Arc<Director>>) -> impl IntoResponse {
    let s = &d.stats;
    axum::Json(serde_json::json!({
        "nodes": d.placement.lock().nodes(d.now_ms()),
        "redirects": s.redirects.load(Relaxed),
        "from_origin": s.from_origin.load(Relaxed),
        "deploys": s.deploys.load(Relaxed),
        "deploys_landed": s.deploys_landed.load(Relaxed),
        "refreshes": s.refreshes.load(Relaxed),
        "removals": s.removals.load(Relaxed),
    }))
}

async fn metrics(State(d): State<Arc<Director>>) -> Response {
    let mut x = netserv_shell::metrics::Exposition::new();
    let s = &d.stats;
    let mut f = x.counter("netserv_director_requests", "Client requests, by where they went.");
    for (to, v) in [("edge", &s.redirects), ("origin", &s.from_origin)] {
        f.sample(&[("to", to)], v.load(Relaxed));
    }
    for (name, help, v) in [
        ("netserv_director_unplaced_clients", "Clients the GeoIP database does not place.", &s.unplaced_clients),
        ("netserv_director_origin_errors", "Requests the origin did not answer.", &s.origin_errors),
        ("netserv_director_deploys", "SETUPs sent towards clients with no node near.", &s.deploys),
        ("netserv_director_deploys_landed", "Deployments a PROBE found installed.", &s.deploys_landed),
        ("netserv_director_refreshes", "Deployments refreshed before their TTL.", &s.refreshes),
        ("netserv_director_removals", "Idle nodes retired.", &s.removals),
    ] {
        x.counter(name, help).sample(&[], v.load(Relaxed));
    }
    x.gauge("netserv_director_nodes", "Nodes running the cache that clients are sent to.")
        .sample(&[], d.placement.lock().nodes(d.now_ms()).len());
    match x.render() {
        Ok(text) => ([(header::CONTENT_TYPE, netserv_shell::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn module_file(
    State(d): State<Arc<Director>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    if file == d.module.0 {
        ([(header::CONTENT_TYPE, "application/wasm")], d.module.1.clone()).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

pub fn app(d: Arc<Director>) -> Router {
    Router::new()
        .route("/netserv/status", axum::routing::get(status))
        .route("/netserv/metrics", axum::routing::get(metrics))
        .route("/netserv/modules/{file}", axum::routing::get(module_file))
        .fallback(front)
        .with_state(d)
}

/// Refreshes and retires deployments as they come due.
async fn lifetimes(d: Arc<Director>) {
    loop {
        let actions: Vec<Action> = {
            let mut p = d.placement.lock();
            let now = d.now_ms();
            std::iter::from_fn(|| p.poll_action(now)).take(64).collect()
        };
        for a in actions {
            tokio::spawn(Arc::clone(&d).act(a));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs until SIGTERM (or Ctrl-C).
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let d = Director::new(&cfg)?;
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| anyhow::anyhow!("listen {}: {e}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, origin = %cfg.origin, module = %d.signer.url, "director running");
    tokio::spawn(lifetimes(Arc::clone(&d)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
    };
    axum::serve(listener, app(d).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

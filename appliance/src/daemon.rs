//! The running node (the daemon; not GIST's `Node`): wires config, runtime, dataplane, controller and API, then
//! serves until SIGTERM/SIGINT (drain: stop taking requests, remove every
//! rule so traffic flows untouched, exit) while SIGHUP reloads the config.

use crate::api::{self, AppState};
use crate::config::{Config, Steering};
use crate::controller::{Controller, StateStore};
use crate::dataplane::QueueStats;
use crate::dataplane::Table;
use crate::dataplane::builder::Builder;
use crate::dataplane::iptables::Iptables;
use crate::dataplane::placement;
use crate::dataplane::worker::{self, WorkerSpec};
use crate::runtime::Runtime;
use crate::signaling::{self, SignalingStats};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
    let runtime = Runtime::with_compile_cache(&cfg.state_dir.join("compiled"))?;
    let table = Arc::new(ArcSwap::from_pointee(Table::default()));
    let stop = Arc::new(AtomicBool::new(false));

    let mut queues = Vec::new();
    let sig_stats = Arc::new(SignalingStats::default());
    let mut tap = None;
    let mut placer = None;
    let builder = Builder::spawn().context("spawning the module builder thread")?;
    let iptables = if cfg.dataplane.enabled {
        let dp = &cfg.dataplane;
        let allowed = placement::allowed_cpus();
        let mut homes = Vec::new();
        for index in 0..dp.queues {
            let queue = dp.queue_base + index;
            let home = match dp.steering {
                Steering::Cpu => placement::home_cpus(index, dp.queues, &allowed),
                Steering::Flow => Vec::new(),
            };
            let spec = WorkerSpec {
                index: usize::from(index),
                queue,
                max_len: dp.queue_max_len,
                busy_poll: Duration::from_micros(u64::from(dp.busy_poll_us)),
                batch: usize::from(dp.batch),
                home: home.clone(),
            };
            let stats = Arc::new(QueueStats { queue, ..Default::default() });
            worker::spawn(spec, table.clone(), builder.clone(), stats.clone(), stop.clone())?;
            homes.push((stats.clone(), home));
            queues.push(stats);
        }
        let mut ipt = Iptables::new(&dp.chain, &dp.hooks, dp.queue_base, dp.queues, dp.steering);
        ipt.setup().context("setting up the iptables chain")?;
        if cfg.signaling.enabled {
            // Bound now, served once the signaling node exists (below):
            // Queries that arrive in between wait in the kernel's queue.
            tap = Some(signaling::tap::open(cfg.signaling.queue)?);
            ipt.add_signaling(cfg.signaling.queue).context("steering GIST queries in transit to NFQUEUE")?;
        }
        placer = placement::Placer::new(homes, &allowed);
        Some(ipt)
    } else {
        tracing::warn!("dataplane disabled in the config: modules are installed but see no traffic");
        None
    };

    let state = StateStore::open(&cfg.state_dir)
        .with_context(|| format!("opening the state directory {} (state_dir)", cfg.state_dir.display()))?;
    let workers = if cfg.dataplane.enabled { usize::from(cfg.dataplane.queues) } else { 1 };
    let controller = Controller::new(cfg.clone(), runtime, table, iptables, Some(state), workers)
        .context("starting the controller's I/O thread")?;
    let restored = controller.restore().await;
    if restored > 0 {
        tracing::info!(restored, "modules restored from the state directory");
    }
    let queues = Arc::new(queues);
    let signaling_task = if cfg.signaling.enabled {
        let (node, task) = signaling::spawn(&cfg, controller.clone(), queues.clone(), sig_stats.clone()).await?;
        if let Some(sock) = tap {
            signaling::tap::spawn(sock, node, sig_stats.tap.clone(), stop.clone())?;
        }
        Some(task)
    } else {
        None
    };
    let state = AppState { controller: controller.clone(), queues, signaling: sig_stats };
    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("binding the API on {}", cfg.api_listen))?;
    // TLS on the API when the config names a certificate; SIGHUP reads it again.
    let tls =
        match &cfg.api_tls {
            None => None,
            Some(t) => Some(axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key).await.with_context(
                || format!("loading api.tls_cert {} and api.tls_key {}", t.cert.display(), t.key.display()),
            )?),
        };
    tracing::info!(
        node_id = %cfg.node_id,
        api = %cfg.api_listen,
        tls = tls.is_some(),
        queues = cfg.dataplane.queues,
        "appliance running"
    );

    // A quarantined module's rule comes out as soon as it is quarantined.
    let quarantines = tokio::spawn(controller.clone().watch_quarantines());

    // Soft state: expire modules whose TTL ran out.
    let expiry = {
        let c = controller.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                c.expire(std::time::Instant::now()).await;
            }
        })
    };

    // Pinned workers spill off contended home CPUs and come back (checked
    // once per window); while one is spilled, CPU steering falls back to
    // flow hashing so a load arriving on one CPU spreads over every queue.
    let steering = {
        let c = controller.clone();
        tokio::spawn(async move {
            let Some(mut placer) = placer else { return };
            let mut tick = tokio::time::interval(Duration::from_nanos(placement::Spill::WINDOW_NS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                c.adapt_steering(placer.tick()).await;
            }
        })
    };

    // SIGHUP: reload. A bad file keeps the running config.
    let reloader = {
        let c = controller.clone();
        let path = config_path.clone();
        let mut hup = signal(SignalKind::hangup())?;
        let rotated = tls.clone().zip(cfg.api_tls.clone());
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A renewed certificate, at the paths the node started with.
                if let Some((tls, paths)) = &rotated {
                    match tls.reload_from_pem_file(&paths.cert, &paths.key).await {
                        Ok(()) => tracing::info!("API certificate reloaded"),
                        Err(e) => tracing::error!(error = %e, "API certificate reload failed; keeping the running one"),
                    }
                }
                match Config::load(&path) {
                    Ok(new) => {
                        // What a running node cannot take on is said, not
                        // silently ignored: it stays as it started until a restart.
                        let pending = c.config().changes_needing_restart(&new);
                        if !pending.is_empty() {
                            tracing::warn!(
                                fields = %pending.join(", "),
                                "configuration changes that need a restart; running on the old values of these"
                            );
                        }
                        let removed = c.reload(new).await;
                        tracing::info!(removed, "configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "configuration reload failed; keeping the running one"),
                }
            }
        })
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    };
    match tls {
        None => axum::serve(listener, api::app(state)).with_graceful_shutdown(shutdown).await?,
        Some(tls) => {
            // rustls through axum-server; the same drain on SIGTERM.
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(Duration::from_secs(10)));
            });
            axum_server::from_tcp_rustls(listener.into_std()?, tls)
                .handle(handle)
                .serve(api::app(state).into_make_service())
                .await?;
        }
    }
    expiry.abort();
    quarantines.abort();
    steering.abort();
    reloader.abort();
    if let Some(t) = signaling_task {
        t.abort();
    }
    // Remove rules first: with no rule, packets never reach the queues, so
    // nothing is in flight when the workers stop with the process.
    controller.shutdown().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("appliance stopped");
    Ok(())
}

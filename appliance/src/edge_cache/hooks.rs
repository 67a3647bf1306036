//! The content provider's module as the cache's [`Hooks`]: one instance
//! behind a lock (hooks run on misses and on the paths the module asked
//! for, not on every hit), each call within the tenant's deadline. A fault
//! fails open for that request, rebuilds the instance, and counts; faults
//! at a sustained rate quarantine the module: the cache then serves on
//! without it.

use crate::runtime::HostSpec;
use crate::runtime::http_world::{HttpData, HttpInstance, HttpModulePre, http as wit};
use crate::runtime::{IpAddress, SocketAddress};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use netserv_cache::{HookFault, Hooks, RequestAction, ResponseAction};
use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The longest cache key a module may choose.
const MAX_KEY: usize = 2048;

/// What rebuilds the instance after a fault.
pub struct Rebuild {
    pub engine: wasmtime::Engine,
    pub pre: HttpModulePre<HttpData>,
    pub host: HostSpec,
    pub properties: Vec<(String, String)>,
    pub deadline: Duration,
}

#[derive(Debug, Default)]
pub struct HookStats {
    pub calls: AtomicU64,
    pub ns: AtomicU64,
    pub faults: AtomicU64,
    pub last_fault: Mutex<Option<String>>,
    pub quarantined: AtomicBool,
    pub memory_bytes: AtomicU64,
}

pub struct WasmHooks {
    instance: Mutex<Option<HttpInstance>>,
    rebuild: Rebuild,
    request_prefixes: Vec<String>,
    response_types: Vec<String>,
    transform_max: u64,
    pub stats: HookStats,
    /// Faults in the current window: (window start, count).
    window: Mutex<(Instant, u32)>,
    quarantine_after: u32,
    fault_window: Duration,
}

impl WasmHooks {
    /// Instantiates the module and runs its `init`.
    pub fn new(rebuild: Rebuild, quarantine_after: u32, fault_window: Duration) -> anyhow::Result<Self> {
        let (instance, declared) =
            HttpInstance::new(&rebuild.engine, &rebuild.pre, &rebuild.host, &rebuild.properties, rebuild.deadline)?;
        let stats = HookStats::default();
        stats.memory_bytes.store(instance.memory_bytes(), Relaxed);
        Ok(Self {
            instance: Mutex::new(Some(instance)),
            rebuild,
            request_prefixes: declared.request_prefixes,
            response_types: declared.response_types,
            transform_max: u64::from(declared.transform_max_bytes),
            stats,
            window: Mutex::new((Instant::now(), 0)),
            quarantine_after,
            fault_window,
        })
    }

    /// One guest call, timed; a fault poisons the instance, which the next
    /// call rebuilds.
    fn call<T>(&self, f: impl FnOnce(&mut HttpInstance) -> Result<T, String>) -> Result<T, HookFault> {
        let mut slot = self.instance.lock();
        if slot.is_none() {
            let r = &self.rebuild;
            match HttpInstance::new(&r.engine, &r.pre, &r.host, &r.properties, r.deadline) {
                Ok((i, _)) => *slot = Some(i),
                Err(e) => return Err(self.fault(format!("rebuilding the instance: {e:#}"))),
            }
        }
        let Some(instance) = slot.as_mut() else { return Err(HookFault("no instance".into())) };
        let started = Instant::now();
        let out = f(instance);
        self.stats.calls.fetch_add(1, Relaxed);
        self.stats.ns.fetch_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.stats.memory_bytes.store(instance.memory_bytes(), Relaxed);
        out.map_err(|e| {
            *slot = None;
            self.fault(e)
        })
    }

    fn fault(&self, why: String) -> HookFault {
        self.stats.faults.fetch_add(1, Relaxed);
        *self.stats.last_fault.lock() = Some(why.clone());
        let mut w = self.window.lock();
        if w.0.elapsed() > self.fault_window {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        if w.1 >= self.quarantine_after && !self.stats.quarantined.swap(true, Relaxed) {
            tracing::warn!(module = %self.rebuild.host.module, tenant = %self.rebuild.host.tenant, "edge cache module quarantined: the cache serves on without it");
        }
        HookFault(why)
    }

    fn live(&self) -> bool {
        !self.stats.quarantined.load(Relaxed)
    }
}

fn wit_ip(ip: Option<IpAddr>) -> IpAddress {
    let a = crate::dataplane::pipeline::wit_addr(std::net::SocketAddr::new(
        ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        0,
    ));
    let SocketAddress { address, .. } = a;
    address
}

fn fields(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned()))).collect()
}

fn wit_request(r: &http::request::Parts, client: Option<IpAddr>) -> wit::Request {
    wit::Request {
        method: r.method.as_str().to_owned(),
        path: r.uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        headers: fields(&r.headers),
        client: wit_ip(client),
    }
}

impl Hooks for WasmHooks {
    fn wants_request(&self, path: &str) -> bool {
        self.live() && self.request_prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }

    fn on_request(&self, r: &http::request::Parts, client: Option<IpAddr>) -> Result<RequestAction, HookFault> {
        let req = wit_request(r, client);
        match self.call(|i| i.on_request(&req))? {
            wit::RequestAction::Cache(None) => Ok(RequestAction::Cache(None)),
            wit::RequestAction::Cache(Some(k)) if !k.is_empty() && k.len() <= MAX_KEY => {
                Ok(RequestAction::Cache(Some(k)))
            }
            wit::RequestAction::Cache(Some(_)) => Err(self.fault(format!("a cache key is 1..={MAX_KEY} bytes"))),
            wit::RequestAction::Bypass => Ok(RequestAction::Bypass),
            wit::RequestAction::Redirect((status, location)) => {
                let status = StatusCode::from_u16(status).ok().filter(StatusCode::is_redirection);
                match (status, HeaderValue::from_str(&location)) {
                    (Some(s), Ok(l)) => Ok(RequestAction::Redirect(s, l)),
                    _ => Err(self.fault("a redirect needs a 3xx status and a valid location".into())),
                }
            }
            wit::RequestAction::Deny(status) => {
                match StatusCode::from_u16(status).ok().filter(|s| s.is_client_error() || s.is_server_error()) {
                    Some(s) => Ok(RequestAction::Deny(s)),
                    None => Err(self.fault("a denial needs a 4xx or 5xx status".into())),
                }
            }
        }
    }

    fn wants_response(&self, content_type: Option<&str>) -> bool {
        self.live() && self.response_types.iter().any(|t| content_type.unwrap_or("").starts_with(t.as_str()))
    }

    fn transform_max_bytes(&self) -> u64 {
        self.transform_max
    }

    fn on_response(
        &self,
        r: &http::request::Parts,
        client: Option<IpAddr>,
        head: &http::response::Parts,
        body: Option<&Bytes>,
    ) -> Result<ResponseAction, HookFault> {
        let req = wit_request(r, client);
        let wit_head = wit::ResponseHead { status: head.status.as_u16(), headers: fields(&head.headers) };
        let a = self.call(|i| i.on_response(&req, &wit_head, body.map(|b| b.as_ref())))?;
        let mut set_headers = Vec::with_capacity(a.set_headers.len());
        for (k, v) in a.set_headers {
            match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                // The host frames the body: its length is not the module's to set.
                (Ok(k), Ok(_)) if k == http::header::CONTENT_LENGTH || k == http::header::TRANSFER_ENCODING => {}
                (Ok(k), Ok(v)) => set_headers.push((k, v)),
                _ => return Err(self.fault(format!("`{k}` is not a valid header field"))),
            }
        }
        let remove_headers =
            a.remove_headers.iter().filter_map(|k| HeaderName::from_bytes(k.as_bytes()).ok()).collect();
        if a.body.is_some() && body.is_none() {
            return Err(self.fault("a body was returned where none was handed in".into()));
        }
        Ok(ResponseAction {
            store: a.store,
            ttl: a.ttl_secs.map(|s| Duration::from_secs(u64::from(s))),
            set_headers,
            remove_headers,
            body: a.body.map(Bytes::from),
        })
    }
}

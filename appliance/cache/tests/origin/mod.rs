//! A scriptable origin on loopback for the cache's tests: counts fetches
//! per path, stalls, goes down (503 or refused), and answers validators.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Origin {
    pub fetches: Mutex<HashMap<String, u32>>,
    pub conditional: AtomicU32,
    /// Milliseconds before every answer's head.
    pub stall_ms: AtomicU64,
    /// Answer 503 to everything.
    pub down: AtomicBool,
    /// Bumped to change every object's body and entity-tag.
    pub version: AtomicU32,
}

impl Origin {
    pub fn fetches(&self, path: &str) -> u32 {
        self.fetches.lock().get(path).copied().unwrap_or(0)
    }
}

/// Deterministic bytes of an object: `len` bytes from `seed`.
pub fn body_of(seed: &str, version: u32, len: usize) -> Vec<u8> {
    let mut x: u32 = seed.bytes().fold(version.wrapping_mul(2_654_435_761), |h, b| h.rotate_left(5) ^ u32::from(b));
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b'a' + (x % 26) as u8
        })
        .collect()
}

type OBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> OBody {
    Full::new(b.into()).boxed()
}

async fn answer(o: Arc<Origin>, req: Request<hyper::body::Incoming>) -> Response<OBody> {
    let path = req.uri().path().to_owned();
    *o.fetches.lock().entry(path.clone()).or_default() += 1;
    let stall = o.stall_ms.load(Relaxed);
    if stall > 0 {
        tokio::time::sleep(Duration::from_millis(stall)).await;
    }
    if o.down.load(Relaxed) {
        return Response::builder().status(503).body(full("down")).expect("static");
    }
    let v = o.version.load(Relaxed);
    let etag = format!("\"{path}-v{v}\"");
    if req.headers().get("if-none-match").and_then(|h| h.to_str().ok()) == Some(etag.as_str()) {
        o.conditional.fetch_add(1, Relaxed);
        return Response::builder()
            .status(304)
            .header("etag", &etag)
            .header("cache-control", cc_for(&path))
            .body(full(""))
            .expect("static");
    }
    let len = req.uri().query().and_then(|q| q.strip_prefix("size=")).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let mut b = Response::builder()
        .header("etag", &etag)
        .header("cache-control", cc_for(&path))
        .header("content-type", "application/octet-stream");
    if path.starts_with("/vary") {
        let lang = req.headers().get("accept-language").and_then(|h| h.to_str().ok()).unwrap_or("none").to_owned();
        return b.header("vary", "Accept-Language").body(full(format!("lang={lang}"))).expect("static");
    }
    if path.starts_with("/tagged") {
        b = b.header("cache-tag", "news,front").header("surrogate-key", "all");
    }
    if path.starts_with("/cookie") {
        b = b.header("set-cookie", "s=1");
    }
    let data = body_of(&path, v, len);
    if path.starts_with("/drip") || path.starts_with("/chunked") {
        // In 10 pieces, 30 ms apart; `/drip` announces its length, `/chunked` does not.
        if path.starts_with("/drip") {
            b = b.header("content-length", data.len());
        }
        let pieces: Vec<Bytes> = data.chunks(data.len().div_ceil(10).max(1)).map(Bytes::copy_from_slice).collect();
        let s = futures_util::stream::iter(pieces).then(|p| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, Infallible>(hyper::body::Frame::data(p))
        });
        return b.body(BodyExt::boxed(StreamBody::new(s))).expect("static");
    }
    b.body(full(data)).expect("static")
}

use futures_util::StreamExt;

fn cc_for(path: &str) -> &'static str {
    match path {
        p if p.starts_with("/swr") => "max-age=1, stale-while-revalidate=30",
        p if p.starts_with("/sie") => "max-age=1, stale-if-error=60",
        p if p.starts_with("/short") => "max-age=1",
        p if p.starts_with("/private") => "private, max-age=60",
        p if p.starts_with("/nostore") => "no-store",
        p if p.starts_with("/mustreval") => "max-age=1, must-revalidate, stale-if-error=60",
        _ => "max-age=60",
    }
}

/// Starts the origin on loopback; its address and its controls.
pub async fn start() -> (SocketAddr, Arc<Origin>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    let o = Arc::new(Origin::default());
    let o2 = Arc::clone(&o);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            let o = Arc::clone(&o2);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let o = Arc::clone(&o);
                    async move { Ok::<_, Infallible>(answer(o, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, o)
}

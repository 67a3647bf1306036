//! The edge cache benchmark's origin and clients, run inside the testbed.
//!
//! `netserv-cdn-tool origin ADDR` serves:
//! - `/o/<size>/<n>`: `size` deterministic bytes, `max-age=3600`, an ETag;
//! - `/cold/<tag>`: 1 KB after 200 ms, `max-age=3600` (a key many clients miss at once);
//! - `/swr/<tag>`: 1 KB, `max-age=1, stale-while-revalidate=60, stale-if-error=600`;
//! - `/_ctl/stall?ms=N` (every answer waits N ms first), `/_ctl/down?on=1|0` (503 to
//!   everything), `/_ctl/count?path=P` (how many times P was fetched).
//!
//! `netserv-cdn-tool burst URL N`: N connections, each one GET at the same
//! moment; JSON `{ok, failed}`.
//! `netserv-cdn-tool purge API TOKEN MODULE CACHE KEY N`: N times, fetch KEY
//! from the cache, purge it through the appliance's API, and fetch it again;
//! JSON `{ms: [..], missed}`: from sending the purge to the next answer's
//! head, and how many of those next answers were misses.
//! `netserv-cdn-tool probe URL MS CONNS`: CONNS clients GET in a loop for MS
//! ms (a connection each time); JSON `{requests, ok, p50_us, p99_us, max_us, bodies}`
//! (`bodies`: distinct bodies of the 200s).

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Origin {
    counts: Mutex<HashMap<String, u64>>,
    stall_ms: AtomicU64,
    down: AtomicBool,
    blob: Vec<u8>,
}

fn query<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

async fn answer(o: Arc<Origin>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let q = req.uri().query();
    let text = |s: String| Response::new(Full::new(Bytes::from(s)));
    if let Some(ctl) = path.strip_prefix("/_ctl/") {
        match ctl {
            "stall" => o.stall_ms.store(query(q, "ms").and_then(|v| v.parse().ok()).unwrap_or(0), Relaxed),
            "down" => o.down.store(query(q, "on") == Some("1"), Relaxed),
            "count" => {
                let n = query(q, "path").and_then(|p| o.counts.lock().ok()?.get(p).copied()).unwrap_or(0);
                return text(n.to_string());
            }
            _ => {}
        }
        return text("ok".into());
    }
    if let Ok(mut c) = o.counts.lock() {
        *c.entry(path.clone()).or_default() += 1;
    }
    let stall = o.stall_ms.load(Relaxed);
    if stall > 0 {
        tokio::time::sleep(Duration::from_millis(stall)).await;
    }
    let build = |status: u16, cc: &str, body: Bytes| {
        Response::builder()
            .status(status)
            .header("cache-control", cc)
            .header("content-type", "application/octet-stream")
            .header("etag", format!("\"{}\"", path.len()))
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    };
    if o.down.load(Relaxed) {
        return build(503, "no-store", Bytes::from_static(b"down"));
    }
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("o"), Some(size), Some(n)) => {
            let size = size.parse::<usize>().unwrap_or(0).min(o.blob.len());
            let n: usize = n.parse().unwrap_or(0);
            // Each object its own bytes: a window of the blob moved by n.
            let start = (n * 7) % (o.blob.len() - size).max(1);
            build(200, "max-age=3600", Bytes::copy_from_slice(&o.blob[start..start + size]))
        }
        (Some("cold"), Some(_), None) => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            build(200, "max-age=3600", Bytes::copy_from_slice(&o.blob[..1024]))
        }
        (Some("swr"), Some(_), None) => build(
            200,
            "max-age=1, stale-while-revalidate=60, stale-if-error=600",
            Bytes::copy_from_slice(&o.blob[..1024]),
        ),
        _ => build(404, "no-store", Bytes::from_static(b"no such object")),
    }
}

async fn origin(addr: &str) -> anyhow::Result<()> {
    let blob: Vec<u8> = (0..1_100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let o = Arc::new(Origin { blob, ..Default::default() });
    let l = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        let o = Arc::clone(&o);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let o = Arc::clone(&o);
                async move { Ok::<_, Infallible>(answer(o, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
        });
    }
}

/// One GET on a fresh connection: the status and the body.
async fn get(host: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await??;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no head"))?;
    let status = std::str::from_utf8(&buf[..head_end])?
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    Ok((status, buf[head_end + 4..].to_vec()))
}

fn split(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("http:// URLs only"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((host.to_owned(), format!("/{path}")))
}

async fn burst(url: &str, n: usize) -> anyhow::Result<()> {
    let (host, path) = split(url)?;
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (host, path, gate) = (host.clone(), path.clone(), Arc::clone(&gate));
            tokio::spawn(async move {
                gate.wait().await;
                get(&host, &path).await
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Ok((200, _))) => ok += 1,
            _ => failed += 1,
        }
    }
    println!("{}", serde_json::json!({ "ok": ok, "failed": failed }));
    Ok(())
}

async fn probe(url: &str, ms: u64, conns: usize) -> anyhow::Result<()> {
    let (host, path) = split(url)?;
    let end = Instant::now() + Duration::from_millis(ms);
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (host, path) = (host.clone(), path.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut bodies = HashSet::new();
                let mut ok = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = get(&host, &path).await;
                    lat.push(t.elapsed().as_micros() as u64);
                    if let Ok((200, body)) = r {
                        ok += 1;
                        bodies.insert(body);
                    }
                }
                (lat, ok, bodies)
            })
        })
        .collect();
    let (mut lat, mut ok, mut bodies) = (Vec::new(), 0, HashSet::new());
    for t in tasks {
        let (l, o, b) = t.await?;
        lat.extend(l);
        ok += o;
        bodies.extend(b);
    }
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{}",
        serde_json::json!({
            "requests": lat.len(), "ok": ok, "p50_us": pct(0.5), "p99_us": pct(0.99),
            "max_us": lat.last().copied().unwrap_or(0), "bodies": bodies.len(),
        })
    );
    Ok(())
}

/// One request on a fresh connection; the whole answer as text.
async fn raw(host: &str, request: String) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.set_nodelay(true)?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn purge(api: &str, token: &str, module: &str, cache: &str, key: &str, n: usize) -> anyhow::Result<()> {
    let (api_host, _) = split(api)?;
    let (cache_host, _) = split(cache)?;
    let get = format!("GET {key} HTTP/1.1\r\nHost: {cache_host}\r\nConnection: close\r\n\r\n");
    let body = serde_json::json!({ "key": key }).to_string();
    let post = format!(
        "POST /api/v1/modules/{module}/purge HTTP/1.1\r\nHost: {api_host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (mut ms, mut missed) = (Vec::new(), 0);
    for _ in 0..n {
        raw(&cache_host, get.clone()).await?;
        let t = Instant::now();
        let answer = raw(&api_host, post.clone()).await?;
        anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "purge refused: {answer}");
        let next = raw(&cache_host, get.clone()).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        missed += usize::from(next.to_ascii_lowercase().contains("x-cache: miss"));
    }
    println!("{}", serde_json::json!({ "ms": ms, "missed": missed }));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["origin", addr] => rt.block_on(origin(addr)),
        ["burst", url, n] => rt.block_on(burst(url, n.parse()?)),
        ["probe", url, ms, conns] => rt.block_on(probe(url, ms.parse()?, conns.parse()?)),
        ["purge", api, token, module, cache, key, n] => rt.block_on(purge(api, token, module, cache, key, n.parse()?)),
        _ => anyhow::bail!(
            "usage: netserv-cdn-tool origin ADDR | burst URL N | probe URL MS CONNS | purge API TOKEN MODULE CACHE KEY N"
        ),
    }
}

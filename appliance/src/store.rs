//! Fetches module bytes from a URL or a local path, with a size cap, and
//! checks their sha256. Compilation and caching by hash live in `runtime`.

use crate::relay::peer_policy::PeerPolicy;
use crate::runtime::ModuleHash;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModuleSource {
    /// Downloaded over HTTP (integrity comes from the sha256, not the transport).
    Url(String),
    /// A file on the appliance (admin only).
    Path(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("module is larger than the {cap}-byte limit")]
    TooLarge { cap: u64 },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("only http:// URLs are supported, got `{0}`")]
    Scheme(String),
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    /// The URL's host is, or resolves to, an address the node does not fetch
    /// from (its own, loopback, private, ...) and the tenant's
    /// `module_origins` do not open.
    // Not which address class the host resolved to: that would tell the
    // requester how names resolve inside the ISP (the log says it).
    #[error("the module URL's host is not an origin this node fetches from")]
    OriginDenied { host: String, why: &'static str },
    // Not the hash of what came: it would tell the requester about bytes
    // it could not otherwise read.
    #[error("sha256 mismatch: expected {expected}, the download differs")]
    HashMismatch { expected: String, actual: String },
}

/// How long a download may take, and its connection.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The module's bytes, up to `cap`. A URL is fetched only from an address
/// `origins` allows — checked on every address the host resolves to, and
/// the connection pinned to the one checked, so that a name cannot resolve
/// to another address between the check and the connect — with no
/// redirects and no proxy: a SETUP must not make the node reach into the
/// ISP's own network.
pub async fn fetch(source: &ModuleSource, cap: u64, origins: &PeerPolicy) -> Result<Vec<u8>, FetchError> {
    match source {
        ModuleSource::Path(path) => {
            use tokio::io::AsyncReadExt as _;
            let read = |source| FetchError::Read { path: path.clone(), source };
            // Opened without blocking (a FIFO would wait for a writer), then
            // checked: a device or a FIFO has no length to check (/dev/zero
            // would be read until memory ran out): only regular files.
            let file = {
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut open = std::fs::OpenOptions::new();
                open.read(true).custom_flags(libc::O_NONBLOCK);
                tokio::fs::File::from_std(open.open(path).map_err(read)?)
            };
            let meta = file.metadata().await.map_err(read)?;
            if !meta.is_file() {
                return Err(read(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
            }
            if meta.len() > cap {
                return Err(FetchError::TooLarge { cap });
            }
            // And no more than the cap, should the file grow meanwhile.
            let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.take(cap.saturating_add(1)).read_to_end(&mut bytes).await.map_err(read)?;
            if bytes.len() as u64 > cap {
                return Err(FetchError::TooLarge { cap });
            }
            Ok(bytes)
        }
        ModuleSource::Url(url) => {
            let dl = |reason: String| FetchError::Download { url: url.clone(), reason };
            let parsed = reqwest::Url::parse(url).map_err(|e| dl(e.to_string()))?;
            if parsed.scheme() != "http" {
                return Err(FetchError::Scheme(url.clone()));
            }
            let port = parsed.port_or_known_default().unwrap_or(80);
            let (host, addrs): (String, Vec<SocketAddr>) = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
                Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
                Some(url::Host::Domain(d)) => {
                    // The resolver gets the connect timeout: a name server
                    // that never answers must not hold a download slot.
                    let found = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((d, port)))
                        .await
                        .map_err(|_| dl("name resolution timed out".into()))?
                        .map_err(|e| dl(e.to_string()))?;
                    (d.to_owned(), found.collect())
                }
                None => return Err(dl("no host".into())),
            };
            let mut denied = "it resolves to no address";
            let mut allowed = None;
            for a in &addrs {
                match origins.check(a.ip()) {
                    Ok(_) => {
                        allowed = Some(*a);
                        break;
                    }
                    Err(why) => denied = why.as_str(),
                }
            }
            let Some(addr) = allowed else {
                tracing::warn!(%host, why = denied, "a module URL names an origin this node does not fetch from");
                return Err(FetchError::OriginDenied { host, why: denied });
            };
            let mut client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(DOWNLOAD_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT);
            if let Some(url::Host::Domain(d)) = parsed.host() {
                client = client.resolve(d, addr);
            }
            let client = client.build().map_err(|e| dl(e.to_string()))?;
            let mut resp = client.get(parsed).send().await.map_err(|e| dl(e.to_string()))?;
            if !resp.status().is_success() {
                // A redirect too: it is not followed.
                return Err(dl(format!("HTTP status {}", resp.status())));
            }
            if resp.content_length().is_some_and(|l| l > cap) {
                return Err(FetchError::TooLarge { cap });
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| dl(e.to_string()))? {
                if (body.len() + chunk.len()) as u64 > cap {
                    return Err(FetchError::TooLarge { cap });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
    }
}

impl FetchError {
    /// What a signaling response may say about it: signaling is not
    /// encrypted and crosses the path, so no URL, no error text of the
    /// download, no hash of what was fetched.
    pub fn coarse(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "module too large",
            Self::Read { .. } | Self::Download { .. } => "download failed",
            Self::Scheme(_) => "unsupported module URL",
            Self::OriginDenied { .. } => "module origin not allowed",
            Self::HashMismatch { .. } => "sha256 mismatch",
        }
    }
}

/// Checks `bytes` against an expected hex sha256, when one is given.
pub fn verify(bytes: &[u8], expected: Option<&str>) -> Result<ModuleHash, FetchError> {
    let actual = ModuleHash::of(bytes);
    match expected {
        Some(e) if !actual.to_hex().eq_ignore_ascii_case(e) => {
            Err(FetchError::HashMismatch { expected: e.to_owned(), actual: actual.to_hex() })
        }
        _ => Ok(actual),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Serves `body` with `status` (and `extra` headers) once per connection
    /// over plain HTTP on loopback; the request lines it got go to `seen`.
    async fn serve_with(body: Vec<u8>, status: &'static str, extra: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned();
                log.lock().expect("log").push(line);
                let head =
                    format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        (format!("http://{addr}/module.wasm"), seen)
    }

    async fn serve(body: Vec<u8>, status: &'static str) -> String {
        serve_with(body, status, "").await.0
    }

    /// The default policy, with loopback opened as a tenant's
    /// `module_origins = ["127.0.0.0/8"]` would (these tests serve on it).
    fn loopback_allowed() -> PeerPolicy {
        PeerPolicy::new(Vec::<std::net::IpAddr>::new(), ["127.0.0.0/8".parse().expect("prefix")])
    }

    #[tokio::test]
    async fn url_fetch_checks_size_and_hash() {
        let body = b"\0asm-not-really".to_vec();
        let url = serve(body.clone(), "200 OK").await;
        let open = loopback_allowed();
        let got = fetch(&ModuleSource::Url(url.clone()), 1024, &open).await.expect("fetch");
        assert_eq!(got, body);
        let hash = ModuleHash::of(&body).to_hex();
        assert!(verify(&got, Some(&hash)).is_ok());
        let wrong = verify(&got, Some(&"ab".repeat(32))).expect_err("mismatch");
        assert!(matches!(wrong, FetchError::HashMismatch { .. }));
        assert!(!wrong.to_string().contains(&hash), "the hash of what came is not told: {wrong}");
        assert!(matches!(fetch(&ModuleSource::Url(url), 4, &open).await, Err(FetchError::TooLarge { cap: 4 })));
    }

    #[tokio::test]
    async fn url_fetch_refuses_errors_and_other_schemes() {
        let url = serve(Vec::new(), "404 Not Found").await;
        let open = loopback_allowed();
        assert!(matches!(fetch(&ModuleSource::Url(url), 1024, &open).await, Err(FetchError::Download { .. })));
        let https = ModuleSource::Url("https://example.invalid/m.wasm".into());
        assert!(matches!(fetch(&https, 1024, &open).await, Err(FetchError::Scheme(_))));
        let missing = ModuleSource::Path("/nonexistent/module.wasm".into());
        assert!(matches!(fetch(&missing, 1024, &open).await, Err(FetchError::Read { .. })));
        // A device has no length to check: refused, not read without end.
        let fifo = std::env::temp_dir().join(format!("netserv-fifo-{}", std::process::id()));
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        for device in ["/dev/zero", "/dev/urandom", "/"].into_iter().chain(made.then_some(fifo.to_str().unwrap_or("/")))
        {
            // (A FIFO with no writer would block an open that waits for one.)
            let r =
                tokio::time::timeout(Duration::from_secs(5), fetch(&ModuleSource::Path(device.into()), 1024, &open))
                    .await
                    .expect("answered at once");
            assert!(matches!(r, Err(FetchError::Read { .. })), "{device}: {r:?}");
        }
        let _ = std::fs::remove_file(&fifo);
    }

    /// A SETUP naming an address inside the ISP's network, by address or by
    /// name, fetches nothing there: before, any http:// host was fetched.
    #[tokio::test]
    async fn internal_origins_are_denied_by_default_and_never_contacted() {
        let (url, seen) = serve_with(b"secret".to_vec(), "200 OK", "").await;
        let default = PeerPolicy::new(Vec::<std::net::IpAddr>::new(), Vec::<ipnet::IpNet>::new());
        let port = url.split(':').nth(2).and_then(|p| p.split('/').next()).expect("port").to_owned();
        for u in [
            url.clone(),
            format!("http://localhost:{port}/module.wasm"),
            format!("http://[::ffff:127.0.0.1]:{port}/module.wasm"),
            "http://10.1.2.3/m.wasm".into(),
            "http://192.168.0.1/m.wasm".into(),
            "http://169.254.169.254/latest/meta-data".into(),
            "http://[fd00::1]/m.wasm".into(),
        ] {
            let got = fetch(&ModuleSource::Url(u.clone()), 1024, &default).await;
            assert!(matches!(got, Err(FetchError::OriginDenied { .. })), "{u}: {got:?}");
        }
        assert!(seen.lock().expect("log").is_empty(), "an internal origin was contacted");
        // The node's own addresses too, whatever range they are in.
        let own = PeerPolicy::new(["198.18.1.1".parse().expect("ip")], Vec::<ipnet::IpNet>::new());
        let got = fetch(&ModuleSource::Url("http://198.18.1.1:8270/m.wasm".into()), 1024, &own).await;
        assert!(matches!(got, Err(FetchError::OriginDenied { why: "this_node", .. })), "{got:?}");
    }

    /// A redirect is not followed (it could point anywhere, past the check).
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (url, seen) = serve_with(Vec::new(), "302 Found", "Location: /elsewhere.wasm\r\n").await;
        let got = fetch(&ModuleSource::Url(url), 1024, &loopback_allowed()).await;
        assert!(matches!(&got, Err(FetchError::Download { reason, .. }) if reason.contains("302")), "{got:?}");
        let seen = seen.lock().expect("log").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].contains("/module.wasm"), "{seen:?}");
    }

    #[test]
    fn what_signaling_may_say_is_coarse() {
        let e = FetchError::Download { url: "http://10.0.0.1:22/x".into(), reason: "connection refused".into() };
        assert_eq!(e.coarse(), "download failed");
        let e = FetchError::OriginDenied { host: "10.0.0.1".into(), why: "private" };
        assert_eq!(e.coarse(), "module origin not allowed");
    }
}

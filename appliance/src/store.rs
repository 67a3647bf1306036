//! Fetches module bytes from a URL or a local path, with a size cap, and
//! checks their sha256. Compilation and caching by hash live in `runtime`.

use crate::runtime::ModuleHash;
use std::path::PathBuf;

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
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: String, actual: String },
}

pub async fn fetch(client: &reqwest::Client, source: &ModuleSource, cap: u64) -> Result<Vec<u8>, FetchError> {
    match source {
        ModuleSource::Path(path) => {
            let meta =
                tokio::fs::metadata(path).await.map_err(|source| FetchError::Read { path: path.clone(), source })?;
            if meta.len() > cap {
                return Err(FetchError::TooLarge { cap });
            }
            tokio::fs::read(path).await.map_err(|source| FetchError::Read { path: path.clone(), source })
        }
        ModuleSource::Url(url) => {
            if !url.starts_with("http://") {
                return Err(FetchError::Scheme(url.clone()));
            }
            let dl = |reason: String| FetchError::Download { url: url.clone(), reason };
            let mut resp = client.get(url).send().await.map_err(|e| dl(e.to_string()))?;
            if !resp.status().is_success() {
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Serves `body` once per connection over plain HTTP on loopback.
    async fn serve(body: Vec<u8>, status: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for _ in 0..8 {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        format!("http://{addr}/module.wasm")
    }

    #[tokio::test]
    async fn url_fetch_checks_size_and_hash() {
        let body = b"\0asm-not-really".to_vec();
        let url = serve(body.clone(), "200 OK").await;
        let client = reqwest::Client::new();
        let got = fetch(&client, &ModuleSource::Url(url.clone()), 1024).await.expect("fetch");
        assert_eq!(got, body);
        let hash = ModuleHash::of(&body).to_hex();
        assert!(verify(&got, Some(&hash)).is_ok());
        assert!(matches!(verify(&got, Some(&"ab".repeat(32))), Err(FetchError::HashMismatch { .. })));
        assert!(matches!(fetch(&client, &ModuleSource::Url(url), 4).await, Err(FetchError::TooLarge { cap: 4 })));
    }

    #[tokio::test]
    async fn url_fetch_refuses_errors_and_other_schemes() {
        let url = serve(Vec::new(), "404 Not Found").await;
        let client = reqwest::Client::new();
        assert!(matches!(fetch(&client, &ModuleSource::Url(url), 1024).await, Err(FetchError::Download { .. })));
        let https = ModuleSource::Url("https://example.invalid/m.wasm".into());
        assert!(matches!(fetch(&client, &https, 1024).await, Err(FetchError::Scheme(_))));
        let missing = ModuleSource::Path("/nonexistent/module.wasm".into());
        assert!(matches!(fetch(&client, &missing, 1024).await, Err(FetchError::Read { .. })));
    }
}

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

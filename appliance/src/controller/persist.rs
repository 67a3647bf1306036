//! Installed state on disk, so a restart restores every module with the TTL
//! it had left, and a cache of module bytes by sha256, so neither a restore
//! nor a repeated SETUP depends on the origin being reachable.
//!
//! `<state_dir>/modules.json` is rewritten (to a temporary file, then renamed)
//! after every change; `<state_dir>/cache/<sha256>.wasm` holds verified bytes.

use super::types::InstallRequest;
use crate::runtime::ModuleHash;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One installed module as saved.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub request: InstallRequest,
    /// Wall-clock expiry (ms since the Unix epoch); the monotonic clock does
    /// not survive a restart.
    pub expires_at_unix_ms: Option<u64>,
}

impl Saved {
    /// `request` as saved at `now` (`now_sys` on the wall clock), with the
    /// monotonic expiry turned into wall-clock time.
    pub fn of(
        request: &InstallRequest,
        expires_at: Option<std::time::Instant>,
        now: std::time::Instant,
        now_sys: SystemTime,
    ) -> Self {
        Self {
            request: request.clone(),
            expires_at_unix_ms: expires_at.map(|t| {
                let at = now_sys + t.saturating_duration_since(now);
                at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
            }),
        }
    }

    /// The TTL left at `now`, or `None` without one; `Some(0)` when expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let now_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.expires_at_unix_ms.map(|t| Duration::from_millis(t.saturating_sub(now_ms)))
    }
}

#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir.join("cache"))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn cache_path(&self, hash_hex: &str) -> Option<PathBuf> {
        // Only a well-formed hex digest names a file.
        (hash_hex.len() == 64 && hash_hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join("cache").join(format!("{}.wasm", hash_hex.to_ascii_lowercase())))
    }

    /// Cached bytes whose hash is `hash_hex` (checked again on reading).
    pub fn cached(&self, hash_hex: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.cache_path(hash_hex)?).ok()?;
        ModuleHash::of(&bytes).to_hex().eq_ignore_ascii_case(hash_hex).then_some(bytes)
    }

    pub fn cache(&self, hash: &ModuleHash, bytes: &[u8]) {
        let Some(path) = self.cache_path(&hash.to_hex()) else { return };
        if path.exists() {
            return;
        }
        if let Err(e) = netserv_shell::files::write_atomically(&path, bytes) {
            tracing::warn!(error = %e, path = %path.display(), "could not cache module bytes");
        }
    }

    pub fn save(&self, saved: &[Saved]) {
        let path = self.dir.join("modules.json");
        let result = serde_json::to_vec_pretty(saved)
            .map_err(io::Error::other)
            .and_then(|json| netserv_shell::files::write_atomically(&path, &json));
        if let Err(e) = result {
            tracing::error!(error = %e, path = %path.display(), "could not save the installed modules");
        }
    }

    /// The saved modules. A file that cannot be read whole, or holds
    /// entries this version cannot decode, is read as far as it goes; what
    /// could not be read is reported in `Loaded`, and the caller keeps the
    /// file aside ([`StateStore::keep_aside`]) before anything overwrites it.
    pub fn load(&self) -> Loaded {
        let path = self.dir.join("modules.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Loaded::default(),
            Err(e) => return Loaded { error: Some(format!("reading {}: {e}", path.display())), ..Loaded::default() },
        };
        let entries = match serde_json::from_slice::<Vec<serde_json::Value>>(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return Loaded { error: Some(format!("{}: {e}", path.display())), raw: bytes, ..Loaded::default() };
            }
        };
        let mut loaded = Loaded { raw: bytes.clone(), ..Loaded::default() };
        for (i, entry) in entries.into_iter().enumerate() {
            match serde_json::from_value::<Saved>(entry) {
                Ok(s) => loaded.saved.push(s),
                Err(e) => {
                    loaded.unreadable += 1;
                    loaded.error.get_or_insert_with(|| format!("{} entry {i}: {e}", path.display()));
                }
            }
        }
        loaded
    }

    /// Writes `raw` — `modules.json` as it was read, before restoring
    /// rewrote it with what came back — beside it as
    /// `modules.json.<why>-<unix ms>`: the operator can still read and
    /// repair what did not come back.
    pub fn keep_aside(&self, raw: &[u8], why: &str) -> io::Result<PathBuf> {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let aside = self.dir.join(format!("modules.json.{why}-{ms}"));
        netserv_shell::files::write_atomically(&aside, raw)?;
        Ok(aside)
    }
}

/// What [`StateStore::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub saved: Vec<Saved>,
    /// Entries that could not be decoded.
    pub unreadable: usize,
    /// Why the file, or a part of it, could not be read.
    pub error: Option<String>,
    /// The file's bytes as read (empty when it could not be read at all).
    pub raw: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_keyed_by_a_verified_hash() {
        let dir = std::env::temp_dir().join(format!("netserv-persist-{}", std::process::id()));
        let store = StateStore::open(&dir).expect("open");
        let bytes = b"module bytes".to_vec();
        let hash = ModuleHash::of(&bytes);
        store.cache(&hash, &bytes);
        assert_eq!(store.cached(&hash.to_hex()), Some(bytes));
        // A file whose contents no longer match its name is not used.
        std::fs::write(store.cache_path(&hash.to_hex()).expect("path"), b"tampered").expect("write");
        assert_eq!(store.cached(&hash.to_hex()), None);
        assert_eq!(store.cached("../../etc/passwd"), None);
        let nothing = store.load();
        assert!(nothing.saved.is_empty() && nothing.error.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn saved(name: &str) -> serde_json::Value {
        serde_json::json!({
            "request": { "tenant": "itsp-a", "name": name, "source": { "url": "http://198.18.2.20/m.wasm" },
                         "sha256": "00".repeat(32) },
            "expires_at_unix_ms": null,
        })
    }

    #[test]
    fn an_entry_that_cannot_be_decoded_costs_only_itself_and_the_file_can_be_kept_aside() {
        let dir = std::env::temp_dir().join(format!("netserv-persist-bad-{}", std::process::id()));
        let store = StateStore::open(&dir).expect("open");
        let file = serde_json::json!([saved("one"), { "request": 7 }, saved("two")]);
        std::fs::write(dir.join("modules.json"), file.to_string()).expect("write");
        let got = store.load();
        let names: Vec<&str> = got.saved.iter().map(|s| s.request.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(got.unreadable, 1);
        assert!(got.error.as_deref().is_some_and(|e| e.contains("entry 1")), "{:?}", got.error);
        let aside = store.keep_aside(&got.raw, "unreadable").expect("kept aside");
        assert_eq!(std::fs::read_to_string(&aside).expect("aside"), file.to_string());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_file_that_is_not_json_is_reported_not_read_as_empty() {
        let dir = std::env::temp_dir().join(format!("netserv-persist-torn-{}", std::process::id()));
        let store = StateStore::open(&dir).expect("open");
        std::fs::write(dir.join("modules.json"), b"[{\"request\": {\"ten").expect("write");
        let got = store.load();
        assert!(got.saved.is_empty());
        assert!(got.error.is_some());
        let _ = std::fs::remove_dir_all(dir);
    }
}

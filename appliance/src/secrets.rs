//! Per-tenant secrets (DESIGN.md §4.3): set by the tenant over its
//! authenticated admin API, read by its modules through the `secrets` host
//! import, never carried in on-path signaling (which is signed, not
//! encrypted). Kept in the node's state directory, one file per tenant,
//! readable by the node's user only, so they survive a restart.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Names: 1-64 of `a-z A-Z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Secrets a tenant may hold, and their size.
pub const MAX_SECRETS: usize = 64;
pub const MAX_SECRET_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret name must be 1-64 letters, digits, '.', '_' or '-'")]
    Name,
    #[error("a secret holds at most {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    #[error("a tenant holds at most {MAX_SECRETS} secrets")]
    TooMany,
    #[error("writing the secrets file: {0}")]
    Io(String),
}

/// One tenant's secrets.
#[derive(Debug, Default)]
pub struct TenantSecrets {
    values: RwLock<BTreeMap<String, Vec<u8>>>,
    file: Option<PathBuf>,
    /// The file did not parse: nothing is written over it.
    corrupt: bool,
}

impl TenantSecrets {
    /// Loads `file` (absent: none yet); None: in memory only.
    pub fn open(file: Option<PathBuf>) -> Self {
        let mut corrupt = false;
        let values = match file.as_ref().map(std::fs::read) {
            None => BTreeMap::new(),
            Some(Err(_)) => BTreeMap::new(),
            Some(Ok(b)) => match serde_json::from_slice::<BTreeMap<String, String>>(&b) {
                Ok(m) => m.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
                Err(e) => {
                    // Never overwrite what cannot be read: every write is
                    // refused until the operator repairs or removes it.
                    tracing::error!(file = ?file, error = %e, "tenant secrets file is corrupt; it is left as it is and no secret can be set");
                    corrupt = true;
                    BTreeMap::new()
                }
            },
        };
        Self { values: RwLock::new(values), file, corrupt }
    }

    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.values.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.values.read().keys().cloned().collect()
    }

    pub fn set(&self, name: &str, value: Vec<u8>) -> Result<(), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::Name);
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge);
        }
        let mut v = self.values.write();
        if v.len() >= MAX_SECRETS && !v.contains_key(name) {
            return Err(SecretError::TooMany);
        }
        // On disk first: a secret the API says failed is not live either.
        let mut next = v.clone();
        next.insert(name.to_owned(), value);
        self.save(&next)?;
        *v = next;
        Ok(())
    }

    /// Whether it was there.
    pub fn remove(&self, name: &str) -> Result<bool, SecretError> {
        let mut v = self.values.write();
        let mut next = v.clone();
        let had = next.remove(name).is_some();
        self.save(&next)?;
        *v = next;
        Ok(had)
    }

    fn save(&self, v: &BTreeMap<String, Vec<u8>>) -> Result<(), SecretError> {
        let Some(file) = &self.file else { return Ok(()) };
        if self.corrupt {
            return Err(SecretError::Io(format!("{} is corrupt: repair or remove it", file.display())));
        }
        // Stored as text: secrets are set as UTF-8 through the API.
        let text: BTreeMap<&str, String> =
            v.iter().map(|(k, b)| (k.as_str(), String::from_utf8_lossy(b).into_owned())).collect();
        let bytes = serde_json::to_vec_pretty(&text).map_err(|e| SecretError::Io(e.to_string()))?;
        netserv_shell::files::write_private(file, &bytes).map_err(|e| SecretError::Io(e.to_string()))
    }
}

/// Every tenant's secrets on this node.
#[derive(Debug, Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
    tenants: parking_lot::Mutex<BTreeMap<String, Arc<TenantSecrets>>>,
}

impl Secrets {
    /// `dir`: where the files live (None: memory only, for tests).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir, tenants: Default::default() }
    }

    pub fn tenant(&self, tenant: &str) -> Arc<TenantSecrets> {
        self.tenants
            .lock()
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                let file = self.dir.as_ref().map(|d| d.join(format!("{tenant}.json")));
                Arc::new(TenantSecrets::open(file))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_bounded_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("netserv-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let s = Secrets::new(Some(dir.clone()));
        let t = s.tenant("itsp-a");
        assert_eq!(t.set("turn-secret", b"north-wind".to_vec()), Ok(()));
        assert_eq!(t.set("bad name", vec![]), Err(SecretError::Name));
        assert_eq!(t.set("big", vec![b'x'; MAX_SECRET_BYTES + 1]), Err(SecretError::TooLarge));
        let again = Secrets::new(Some(dir.clone())).tenant("itsp-a");
        assert_eq!(again.get("turn-secret"), Some(b"north-wind".to_vec()));
        assert_eq!(again.names(), ["turn-secret"]);
        assert_eq!(Secrets::new(Some(dir.clone())).tenant("itsp-b").get("turn-secret"), None, "per tenant");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("itsp-a.json")).expect("file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by the node's user only");
        assert_eq!(again.remove("turn-secret"), Ok(true));
        // A file that does not parse is never written over.
        std::fs::write(dir.join("itsp-c.json"), b"{not json").expect("write");
        let c = Secrets::new(Some(dir.clone())).tenant("itsp-c");
        assert!(matches!(c.set("turn-secret", b"x".to_vec()), Err(SecretError::Io(_))));
        assert_eq!(c.get("turn-secret"), None, "nor is the value live");
        assert_eq!(std::fs::read(dir.join("itsp-c.json")).expect("read"), b"{not json");
        let _ = std::fs::remove_dir_all(dir);
    }
}

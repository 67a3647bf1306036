//! The tenant signing key file: the Ed25519 seed as 64 hex digits, one line
//! (what `netserv-signal keygen` writes).

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use std::path::Path;

pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("{}: expected 64 hex digits (an Ed25519 seed)", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

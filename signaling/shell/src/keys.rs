//! Key files: a signing key (a tenant's, an ISP's, an appliance's) is the
//! Ed25519 seed as 64 hex digits on one line (`netserv-signal keygen`); a
//! node certificate (`netserv-signal certify`) is JSON naming the node, its
//! public key, the expiry and the ISP's signature.

use anyhow::{Context as _, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use netserv_nslp::wire::NodeCertificate;
use std::path::Path;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    node_id: String,
    node_key: String,
    not_after_unix: u64,
    isp_signature: String,
}

pub fn write_certificate(path: &Path, node_id: &str, cert: &NodeCertificate) -> anyhow::Result<()> {
    let file = CertificateFile {
        node_id: node_id.to_owned(),
        node_key: hex::encode(cert.node_key),
        not_after_unix: cert.not_after_unix,
        isp_signature: hex::encode(cert.isp_signature),
    };
    let json = serde_json::to_vec_pretty(&file)?;
    crate::files::write_atomically(path, &json).with_context(|| format!("writing {}", path.display()))
}

/// The certificate in `path` and the node id it names; errors name the
/// file and the field.
pub fn read_certificate(path: &Path) -> anyhow::Result<(String, NodeCertificate)> {
    let text = std::fs::read(path).with_context(|| format!("reading the certificate {}", path.display()))?;
    let f: CertificateFile = serde_json::from_slice(&text).with_context(|| format!("{}", path.display()))?;
    let node_key: [u8; 32] = hex::decode(&f.node_key)
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("{}: node_key: expected 64 hex digits", path.display()))?;
    let isp_signature: [u8; 64] = hex::decode(&f.isp_signature)
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("{}: isp_signature: expected 128 hex digits", path.display()))?;
    Ok((f.node_id, NodeCertificate { node_key, not_after_unix: f.not_after_unix, isp_signature }))
}

/// A public key as 64 hex digits; `what` names it in the error.
pub fn parse_public_key(hex_key: &str, what: &str) -> anyhow::Result<VerifyingKey> {
    let Some(bytes) = hex::decode(hex_key.trim()).ok().and_then(|v| <[u8; 32]>::try_from(v).ok()) else {
        bail!("{what}: expected 64 hex digits (an Ed25519 public key)");
    };
    VerifyingKey::from_bytes(&bytes).map_err(|_| anyhow::anyhow!("{what}: not a valid Ed25519 public key"))
}

pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("{}: expected 64 hex digits (an Ed25519 seed)", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

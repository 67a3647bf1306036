//! The node's own identity on the signaling path: its signing key and the
//! ISP's certificate of it (`[signaling] node_key_file` and
//! `node_certificate_file`). With them every entry this node answers with is
//! signed (`netserv_nslp::proof`), so the ITSPs that trust the ISP's key can
//! tell its answers from ones the phone at the end of the path made up.

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use netserv_nslp::wire::{NodeCertificate, NodeEntry};
use std::path::Path;

#[derive(Debug)]
pub struct Identity {
    key: SigningKey,
    certificate: NodeCertificate,
}

impl Identity {
    /// Reads both files and checks that they go together and name this
    /// node; the errors name the setting.
    pub fn load(node_id: &str, key_file: &Path, certificate_file: &Path) -> anyhow::Result<Self> {
        let key = netserv_shell::keys::read_signing_key(key_file).context("signaling.node_key_file")?;
        let (certified_id, certificate) =
            netserv_shell::keys::read_certificate(certificate_file).context("signaling.node_certificate_file")?;
        if certified_id != node_id {
            bail!(
                "signaling.node_certificate_file certifies node `{certified_id}`, but this node is `{node_id}` (node_id)"
            );
        }
        if certificate.node_key != key.verifying_key().to_bytes() {
            bail!("signaling.node_certificate_file certifies another key than the one in signaling.node_key_file");
        }
        let now = netserv_shell::net::unix_ms() / 1000;
        if certificate.not_after_unix < now {
            // Still start: the node serves, its answers are just not counted.
            tracing::error!(
                not_after_unix = certificate.not_after_unix,
                "the node's certificate has expired: requesters will not count its answers until it is renewed"
            );
        }
        Ok(Self { key, certificate })
    }

    /// Signs `entry`, this node's answer to the request with `nonce`.
    pub fn sign(&self, entry: &mut NodeEntry, nonce: &[u8; 16]) {
        netserv_nslp::proof::sign_entry(entry, &self.certificate, &self.key, nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_certificate_must_name_this_node_and_go_together() {
        let dir = std::env::temp_dir().join(format!("netserv-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (isp, node, other) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let write_key = |name: &str, seed: &[u8; 32]| {
            let p = dir.join(name);
            std::fs::write(&p, hex::encode(seed)).expect("key");
            p
        };
        let (node_key, other_key) = (write_key("node.key", &node), write_key("other.key", &other));
        let cert = netserv_nslp::proof::certify(
            &SigningKey::from_bytes(&isp),
            "edge-1",
            &SigningKey::from_bytes(&node).verifying_key(),
            u64::MAX,
        );
        let cert_file = dir.join("node.cert");
        netserv_shell::keys::write_certificate(&cert_file, "edge-1", &cert).expect("cert");

        let id = Identity::load("edge-1", &node_key, &cert_file).expect("a matching pair");
        let mut e = NodeEntry::new("edge-1", netserv_nslp::wire::Status::Ok, "probed");
        id.sign(&mut e, &[9; 16]);
        let isps = [SigningKey::from_bytes(&isp).verifying_key()];
        assert_eq!(netserv_nslp::proof::verify_entry(&e, &[9; 16], &isps, 1), Ok(()));

        let err = |r: anyhow::Result<Identity>| format!("{:#}", r.expect_err("refused"));
        assert!(err(Identity::load("edge-2", &node_key, &cert_file)).contains("(node_id)"));
        assert!(err(Identity::load("edge-1", &other_key, &cert_file)).contains("another key"));
        assert!(err(Identity::load("edge-1", &dir.join("missing.key"), &cert_file)).contains("node_key_file"));
        std::fs::write(&cert_file, "{}").expect("write");
        assert!(err(Identity::load("edge-1", &node_key, &cert_file)).contains("node_certificate_file"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

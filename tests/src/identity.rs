//! The testbed's eyeball ISP: one key that certifies every test appliance's
//! node key, as `netserv-signal certify` does, so the test plugins — which
//! trust this ISP — count what the appliances answer, and a test can make an
//! appliance whose answers they must not count.

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use std::path::{Path, PathBuf};

/// The ISP's signing key (a fixed test seed).
const ISP_SEED: [u8; 32] = [0x15; 32];

/// The ISP's public key, as a plugin's `signaling.trusted_isp_keys` names it.
pub fn isp_public_key() -> String {
    hex::encode(SigningKey::from_bytes(&ISP_SEED).verifying_key().to_bytes())
}

/// A node key for `node_id` (derived from it: a test restarting a node
/// gets the same key) certified by `isp` for a day, written to `dir` as
/// `<node_id>.key` and `<node_id>.cert`.
pub fn node_files(dir: &Path, node_id: &str, isp: &[u8; 32]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let mut seed = [0u8; 32];
    for (i, b) in node_id.bytes().enumerate() {
        if let Some(s) = seed.get_mut(i % 32) {
            *s = s.wrapping_mul(31).wrapping_add(b);
        }
    }
    seed[31] ^= 0x5a;
    let key = SigningKey::from_bytes(&seed);
    let (key_path, cert_path) = (dir.join(format!("{node_id}.key")), dir.join(format!("{node_id}.cert")));
    netserv_shell::files::write_private(&key_path, format!("{}\n", hex::encode(seed)).as_bytes())?;
    let not_after = netserv_shell::net::unix_ms() / 1000 + 86_400;
    let cert = netserv_nslp::proof::certify(&SigningKey::from_bytes(isp), node_id, &key.verifying_key(), not_after);
    netserv_shell::keys::write_certificate(&cert_path, node_id, &cert)?;
    Ok((key_path, cert_path))
}

/// `config` (an appliance's) with a node key certified by the testbed's ISP
/// written to `dir` and named in its `[signaling]` table — unless the config
/// names a key of its own, or `NETSERV_TEST_UNCERTIFIED` is in it as a
/// comment (an appliance whose answers no plugin may count).
pub fn certified(config: &str, dir: &Path) -> anyhow::Result<String> {
    if config.contains("node_key_file") || config.contains("# NETSERV_TEST_UNCERTIFIED") {
        return Ok(config.to_owned());
    }
    let node_id = config
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("node_id")?.trim().strip_prefix('=')?.trim().strip_prefix('"')?.split('"').next()
        })
        .context("the config has no node_id")?;
    let (key, cert) = node_files(dir, node_id, &ISP_SEED)?;
    let lines = format!("node_key_file = {key:?}\nnode_certificate_file = {cert:?}\n");
    Ok(match config.find("\n[signaling]\n") {
        Some(at) => {
            let after = at + "\n[signaling]\n".len();
            format!("{}{lines}{}", &config[..after], &config[after..])
        }
        None => format!("{config}\n[signaling]\n{lines}"),
    })
}

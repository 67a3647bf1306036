//! The SIP server plugin in the testbed: its config on the embedded
//! defaults (Kamailio at core's 198.18.2.20:5060, HEP on loopback, tenant
//! `itsp-a`), its HTTP status, and a call between two sipp phones.

use crate::netns::{self, Proc, Testbed};
use crate::path::SEED_A;
use crate::paths;
use std::path::Path;
use std::time::Duration;

pub const SERVER: &str = "198.18.2.20:5060";
/// Two phone addresses in `ua` (the second is added by [`start`]).
pub const PHONES: [&str; 2] = ["198.18.1.10", "198.18.1.11"];

pub fn config(dir: &Path) -> String {
    format!(
        r#"tenant = "itsp-a"
key_file = {key:?}
server = "{SERVER}"
hep_listen = "127.0.0.1:9060"
http_listen = "198.18.2.20:8280"
registry = {registry:?}

[module]
file = {module:?}
http_advertise = "198.18.2.20:8280"
properties = {{ server = "Kamailio (NetServ edge)" }}

[policy]
keepalive_threshold = 1
ttl_secs = 16
refresh_before_secs = 6
idle_after_secs = 4
retry_after_secs = 2

[signaling]
query_attempts = 2
timeout_ms = 8000
trusted_isp_keys = ["{isp}"]
"#,
        isp = crate::identity::isp_public_key(),
        key = dir.join("itsp-a.key"),
        registry = dir.join("registry.json"),
        module = paths::module("netserv_keepalive"),
    )
}

/// [`config`] with a `[relay]`: the media relay deployed on REGISTER, and
/// `/turn` handing out credentials for it (`shared_secret` is what the
/// tenant sets as `turn-secret` on its appliances).
pub fn config_with_relay(dir: &Path, shared_secret: &str, fallback: &str) -> String {
    format!(
        "{}\n[relay]\nfile = {:?}\nshared_secret = \"{shared_secret}\"\nregistry = {:?}\ncredential_ttl_secs = 600\nfallback_uris = [\"{fallback}\"]\nproperties = {{ realm = \"itsp-a.example\" }}\n",
        config(dir),
        paths::module("netserv_media_relay"),
        dir.join("relay-registry.json"),
    )
}

/// Writes the key and config into `dir` and starts the plugin in core.
pub fn start(tb: &Testbed, dir: &Path) -> anyhow::Result<Proc> {
    start_with(tb, dir, &config(dir))
}

/// [`start`] with a config of the caller's.
pub fn start_with(tb: &Testbed, dir: &Path, config_text: &str) -> anyhow::Result<Proc> {
    tb.add_ua_address(PHONES[1])?;
    std::fs::write(dir.join("itsp-a.key"), SEED_A)?;
    let cfg = dir.join("plugin.toml");
    std::fs::write(&cfg, config_text)?;
    let cfg = cfg.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let p =
        tb.spawn(&tb.core, paths::bin("netserv-sip-plugin"), &["run", "--config", cfg], Some(&dir.join("plugin.log")))?;
    for _ in 0..200 {
        if get(tb, "/healthz").contains("ok") {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the plugin did not start:\n{}", std::fs::read_to_string(dir.join("plugin.log")).unwrap_or_default())
}

/// GET on the plugin's HTTP server (empty on failure).
pub fn get(tb: &Testbed, path: &str) -> String {
    tb.output(&tb.core, "curl", &["-s", "-m", "5", &format!("http://198.18.2.20:8280{path}")]).unwrap_or_default()
}

/// A value from a Prometheus text page (0 when absent).
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

/// Registers `callee` at 198.18.1.11:5071, answers as a sipp UAS there, and
/// calls it from 198.18.1.10:5072 (INVITE, 200, ACK, BYE). Returns whether the
/// caller's call succeeded, and what the two sipps printed.
pub fn call_through(tb: &Testbed, dir: &Path) -> (bool, String) {
    let reg = dir.join("callee-register.xml");
    std::fs::write(&reg, crate::kamailio::phone_scenario("callee", 0, 0, 0, 10)).expect("scenario");
    let r = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sf", reg.to_str().expect("utf-8"), "-i", PHONES[1], "-p", "5071", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp register");
    if !r.status.success() {
        return (false, format!("callee REGISTER failed: {}", String::from_utf8_lossy(&r.stdout)));
    }
    let uas = netns::cmd(&tb.ua, "sipp")
        .args(["-sn", "uas", "-i", PHONES[1], "-p", "5071", "-m", "1", "-timeout", "20s", "-nostdin"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    let uac = netns::cmd(&tb.ua, "sipp")
        .args([SERVER, "-sn", "uac", "-s", "callee", "-i", PHONES[0], "-p", "5072", "-m", "1", "-d", "500"])
        .args(["-recv_timeout", "5000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .expect("sipp uac");
    let uas = uas.wait_with_output().expect("uas");
    (
        uac.status.success() && uas.status.success(),
        format!(
            "--- caller\n{}\n--- callee\n{}",
            String::from_utf8_lossy(&uac.stdout),
            String::from_utf8_lossy(&uas.stdout)
        ),
    )
}

//! On-path signaling end to end: a real `netserv-signal` in `core` signals
//! towards the phone; two appliances on the path take part, a plain Linux
//! router between them forwards the signaling untouched.
//!
//! ```text
//!   core ── edge1 ── router ── edge2 ── ua
//! ```
//! Needs root, iptables and python3 (its http.server is the module origin).

use netserv_tests::appliance::{ADMIN_TOKEN, TempDir};
use netserv_tests::path::{PathTestbed, SEED_A, UA_IP, appliance_config};
use netserv_tests::{Appliance, netns, paths, wait_for};
use serde_json::Value;
use std::time::Duration;

const SERVER: &str = "198.18.10.20:5060";
/// RFC 8032 §7.1 TEST 2 seed: a key the appliances do not trust for itsp-a.
const SEED_OTHER: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

fn config(node_id: &str, state_dir: &std::path::Path) -> String {
    appliance_config(node_id, state_dir, "")
}

struct Env {
    tb: PathTestbed,
    dir: TempDir,
    edge1: Appliance,
    edge2: Appliance,
    _origin: netns::Proc,
    key: String,
    wrong_key: String,
    module_file: String,
    url: String,
}

fn env(tag: &str) -> Env {
    let tb = PathTestbed::new(tag).expect("testbed (run as root)");
    let dir = TempDir::new(tag).expect("tmp");
    let key = dir.0.join("itsp-a.key");
    std::fs::write(&key, SEED_A).expect("key");
    let wrong_key = dir.0.join("other.key");
    std::fs::write(&wrong_key, SEED_OTHER).expect("key");
    let www = dir.0.join("www");
    let module_file = www.join("keepalive.wasm");
    let (origin, url) = tb.module_origin(&www).expect("module origin");
    let edge1 = Appliance::start_in(&tb.edge1, &config("edge1", &dir.0.join("edge1"))).expect("edge1 starts");
    let edge2 = Appliance::start_in(&tb.edge2, &config("edge2", &dir.0.join("edge2"))).expect("edge2 starts");
    Env {
        tb,
        dir,
        edge1,
        edge2,
        _origin: origin,
        key: key.to_str().expect("utf-8").into(),
        wrong_key: wrong_key.to_str().expect("utf-8").into(),
        module_file: module_file.to_str().expect("utf-8").into(),
        url,
    }
}

impl Env {
    /// Runs `netserv-signal --json <args>` in core; returns its JSON and exit code.
    fn signal(&self, args: &[&str]) -> (Value, i32) {
        let out = netns::cmd(&self.tb.core, paths::bin("netserv-signal"))
            .arg("--json")
            .args(args)
            .output()
            .expect("netserv-signal runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(text.trim())
            .unwrap_or_else(|_| panic!("not JSON: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        (v, out.status.code().unwrap_or(-1))
    }

    fn setup(&self, key: &str, extra: &[&str]) -> (Value, i32) {
        let mut args = vec![
            "setup",
            "--towards",
            UA_IP,
            "--key",
            key,
            "--user",
            "itsp-a",
            "--module",
            "keepalive",
            "--url",
            &self.url,
            "--filter-port",
            "5060",
            "--prop",
            "server=NetServ-path",
        ];
        if !extra.contains(&"--sha256") {
            args.extend(["--module-file", &self.module_file]);
        }
        if !extra.contains(&"--filter-addr") {
            args.extend(["--filter-addr", "198.18.10.20/32"]);
        }
        args.extend(extra);
        self.signal(&args)
    }

    /// Stops edge2 (SIGTERM: drain) and starts it again on the same state.
    fn restart_edge2(&mut self) {
        self.edge2.proc.signal_and_wait("TERM", Duration::from_secs(10)).expect("edge2 drains");
        assert_eq!(netns::module_rules(&self.tb.edge2), 0, "drained: no rule left");
        self.edge2 =
            Appliance::start_in(&self.tb.edge2, &config("edge2", &self.dir.0.join("edge2"))).expect("edge2 restarts");
    }

    fn ask_keepalives(&self, count: u32) -> Value {
        let notify = self.dir.0.join("notify.sip");
        std::fs::write(
            &notify,
            "NOTIFY sip:198.18.10.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.13.10:5099;branch=z9hG4bK-path;rport\r\n\
             From: <sip:phone@198.18.13.10>;tag=p1\r\nTo: <sip:198.18.10.20:5060>\r\nCall-ID: path-1\r\nCSeq: 1 NOTIFY\r\n\
             Event: keep-alive\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("payload");
        let n = count.to_string();
        let out = self
            .tb
            .output(
                &self.tb.ua,
                paths::bin("netserv-probe"),
                &[
                    "ask",
                    "--to",
                    SERVER,
                    "--payload",
                    notify.to_str().expect("utf-8"),
                    "--count",
                    &n,
                    "--timeout-ms",
                    "500",
                ],
            )
            .expect("probe");
        serde_json::from_str(out.trim()).expect("json")
    }

    fn installed(&self) -> [bool; 2] {
        [&self.edge1, &self.edge2].map(|a| a.module("itsp-a", "keepalive").is_ok())
    }

    fn logs(&self) -> String {
        format!("--- edge1\n{}\n--- edge2\n{}", self.edge1.log(), self.edge2.log())
    }
}

fn node_ids(v: &Value) -> Vec<String> {
    v["stack"].as_array().map_or(vec![], |s| s.iter().map(|e| e["node_id"].as_str().unwrap_or("").to_owned()).collect())
}

fn statuses(v: &Value) -> Vec<String> {
    v["stack"].as_array().map_or(vec![], |s| s.iter().map(|e| e["status"].as_str().unwrap_or("").to_owned()).collect())
}

#[test]
fn setup_probe_serve_and_remove_along_the_path() {
    if !netserv_tests::e2e_ready("setup_probe_serve_and_remove_along_the_path") {
        return;
    }
    let mut e = env("sigpath");
    let (v, code) = e.setup(&e.key, &["--ttl", "120"]);
    assert_eq!(code, 0, "{v}\n{}", e.logs());
    assert_eq!(node_ids(&v), ["edge1", "edge2"], "both appliances, in path order: {v}");
    assert_eq!(statuses(&v), ["ok", "ok"]);
    assert_eq!(e.installed(), [true, true]);
    // The plain router forwarded the signaling untouched: it has no GIST, and
    // edge2 was reached through it.
    assert_eq!(netns::module_rules(&e.tb.router), 0);

    // PROBE: a stack of two in path order, each with the module and its load.
    let (p, code) = e.signal(&["probe", "--towards", UA_IP, "--key", &e.key, "--user", "itsp-a"]);
    assert_eq!(code, 0, "{p}");
    assert_eq!(node_ids(&p), ["edge1", "edge2"]);
    for entry in p["stack"].as_array().expect("stack") {
        assert!(
            entry["modules"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m.as_str().is_some_and(|m| m.starts_with("itsp-a/keepalive@")))),
            "{entry}"
        );
        assert!(entry["capabilities"].as_array().is_some_and(|c| !c.is_empty()));
        assert!(entry["address"].is_string());
    }

    // Keep-alives from the phone are answered by edge2, the appliance closest
    // to it, from the server's address; edge1 never sees them.
    let answers = e.ask_keepalives(20);
    assert_eq!(answers["answered"], 20, "{answers}\n{}", e.logs());
    assert_eq!(answers["sources"], serde_json::json!([SERVER]));
    let replied = |a: &Appliance| a.module("itsp-a", "keepalive").expect("module")["counters"]["replied"].as_u64();
    assert_eq!(replied(&e.edge2), Some(20));
    assert_eq!(replied(&e.edge1), Some(0));

    // A restart keeps the module, with the TTL it had left.
    e.restart_edge2();
    let m = e.edge2.module("itsp-a", "keepalive").expect("restored after restart");
    let left = m["ttl_remaining_secs"].as_u64().expect("ttl");
    assert!((100..=120).contains(&left), "remaining TTL {left}");
    assert_eq!(e.ask_keepalives(5)["answered"], 5, "{}", e.logs());

    // REMOVE uninstalls on both.
    let (r, code) =
        e.signal(&["remove", "--towards", UA_IP, "--key", &e.key, "--user", "itsp-a", "--module", "keepalive"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(statuses(&r), ["ok", "ok"]);
    assert_eq!(e.installed(), [false, false]);
    assert_eq!(netns::module_rules(&e.tb.edge1) + netns::module_rules(&e.tb.edge2), 0);
}

#[test]
fn a_short_ttl_expires_without_signaling() {
    if !netserv_tests::e2e_ready("a_short_ttl_expires_without_signaling") {
        return;
    }
    let e = env("sigttl");
    let (v, code) = e.setup(&e.key, &["--ttl", "3"]);
    assert_eq!(code, 0, "{v}\n{}", e.logs());
    assert_eq!(e.installed(), [true, true]);
    wait_for("TTL expiry on both appliances", Duration::from_secs(8), || {
        (e.installed() == [false, false]).then_some(())
    });
}

#[test]
fn refusals_answer_with_the_reason_and_install_nothing() {
    if !netserv_tests::e2e_ready("refusals_answer_with_the_reason_and_install_nothing") {
        return;
    }
    let e = env("sigref");
    // A key the appliances do not know for itsp-a.
    let (v, code) = e.setup(&e.wrong_key, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(statuses(&v), ["bad-signature"], "refused at the first appliance: {v}");
    // A wrong sha256: both download, neither installs.
    let zeros = "0".repeat(64);
    let (v, code) = e.setup(&e.key, &["--sha256", &zeros]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(statuses(&v), ["hash-mismatch", "hash-mismatch"], "{v}");
    // A prefix that is not the tenant's.
    let (v, code) = e.setup(&e.key, &["--filter-addr", "198.18.99.1/32"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(statuses(&v), ["unauthorized", "unauthorized"], "{v}");
    assert_eq!(e.installed(), [false, false]);

    // A replayed SETUP: accepted once, refused the second time byte for byte.
    let saved = e.dir.0.join("setup.req");
    let (v, code) = e.setup(&e.key, &["--ttl", "60", "--save", saved.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{v}");
    let (c, _) = e.edge1.api("DELETE", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).expect("api");
    assert_eq!(c, 200);
    let (c, _) = e.edge2.api("DELETE", "/api/v1/modules/itsp-a/keepalive", None, ADMIN_TOKEN).expect("api");
    assert_eq!(c, 200);
    // Sent towards another phone inside the window: the signature binds the
    // flow it was signed for, so the first appliance refuses it as forged.
    let other_phone = UA_IP.replace(".10", ".11");
    assert_ne!(other_phone, UA_IP);
    let (v, code) = e.signal(&["resend", "--towards", &other_phone, "--request", saved.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(statuses(&v), ["bad-signature"], "{v}");
    let (v, code) = e.signal(&["resend", "--towards", UA_IP, "--request", saved.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(statuses(&v), ["replay"], "{v}");
    assert_eq!(e.installed(), [false, false]);
}

#[test]
fn trigger_installs_along_the_return_path() {
    if !netserv_tests::e2e_ready("trigger_installs_along_the_return_path") {
        return;
    }
    let e = env("sigtrig");
    let (v, code) = e.signal(&[
        "trigger",
        "--towards",
        UA_IP,
        "--key",
        &e.key,
        "--user",
        "itsp-a",
        "--module",
        "keepalive",
        "--url",
        &e.url,
        "--module-file",
        &e.module_file,
        "--filter-addr",
        "198.18.10.20/32",
        "--filter-port",
        "5060",
        "--ttl",
        "60",
    ]);
    assert_eq!(code, 0, "{v}\n{}", e.logs());
    // The return leg starts at the far end: edge2 first, then edge1.
    assert_eq!(node_ids(&v), ["edge2", "edge1"], "{v}");
    assert_eq!(statuses(&v), ["ok", "ok"]);
    assert_eq!(e.installed(), [true, true]);
    assert_eq!(e.ask_keepalives(5)["answered"], 5);
}

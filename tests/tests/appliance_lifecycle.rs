//! The appliance as an operator runs it: SIGHUP reloads, and the saved
//! modules survive a corrupt file and SIGKILL in the middle of writing them.
//! Real processes in network namespaces; needs root and iptables.

use netserv_tests::appliance::{ADMIN_TOKEN, TempDir, keepalive_install, test_config};
use netserv_tests::{Appliance, Testbed, wait_for};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A third tenant, for a reload to add.
const ITSP_C: &str = r#"
[[tenants]]
name = "itsp-c"
public_key = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"
api_token = "tenant-c-token-0123456789"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5080]
"#;

fn tenants(app: &Appliance) -> Vec<String> {
    let (_, v) = app.api("GET", "/api/v1/tenants", None, ADMIN_TOKEN).expect("tenants");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().or_else(|| t.as_str()).map(str::to_owned))
        .collect()
}

fn hup(app: &Appliance) {
    let status = std::process::Command::new("kill").args(["-HUP", &app.proc.pid().to_string()]).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -HUP");
}

/// Tenant B's keep-alive module on its port 5070.
fn b_keepalive() -> Value {
    let mut m = keepalive_install(None);
    m["tenant"] = "itsp-b".into();
    m["filter"]["ports"] = serde_json::json!([5070]);
    m
}

#[test]
fn sighup_reloads_tenants_and_names_what_needs_a_restart() {
    if !netserv_tests::e2e_ready("sighup_reloads_tenants_and_names_what_needs_a_restart") {
        return;
    }
    let tb = Testbed::new("hup").expect("testbed (run as root)");
    let app = Appliance::start(&tb, &test_config("")).expect("appliance starts");
    app.install(&b_keepalive()).expect("tenant B installs");
    let running = std::fs::read_to_string(&app.config_path).expect("config");

    // Tenant C added, tenant B's port withdrawn, and two settings a running
    // node cannot take on.
    let reloaded = format!("{running}\n{ITSP_C}")
        .replace("listen_ports = [5070]", "listen_ports = [5071]")
        .replace("listen = \"127.0.0.1:8270\"", "listen = \"127.0.0.1:9270\"")
        .replace("queues = 2", "queues = 3");
    std::fs::write(&app.config_path, reloaded).expect("write config");
    hup(&app);
    wait_for("tenant C after SIGHUP", Duration::from_secs(10), || {
        tenants(&app).iter().any(|t| t == "itsp-c").then_some(())
    });
    wait_for("tenant B's module retired", Duration::from_secs(10), || {
        let (code, _) = app.api("GET", "/api/v1/modules/itsp-b/keepalive", None, ADMIN_TOKEN).ok()?;
        (code == 404).then_some(())
    });
    let log = app.log();
    let line =
        log.lines().find(|l| l.contains("need a restart")).unwrap_or_else(|| panic!("no restart warning:\n{log}"));
    assert!(line.contains("api.listen") && line.contains("dataplane"), "{line}");
    assert!(!line.contains("tenants"), "tenants apply on a reload: {line}");
    // Still serving where it started (the API answered above on 8270).

    // A broken file keeps the running configuration, and the log names the field.
    std::fs::write(&app.config_path, running.replace("node_id = \"edge-test\"", "node_id = \"edge test\""))
        .expect("write config");
    hup(&app);
    wait_for("the failed reload in the log", Duration::from_secs(10), || {
        app.log().lines().any(|l| l.contains("reload failed") && l.contains("node_id")).then_some(())
    });
    assert!(tenants(&app).iter().any(|t| t == "itsp-c"), "a bad file must keep the running config");
}

/// The config of a node whose state lives in `state`, so that a second
/// start finds what the first saved.
fn config_in(state: &Path) -> String {
    format!("state_dir = {state:?}\n{}", test_config(""))
}

fn health(app: &Appliance) -> Value {
    app.api("GET", "/healthz", None, ADMIN_TOKEN).expect("healthz").1
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_reported() {
    if !netserv_tests::e2e_ready("a_corrupt_state_file_is_kept_aside_and_reported") {
        return;
    }
    let tb = Testbed::new("torn").expect("testbed (run as root)");
    let dir = TempDir::new("torn").expect("tmp");
    let state = dir.0.join("state");
    let mut app = Appliance::start(&tb, &config_in(&state)).expect("appliance starts");
    app.install(&keepalive_install(None)).expect("install");
    app.proc.signal_and_wait("TERM", Duration::from_secs(10)).expect("SIGTERM");
    drop(app);

    // Half a file, as a disk that lied about a write would leave it.
    let file = state.join("modules.json");
    let whole = std::fs::read(&file).expect("saved modules");
    std::fs::write(&file, &whole[..whole.len() / 2]).expect("truncate");
    let app = Appliance::start(&tb, &config_in(&state)).expect("starts on a corrupt file");
    let h = health(&app);
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["restore"]["error"].as_str().is_some_and(|e| e.contains("modules.json")), "{h}");
    let kept = h["restore"]["kept_as"].as_str().unwrap_or_else(|| panic!("not kept aside: {h}"));
    assert_eq!(std::fs::read(kept).expect("the kept file"), whole[..whole.len() / 2], "kept as it was");
    assert!(app.log().contains("could not all be read"), "{}", app.log());
    drop(app);

    // Repaired by the operator (the whole file put back): everything returns.
    std::fs::write(&file, &whole).expect("repair");
    let app = Appliance::start(&tb, &config_in(&state)).expect("restarts");
    let h = health(&app);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["restore"]["restored"], 1, "{h}");
    app.module("itsp-a", "keepalive").expect("restored");
    drop(app);

    // One entry this version cannot read beside one it can: the good one
    // returns, and the file kept aside is the file as it was — with the
    // entry that did not (restoring rewrites modules.json with what returned).
    let saved: serde_json::Value = serde_json::from_slice(&whole).expect("saved modules are JSON");
    let mixed = serde_json::json!([saved[0].clone(), { "request": { "tenant": 7 } }]).to_string();
    std::fs::write(&file, &mixed).expect("mixed");
    let app = Appliance::start(&tb, &config_in(&state)).expect("restarts");
    let h = health(&app);
    assert_eq!((h["status"].as_str(), h["restore"]["restored"].as_u64()), (Some("degraded"), Some(1)), "{h}");
    assert_eq!(h["restore"]["unreadable"], 1, "{h}");
    let kept = h["restore"]["kept_as"].as_str().unwrap_or_else(|| panic!("not kept aside: {h}"));
    assert_eq!(std::fs::read_to_string(kept).expect("the kept file"), mixed, "the kept file lost an entry");
    app.module("itsp-a", "keepalive").expect("the readable entry restored");
    // Anyone may ask /healthz; only the admin learns why and where.
    let anon =
        tb.output(&tb.edge, "curl", &["-s", "-m", "5", "http://127.0.0.1:8270/healthz"]).expect("anonymous healthz");
    assert!(anon.contains("degraded") && !anon.contains("kept_as") && !anon.contains("modules.json"), "{anon}");
}

#[test]
fn sigkill_in_the_middle_of_saving_never_loses_the_saved_modules() {
    if !netserv_tests::e2e_ready("sigkill_in_the_middle_of_saving_never_loses_the_saved_modules") {
        return;
    }
    let tb = Testbed::new("kill").expect("testbed (run as root)");
    let dir = TempDir::new("kill").expect("tmp");
    let state = dir.0.join("state");
    for round in 0..8u64 {
        let app = Appliance::start(&tb, &config_in(&state)).expect("appliance starts");
        let h = health(&app);
        assert_eq!(h["status"], "ok", "round {round}: {h}\n{}", app.log());
        if round > 0 {
            assert!(h["restore"]["restored"].as_u64().is_some_and(|n| n >= 1), "round {round}: {h}");
            // Restored from compiled code the first round left on disk.
            assert!(files_under(&state.join("compiled")) >= 1, "round {round}: nothing in the compile cache");
        }
        app.install(&keepalive_install(Some(3_600))).expect("install");
        // Installs (each saves the modules) until SIGKILL cuts one short,
        // at a different point each round.
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                for i in 0..200u64 {
                    let mut m = b_keepalive();
                    m["ttl_secs"] = (1_000 + i).into();
                    if app.install(&m).is_err() {
                        return;
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(150 + 37 * round));
            let _ = std::process::Command::new("kill").args(["-KILL", &app.proc.pid().to_string()]).status();
            let _ = writer.join();
        });
        drop(app);
        let aside: Vec<_> = std::fs::read_dir(&state)
            .expect("state dir")
            .flatten()
            // (A `modules.json.tmp` a kill cut short is no loss: the next save replaces it.)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("modules.json.unreadable") || name.starts_with("modules.json.unrestored")
            })
            .map(|e| e.file_name())
            .collect();
        assert!(aside.is_empty(), "round {round}: a file was kept aside: {aside:?}");
    }
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 })
        .sum()
}

/// A self-signed certificate for 127.0.0.1 (openssl), as `<name>.pem` and
/// `<name>.key` in `dir`.
fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// The API over TLS: https with the configured certificate, plain HTTP
/// refused, and a renewed certificate taken on SIGHUP.
#[test]
fn the_api_serves_tls_and_takes_a_renewed_certificate_on_sighup() {
    if !netserv_tests::e2e_ready("the_api_serves_tls_and_takes_a_renewed_certificate_on_sighup") {
        return;
    }
    let tb = Testbed::new("tls").expect("testbed (run as root)");
    let dir = TempDir::new("tls").expect("tmp");
    let (cert, key) = certificate(&dir.0, "first");
    let config = test_config("").replacen(
        "admin_token = ",
        &format!("tls_cert = {cert:?}\ntls_key = {key:?}\nadmin_token = "),
        1,
    );
    let mut app = Appliance::start(&tb, &config).expect("appliance starts with TLS");
    assert_eq!(health(&app)["status"], "ok");
    let plain = tb
        .output(
            &tb.edge,
            "curl",
            &["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8270/healthz"],
        )
        .unwrap_or_default();
    // curl fails (and `output` with it): no HTTP status came back.
    assert!(!plain.contains("200"), "plain HTTP must not be served: {plain}");

    // Renewed in place (same paths), then SIGHUP: the new one is served.
    let (new_cert, new_key) = certificate(&dir.0, "second");
    std::fs::copy(&new_cert, &cert).expect("cert");
    std::fs::copy(&new_key, &key).expect("key");
    app.tls_cert = Some(new_cert);
    hup(&app);
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        app.api("GET", "/healthz", None, ADMIN_TOKEN).ok().filter(|(c, _)| *c == 200).map(|_| ())
    });
    assert!(app.log().contains("API certificate reloaded"), "{}", app.log());
}

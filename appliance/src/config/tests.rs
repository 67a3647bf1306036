use super::*;

const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// A valid config with one tenant, `itsp-a`, and `tenant_extra` in its table.
pub(crate) fn base(tenant_extra: &str) -> String {
    format!(
        r#"node_id = "edge-1"
[api]
listen = "127.0.0.1:8270"
admin_token = "admin-token-0123456789"

[[tenants]]
name = "itsp-a"
public_key = "{KEY}"
api_token = "tenant-token-0123456789"
filter_prefixes = ["198.18.2.0/24"]
listen_ports = [5060]
{tenant_extra}
"#
    )
}

fn field_of(text: &str) -> String {
    match Config::parse(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(e) => e.to_string(),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn a_good_config_parses_with_defaults() {
    let c = Config::parse(&base("")).expect("valid");
    assert_eq!(c.node_id, "edge-1");
    assert_eq!(c.dataplane, Dataplane::default());
    assert_eq!(c.tenants.len(), 1);
    assert_eq!(c.tenants[0].limits, Limits::default());
    assert_eq!(c.tenants[0].filter_prefixes[0].to_string(), "198.18.2.0/24");
}

#[test]
fn base64_keys_are_accepted_too() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(KEY).expect("hex"));
    let text = base("").replace(KEY, &b64);
    Config::parse(&text).expect("base64 key");
}

#[test]
fn errors_name_the_field() {
    assert_eq!(field_of(&base("").replace("edge-1", "edge 1")), "node_id");
    assert_eq!(field_of(&base("").replace("admin-token-0123456789", "short")), "api.admin_token");
    assert_eq!(field_of(&base("").replace(KEY, "00")), "tenants[0].public_key");
    assert_eq!(field_of(&base("").replace("198.18.2.0/24", "198.18.2.1/24")), "tenants[0].filter_prefixes[0]");
    assert_eq!(field_of(&base("").replace("198.18.2.0/24", "not-a-prefix")), "tenants[0].filter_prefixes[0]");
    assert_eq!(field_of(&base("").replace("[5060]", "[0]")), "tenants[0].listen_ports");
    assert_eq!(field_of(&base("[tenants.limits]\ncpu_deadline_ms = 0")), "tenants[0].limits.cpu_deadline_ms");
    assert_eq!(
        field_of(&base("").replacen("[[tenants]]", "[dataplane]\nqueues = 0\n\n[[tenants]]", 1)),
        "dataplane.queues"
    );
    assert_eq!(
        field_of(&base("").replacen("[[tenants]]", "[dataplane]\nqueue_base = 268\nqueues = 2\n\n[[tenants]]", 1)),
        "signaling.queue",
        "the signaling tap's queue 269 inside 268..270"
    );
    assert_eq!(
        field_of(&base("").replacen("[[tenants]]", "[dataplane]\nhooks = [\"NOWHERE\"]\n\n[[tenants]]", 1)),
        "dataplane.hooks[0]"
    );
    assert_eq!(
        field_of(&base("").replacen("[[tenants]]", "[dataplane]\nbusy_poll_us = 200000\n\n[[tenants]]", 1)),
        "dataplane.busy_poll_us"
    );
    let twice = format!(
        "{}\n[[tenants]]\nname = \"itsp-a\"\npublic_key = \"{KEY}\"\napi_token = \"other-token-0123456789\"\n",
        base("")
    );
    assert_eq!(field_of(&twice), "tenants[1].name");
    let same_token = format!(
        "{}\n[[tenants]]\nname = \"itsp-b\"\npublic_key = \"{KEY}\"\napi_token = \"tenant-token-0123456789\"\n",
        base("")
    );
    assert_eq!(field_of(&same_token), "tenants[1].api_token");
}

#[test]
fn unknown_keys_and_wrong_types_are_named_by_toml() {
    let msg = field_of(&base("colour = \"red\""));
    assert!(msg.contains("colour"), "{msg}");
    let msg = field_of(&base("").replace("[5060]", "[\"5060\"]"));
    assert!(msg.contains("listen_ports"), "{msg}");
    let msg = field_of(&base("").replacen("[[tenants]]", "[dataplane]\nsteering = \"random\"\n\n[[tenants]]", 1));
    assert!(msg.contains("steering") && msg.contains("cpu") && msg.contains("flow"), "{msg}");
}

#[test]
fn steering_defaults_to_cpu_with_a_queue_per_cpu() {
    let c = Config::parse(&base("")).expect("valid");
    assert_eq!(c.dataplane.steering, Steering::Cpu);
    let allowed = crate::dataplane::placement::allowed_cpus().len().clamp(1, 64);
    assert_eq!(usize::from(c.dataplane.queues), allowed, "one queue per CPU the process may use");
    let flow = base("").replacen("[[tenants]]", "[dataplane]\nsteering = \"flow\"\nqueues = 3\n\n[[tenants]]", 1);
    let c = Config::parse(&flow).expect("valid");
    assert_eq!((c.dataplane.steering, c.dataplane.queues), (Steering::Flow, 3));
}

/// The README's minimal config is what a newcomer copies first: it must be
/// a config this node accepts as it stands.
#[test]
fn the_readme_minimal_config_is_accepted() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("A minimal config:").expect("the README shows a minimal config");
    let rest = readme.get(start..).unwrap_or_default();
    let body = rest.split("```toml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("a toml block");
    let cfg = Config::parse(body).unwrap_or_else(|e| panic!("the README's minimal config is refused: {e}"));
    assert_eq!(cfg.node_id, "edge-1");
    assert!(!cfg.tenants.is_empty());
}

#[test]
fn relay_settings_are_checked_and_named() {
    let c = Config::parse(&format!(
        "{}\n[servers]\naddress = \"198.18.1.1\"\n",
        base("relay_ports = \"49152-49407\"\npeer_allow = [\"10.9.9.0/24\"]\n")
    ))
    .expect("valid");
    let t = c.tenant("itsp-a").expect("tenant");
    assert_eq!(t.relay_ports, Some(49152..=49407));
    assert_eq!(t.peer_allow, ["10.9.9.0/24".parse::<IpNet>().expect("net")]);
    assert_eq!(c.servers.address, Some("198.18.1.1".parse().expect("ip")));
    assert_eq!(field_of(&base("relay_ports = \"50000\"\n")), "tenants[0].relay_ports");
    assert_eq!(field_of(&base("relay_ports = \"60000-50000\"\n")), "tenants[0].relay_ports");
    assert_eq!(field_of(&base("peer_allow = [\"10.9.9.1/24\"]\n")), "tenants[0].peer_allow[0]");
    assert_eq!(field_of(&format!("{}\n[servers]\naddress = \"0.0.0.0\"\n", base(""))), "servers.address");
    assert_eq!(c.servers.coalesce_us, 0, "coalescing is off by default");
    let on = Config::parse(&format!("{}\n[servers]\ncoalesce_us = 200\n", base(""))).expect("valid");
    assert_eq!(on.servers.coalesce_us, 200);
    assert_eq!(field_of(&format!("{}\n[servers]\ncoalesce_us = 5000\n", base(""))), "servers.coalesce_us");
}

#[test]
fn the_output_hook_is_refused_naming_why() {
    let text = base("").replacen("[[tenants]]", "[dataplane]\nhooks = [\"FORWARD\", \"OUTPUT\"]\n\n[[tenants]]", 1);
    assert_eq!(field_of(&text), "dataplane.hooks[1]");
    let msg = Config::parse(&text).expect_err("OUTPUT").to_string();
    assert!(msg.contains("own packets"), "{msg}");
}

#[test]
fn a_reload_names_what_needs_a_restart_and_keeps_it() {
    let running = Config::parse(&base("")).expect("valid");
    // Tenants and the admin token apply on a reload: nothing to say.
    let same = Config::parse(&base("").replace("admin-token-0123456789", "admin-token-9876543210")).expect("valid");
    assert!(running.changes_needing_restart(&same).is_empty());
    let moved = base("").replace("127.0.0.1:8270", "127.0.0.1:9270").replace("edge-1", "edge-2").replacen(
        "[[tenants]]",
        "[dataplane]\nqueues = 3\n[signaling]\nqueue = 9\n\n[[tenants]]",
        1,
    );
    let new = Config::parse(&moved).expect("valid");
    assert_eq!(running.changes_needing_restart(&new), ["node_id", "api.listen", "dataplane", "signaling"]);
    let kept = new.keeping_restart_fields_of(&running);
    assert!(running.changes_needing_restart(&kept).is_empty());
    assert_eq!(kept.admin_token, "admin-token-0123456789");
}

#[test]
fn tls_needs_both_a_certificate_and_a_key() {
    let with = |lines: &str| base("").replacen("admin_token = ", &format!("{lines}\nadmin_token = "), 1);
    assert_eq!(field_of(&with("tls_cert = \"/etc/netserv/api.pem\"")), "api.tls_key");
    assert_eq!(field_of(&with("tls_key = \"/etc/netserv/api.key\"")), "api.tls_cert");
    let both = Config::parse(&with("tls_cert = \"/a.pem\"\ntls_key = \"/a.key\"")).expect("valid");
    assert_eq!(both.api_tls, Some(ApiTls { cert: "/a.pem".into(), key: "/a.key".into() }));
    assert!(Config::parse(&base("")).expect("valid").api_tls.is_none());
}

#[test]
fn a_tenant_cache_names_its_origin_and_errors_name_the_field() {
    let with = |cache: &str| format!("{}\n{cache}\n", base(""));
    let c = Config::parse(&with("[tenants.cache]\norigin = \"http://198.18.2.30:8080/\"")).expect("valid");
    let t = c.tenant("itsp-a").expect("tenant");
    let cache = t.cache.as_ref().expect("cache");
    assert_eq!(cache.origin.as_str(), "http://198.18.2.30:8080/");
    assert_eq!((cache.max_object_bytes, cache.origin_timeout.as_secs()), (8 << 20, 10));
    assert_eq!(t.limits.cache_bytes, 64 << 20);
    assert_eq!(field_of(&with("[tenants.cache]\norigin = \"ftp://x/\"")), "tenants[0].cache.origin");
    assert_eq!(field_of(&with("[tenants.cache]\norigin = \"not a url\"")), "tenants[0].cache.origin");
    assert_eq!(field_of(&with("[tenants.cache]\norigin = \"http://u:p@x/\"")), "tenants[0].cache.origin");
    assert_eq!(
        field_of(&with("[tenants.cache]\norigin = \"http://x/\"\nmax_object_bytes = 999999999999")),
        "tenants[0].cache.max_object_bytes"
    );
    assert_eq!(
        field_of(&with("[tenants.cache]\norigin = \"http://x/\"\norigin_timeout_ms = 0")),
        "tenants[0].cache.origin_timeout_ms"
    );
    assert_eq!(field_of(&with("[tenants.limits]\ncache_bytes = 5")), "tenants[0].limits.cache_bytes");
}

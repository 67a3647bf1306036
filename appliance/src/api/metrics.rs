//! `/metrics`: the node's live counters, through the shared exposition
//! (`netserv_shell::metrics`, OpenMetrics text by `prometheus-client`).
//!
//! Authenticated like the rest of the API (Prometheus sends the token with
//! `authorization: { credentials: ... }`): the admin sees the whole node; a
//! tenant sees its own modules and usage only — not another tenant's, and
//! not the node-wide queue and signaling counters, which would show the
//! others' traffic.

use super::AppState;
use super::Caller;
use crate::controller::Principal;
use crate::dataplane::QueueStats;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use netserv_shell::metrics::{CONTENT_TYPE, Exposition};
use std::sync::atomic::Ordering::Relaxed;

pub async fn render(State(s): State<AppState>, Caller(who): Caller) -> impl IntoResponse {
    let mut x = Exposition::new();
    let cfg = s.controller.config();
    let modules = s.controller.list(&who).await;
    let usage = s.controller.usage(&who).await;
    let node = [("node", cfg.node_id.as_str())];

    x.gauge("netserv_modules_installed", "Modules installed on this node.").sample(&node, modules.len());
    if who == Principal::Admin {
        x.gauge("netserv_compiled_modules_cached", "Compiled modules in the cache (by sha256).")
            .sample(&node, s.controller.runtime().cached());
    }

    let mut f = x.counter("netserv_module_packets", "Packets handled by a module, by outcome.");
    for m in &modules {
        let c = &m.counters.packets;
        for (outcome, v) in [
            ("accept", c.accepted),
            ("drop", c.dropped),
            ("replace", c.replaced),
            ("reply", c.replied),
            ("fail_open", c.fail_open),
            ("throttled", c.throttled),
            ("verdict_error", c.verdict_errors),
        ] {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("outcome", outcome)], v);
        }
    }
    let per_module =
        |x: &mut Exposition,
         counter: bool,
         name: &str,
         help: &str,
         value: &dyn Fn(&crate::controller::ModuleInfo) -> netserv_shell::metrics::Value| {
            let mut f = if counter { x.counter(name, help) } else { x.gauge(name, help) };
            for m in &modules {
                f.sample(&[("tenant", &m.tenant), ("module", &m.name)], value(m));
            }
        };
    per_module(
        &mut x,
        true,
        "netserv_module_faults",
        "Traps, blown deadlines and failed rebuilds of a module.",
        &|m| m.counters.packets.faults.into(),
    );
    per_module(
        &mut x,
        true,
        "netserv_module_throttled_windows",
        "Budget windows in which a module went over its CPU budget (its packets then bypassed it).",
        &|m| m.counters.packets.throttled_windows.into(),
    );
    per_module(&mut x, true, "netserv_module_cpu_seconds", "Time spent in a module's calls.", &|m| {
        (m.counters.packets.cpu_ns as f64 / 1e9).into()
    });
    per_module(
        &mut x,
        false,
        "netserv_module_memory_bytes",
        "Linear memory of a module's live instances (one per worker).",
        &|m| m.counters.memory_bytes.into(),
    );
    per_module(&mut x, false, "netserv_module_quarantined", "Whether a module is quarantined (1) or not (0).", &|m| {
        u64::from(m.state == "quarantined").into()
    });
    let mut f = x.counter("netserv_module_counter", "Counters a module exports itself.");
    for m in &modules {
        for (k, v) in &m.module_counters {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("name", k)], *v);
        }
    }
    relays(&mut x, &modules);
    caches(&mut x, &modules);
    let mut f = x.counter("netserv_tenant_refused", "What a tenant's modules were refused, by kind.");
    for u in &usage {
        for (kind, v) in [
            ("memory", u.memory_refused),
            ("log", u.log_dropped),
            ("counter", u.counter_refused),
            ("state", u.state_refused),
        ] {
            f.sample(&[("tenant", &u.tenant), ("kind", kind)], v);
        }
    }
    let mut f = x.gauge("netserv_tenant_memory_bytes", "Linear memory of a tenant's live module instances.");
    for u in &usage {
        f.sample(&[("tenant", &u.tenant)], u.memory_bytes);
    }
    if who == Principal::Admin {
        node_wide(&mut x, &s, &node);
    }
    match x.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => {
            tracing::error!("the metrics exposition did not encode");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The cache building block of each edge cache module the caller may see.
fn caches(x: &mut Exposition, modules: &[crate::controller::ModuleInfo]) {
    let caches: Vec<(&crate::controller::ModuleInfo, &crate::controller::CacheInfo)> =
        modules.iter().filter_map(|m| m.cache.as_ref().map(|c| (m, c))).collect();
    type Pick = fn(&crate::controller::CacheInfo) -> u64;
    let gauges: [(&str, &str, Pick); 3] = [
        ("netserv_cache_stored_bytes", "Bytes an edge cache holds, against its budget.", |c| c.stored_bytes),
        ("netserv_cache_budget_bytes", "An edge cache's byte budget (the tenant's limits.cache_bytes).", |c| {
            c.budget_bytes
        }),
        ("netserv_cache_objects", "Keys an edge cache holds.", |c| c.objects),
    ];
    for (name, help, value) in gauges {
        let mut f = x.gauge(name, help);
        for (m, c) in &caches {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name)], value(c));
        }
    }
    let mut f = x.counter("netserv_cache_requests", "Requests an edge cache answered, by outcome.");
    for (m, c) in &caches {
        let s = &c.stats;
        for (outcome, v) in [
            ("hit", s.hits),
            ("miss", s.misses),
            ("stale", s.stale_served),
            ("coalesced", s.coalesced),
            ("revalidated", s.revalidated),
            ("passed", s.passed),
            ("redirected", s.redirected),
            ("denied", s.denied),
        ] {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("outcome", outcome)], v);
        }
    }
    let counters: [(&str, &str, Pick); 7] = [
        ("netserv_cache_bytes_served", "Body bytes an edge cache sent its clients.", |c| c.stats.bytes_served),
        ("netserv_cache_bytes_from_origin", "Body bytes an edge cache fetched from its origin.", |c| {
            c.stats.bytes_from_origin
        }),
        ("netserv_cache_origin_fetches", "Fetches an edge cache made to its origin.", |c| c.stats.origin_fetches),
        (
            "netserv_cache_origin_errors",
            "Origin fetches that failed: no answer, a timeout, a broken body, a 5xx.",
            |c| c.stats.origin_errors,
        ),
        ("netserv_cache_evictions", "Objects an edge cache evicted for its byte budget.", |c| c.stats.evictions),
        ("netserv_cache_purged", "Objects purged through the API.", |c| c.stats.purged),
        ("netserv_cache_hook_faults", "Hook calls that faulted (the request failed open).", |c| c.stats.hook_faults),
    ];
    for (name, help, value) in counters {
        let mut f = x.counter(name, help);
        for (m, c) in &caches {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name)], value(c));
        }
    }
}

/// The relay building block of each server module the caller may see.
fn relays(x: &mut Exposition, modules: &[crate::controller::ModuleInfo]) {
    let relays: Vec<(&crate::controller::ModuleInfo, &crate::controller::RelayInfo)> =
        modules.iter().filter_map(|m| m.relay.as_ref().map(|r| (m, r))).collect();
    type Gauge = fn(&crate::controller::RelayInfo) -> u64;
    let gauges: [(&str, &str, Gauge); 3] = [
        ("netserv_relay_allocations", "TURN allocations a relay holds.", |r| r.stats.allocations as u64),
        ("netserv_relay_permissions", "Live permissions over a relay's allocations.", |r| r.stats.permissions as u64),
        ("netserv_relay_channels", "Live channel bindings over a relay's allocations.", |r| r.stats.channels as u64),
    ];
    for (name, help, value) in gauges {
        let mut f = x.gauge(name, help);
        for (m, r) in &relays {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name)], value(r));
        }
    }
    let mut f = x.counter("netserv_relay_packets", "Datagrams relayed natively (without entering wasm), by direction.");
    for (m, r) in &relays {
        let u = &r.stats.usage;
        for (dir, v) in [("to_peers", u.packets_to_peers), ("to_clients", u.packets_to_client)] {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("direction", dir)], v);
        }
    }
    let mut f = x.counter("netserv_relay_bytes", "Application bytes relayed natively, by direction.");
    for (m, r) in &relays {
        let u = &r.stats.usage;
        for (dir, v) in [("to_peers", u.bytes_to_peers), ("to_clients", u.bytes_to_client)] {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("direction", dir)], v);
        }
    }
    let mut f = x.counter("netserv_relay_dropped", "Relay datagrams dropped, by reason.");
    for (m, r) in &relays {
        let s = &r.stats;
        for (why, v) in [
            ("no_permission", s.dropped_no_permission),
            ("over_rate", s.dropped_over_rate),
            ("no_allocation", s.dropped_no_allocation),
            ("not_turn", s.dropped_not_turn),
        ] {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("reason", why)], v);
        }
    }
    let mut f = x.counter(
        "netserv_relay_throttled_requests",
        "Client requests a server module's thread dropped while its guest was over its CPU share.",
    );
    for (m, r) in &relays {
        f.sample(&[("tenant", &m.tenant), ("module", &m.name)], r.throttled_requests);
    }
    let mut f = x.counter(
        "netserv_relay_coalesced_pauses",
        "Pauses a server module's thread took to serve dense traffic with fewer wake-ups (servers.coalesce_us).",
    );
    for (m, r) in &relays {
        f.sample(&[("tenant", &m.tenant), ("module", &m.name)], r.coalesced_pauses);
    }
    let mut f = x.counter("netserv_relay_peers_refused", "Peers the host's peer policy refused, by path and rule.");
    for (m, r) in &relays {
        for p in &r.refused {
            f.sample(&[("tenant", &m.tenant), ("module", &m.name), ("path", p.path), ("reason", p.reason)], p.count);
        }
    }
}

/// The queues' and signaling's counters: the node's, the admin's to see.
fn node_wide(x: &mut Exposition, s: &AppState, node: &[(&str, &str)]) {
    let mut f = x.counter("netserv_queue_packets", "Packets through each NFQUEUE, by verdict.");
    for q in s.queues.iter() {
        let queue = q.queue.to_string();
        for (verdict, v) in [
            ("accept", q.io.accepted.load(Relaxed)),
            ("modified", q.io.modified.load(Relaxed)),
            ("drop", q.io.dropped.load(Relaxed)),
            ("reply", q.io.replied.load(Relaxed)),
        ] {
            f.sample(&[("queue", &queue), ("verdict", verdict)], v);
        }
    }
    let mut f = x.counter("netserv_queue_errors", "Receive, verdict, reply-send and parse errors per NFQUEUE.");
    for q in s.queues.iter() {
        let queue = q.queue.to_string();
        for (kind, v) in [
            ("recv", q.io.recv_errors.load(Relaxed)),
            ("verdict", q.io.verdict_errors.load(Relaxed)),
            ("reply", q.io.reply_errors.load(Relaxed)),
            ("malformed", q.io.malformed.load(Relaxed)),
        ] {
            f.sample(&[("queue", &queue), ("kind", kind)], v);
        }
    }
    // The batched path and worker placement (CPU steering), one sample per queue.
    type PerQueue = fn(&QueueStats) -> u64;
    let per_queue: [(bool, &str, &str, PerQueue); 7] = [
        (
            true,
            "netserv_queue_replies_by_link",
            "Replies sent back out of the interface their packet came in on (the rest were routed).",
            |q| q.io.replied_by_link.load(Relaxed),
        ),
        (true, "netserv_queue_batches", "Receives that returned packets (one recvmmsg each).", |q| {
            q.io.batches.load(Relaxed)
        }),
        (
            true,
            "netserv_queue_wakeups",
            "Batches that woke a blocked worker (the rest were found while busy polling).",
            |q| q.io.wakeups.load(Relaxed),
        ),
        (true, "netserv_queue_verdict_messages", "Verdict messages sent (runs of equal verdicts share one).", |q| {
            q.io.verdict_messages.load(Relaxed)
        }),
        (
            true,
            "netserv_queue_unexamined",
            "Packets passed without a module: cut at the copy range, or UDP GSO super-packets.",
            |q| q.unexamined.load(Relaxed),
        ),
        (true, "netserv_queue_spills", "Times a pinned NFQUEUE worker left its contended home CPUs.", |q| {
            q.spills.load(Relaxed)
        }),
        (false, "netserv_queue_spilled", "1 while the queue's worker runs away from its home CPUs.", |q| {
            q.spilled.load(Relaxed)
        }),
    ];
    for (counter, name, help, value) in per_queue {
        let mut f = if counter { x.counter(name, help) } else { x.gauge(name, help) };
        for q in s.queues.iter() {
            f.sample(&[("queue", &q.queue.to_string())], value(q));
        }
    }
    let sig = &s.signaling;
    for (counter, name, help, v) in [
        (true, "netserv_signaling_requests", "NetServ NSLP requests received from upstream.", &sig.requests),
        (
            true,
            "netserv_signaling_refused",
            "Requests refused (signature, replay, unknown tenant, malformed).",
            &sig.refused,
        ),
        (true, "netserv_signaling_responses", "NSLP responses sent upstream.", &sig.responses_sent),
        (true, "netserv_signaling_queries_intercepted", "GIST queries taken off the wire in transit.", &sig.tap.taken),
        (
            true,
            "netserv_signaling_queries_overflow",
            "GIST queries let through untouched because the signaling node was busy.",
            &sig.tap.overflow,
        ),
        (
            true,
            "netserv_signaling_bad_cookies",
            "Confirms refused because their responder cookie did not verify.",
            &sig.bad_cookies,
        ),
        (true, "netserv_signaling_decode_errors", "GIST datagrams that did not decode.", &sig.decode_errors),
        (
            true,
            "netserv_signaling_errors_suppressed",
            "GIST Errors not sent because their destination, or all together, went over the Error rate.",
            &sig.errors_suppressed,
        ),
        (
            true,
            "netserv_signaling_confirms_replayed",
            "Confirms that brought back a responder cookie already used: not delivered again.",
            &sig.confirms_replayed,
        ),
        (
            true,
            "netserv_signaling_queries_off_path",
            "Q-mode GIST Queries sent to this node for a flow that does not end here: dropped.",
            &sig.queries_off_path,
        ),
        (
            false,
            "netserv_signaling_routing_states",
            "GIST routing state entries (signaling sessions) held.",
            &sig.routing_states,
        ),
        (false, "netserv_signaling_pending", "Requests waiting for the rest of the path.", &sig.pending),
    ] {
        let mut f = if counter { x.counter(name, help) } else { x.gauge(name, help) };
        f.sample(node, v.load(Relaxed));
    }
}

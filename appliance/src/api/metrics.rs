//! Prometheus text exposition (format 0.0.4), rendered from live counters.

use super::AppState;
use crate::controller::Principal;
use crate::dataplane::worker::QueueStats;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn render(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    let cfg = s.controller.config();
    let modules = s.controller.list(&Principal::Admin).await;
    let usage = s.controller.usage(&Principal::Admin).await;
    let node = escape(&cfg.node_id);

    let _ = writeln!(out, "# HELP netserv_modules_installed Modules installed on this node.");
    let _ = writeln!(out, "# TYPE netserv_modules_installed gauge");
    let _ = writeln!(out, "netserv_modules_installed{{node=\"{node}\"}} {}", modules.len());
    let _ = writeln!(out, "# HELP netserv_compiled_modules_cached Compiled modules in the cache (by sha256).");
    let _ = writeln!(out, "# TYPE netserv_compiled_modules_cached gauge");
    let _ = writeln!(out, "netserv_compiled_modules_cached{{node=\"{node}\"}} {}", s.controller.runtime().cached());

    let _ = writeln!(out, "# HELP netserv_module_packets_total Packets handled by a module, by outcome.");
    let _ = writeln!(out, "# TYPE netserv_module_packets_total counter");
    for m in &modules {
        let (t, n) = (escape(&m.tenant), escape(&m.name));
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
            let _ = writeln!(
                out,
                "netserv_module_packets_total{{tenant=\"{t}\",module=\"{n}\",outcome=\"{outcome}\"}} {v}"
            );
        }
    }
    type PerModule = fn(&crate::controller::ModuleInfo) -> u64;
    let per_module: [(&str, &str, &str, PerModule); 5] = [
        ("netserv_module_faults_total", "counter", "Traps, blown deadlines and failed rebuilds of a module.", |m| {
            m.counters.packets.faults
        }),
        (
            "netserv_module_throttled_windows_total",
            "counter",
            "Budget windows in which a module went over its CPU budget (its packets then bypassed it).",
            |m| m.counters.packets.throttled_windows,
        ),
        ("netserv_module_cpu_seconds_total", "counter", "Time spent in a module's calls.", |m| {
            m.counters.packets.cpu_ns
        }),
        ("netserv_module_memory_bytes", "gauge", "Linear memory of a module's live instances (one per worker).", |m| {
            m.counters.memory_bytes
        }),
        ("netserv_module_quarantined", "gauge", "Whether a module is quarantined (1) or not (0).", |m| {
            u64::from(m.state == "quarantined")
        }),
    ];
    for (name, kind, help, value) in per_module {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for m in &modules {
            let (t, n) = (escape(&m.tenant), escape(&m.name));
            if name == "netserv_module_cpu_seconds_total" {
                let secs = value(m) as f64 / 1e9;
                let _ = writeln!(out, "{name}{{tenant=\"{t}\",module=\"{n}\"}} {secs}");
            } else {
                let _ = writeln!(out, "{name}{{tenant=\"{t}\",module=\"{n}\"}} {}", value(m));
            }
        }
    }
    let _ = writeln!(out, "# HELP netserv_module_counter Counters a module exports itself.");
    let _ = writeln!(out, "# TYPE netserv_module_counter counter");
    for m in &modules {
        for (k, v) in &m.module_counters {
            let _ = writeln!(
                out,
                "netserv_module_counter{{tenant=\"{}\",module=\"{}\",name=\"{}\"}} {v}",
                escape(&m.tenant),
                escape(&m.name),
                escape(k)
            );
        }
    }
    let _ = writeln!(out, "# HELP netserv_tenant_refused_total What a tenant's modules were refused, by kind.");
    let _ = writeln!(out, "# TYPE netserv_tenant_refused_total counter");
    for u in &usage {
        for (kind, v) in [
            ("memory", u.memory_refused),
            ("log", u.log_dropped),
            ("counter", u.counter_refused),
            ("state", u.state_refused),
        ] {
            let _ =
                writeln!(out, "netserv_tenant_refused_total{{tenant=\"{}\",kind=\"{kind}\"}} {v}", escape(&u.tenant));
        }
    }
    let _ = writeln!(out, "# HELP netserv_tenant_memory_bytes Linear memory of a tenant's live module instances.");
    let _ = writeln!(out, "# TYPE netserv_tenant_memory_bytes gauge");
    for u in &usage {
        let _ = writeln!(out, "netserv_tenant_memory_bytes{{tenant=\"{}\"}} {}", escape(&u.tenant), u.memory_bytes);
    }
    let _ = writeln!(out, "# HELP netserv_queue_packets_total Packets through each NFQUEUE, by verdict.");
    let _ = writeln!(out, "# TYPE netserv_queue_packets_total counter");
    for q in s.queues.iter() {
        for (verdict, v) in [
            ("accept", q.io.accepted.load(Relaxed)),
            ("modified", q.io.modified.load(Relaxed)),
            ("drop", q.io.dropped.load(Relaxed)),
            ("reply", q.io.replied.load(Relaxed)),
        ] {
            let _ = writeln!(out, "netserv_queue_packets_total{{queue=\"{}\",verdict=\"{verdict}\"}} {v}", q.queue);
        }
    }
    let _ =
        writeln!(out, "# HELP netserv_queue_errors_total Receive, verdict, reply-send and parse errors per NFQUEUE.");
    let _ = writeln!(out, "# TYPE netserv_queue_errors_total counter");
    for q in s.queues.iter() {
        for (kind, v) in [
            ("recv", q.io.recv_errors.load(Relaxed)),
            ("verdict", q.io.verdict_errors.load(Relaxed)),
            ("reply", q.io.reply_errors.load(Relaxed)),
            ("malformed", q.io.malformed.load(Relaxed)),
        ] {
            let _ = writeln!(out, "netserv_queue_errors_total{{queue=\"{}\",kind=\"{kind}\"}} {v}", q.queue);
        }
    }
    // Worker placement (CPU steering), one sample per queue.
    type PerQueue = fn(&QueueStats) -> u64;
    let per_queue: [(&str, &str, &str, PerQueue); 7] = [
        (
            "netserv_queue_replies_by_link_total",
            "counter",
            "Replies sent back out of the interface their packet came in on (the rest were routed).",
            |q| q.io.replied_by_link.load(Relaxed),
        ),
        ("netserv_queue_batches_total", "counter", "Receives that returned packets (one recvmmsg each).", |q| {
            q.io.batches.load(Relaxed)
        }),
        (
            "netserv_queue_wakeups_total",
            "counter",
            "Batches that woke a blocked worker (the rest were found while busy polling).",
            |q| q.io.wakeups.load(Relaxed),
        ),
        (
            "netserv_queue_verdict_messages_total",
            "counter",
            "Verdict messages sent (runs of equal verdicts share one).",
            |q| q.io.verdict_messages.load(Relaxed),
        ),
        (
            "netserv_queue_unexamined_total",
            "counter",
            "Packets passed without a module: cut at the copy range, or UDP GSO super-packets.",
            |q| q.unexamined.load(Relaxed),
        ),
        ("netserv_queue_spills_total", "counter", "Times a pinned NFQUEUE worker left its contended home CPUs.", |q| {
            q.spills.load(Relaxed)
        }),
        ("netserv_queue_spilled", "gauge", "1 while the queue's worker runs away from its home CPUs.", |q| {
            q.spilled.load(Relaxed)
        }),
    ];
    for (name, kind, help, value) in per_queue {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for q in s.queues.iter() {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", q.queue, value(q));
        }
    }
    let sig = &s.signaling;
    for (name, kind, help, v) in [
        (
            "netserv_signaling_requests_total",
            "counter",
            "NetServ NSLP requests received from upstream.",
            sig.requests.load(Relaxed),
        ),
        (
            "netserv_signaling_refused_total",
            "counter",
            "Requests refused (signature, replay, unknown tenant, malformed).",
            sig.refused.load(Relaxed),
        ),
        (
            "netserv_signaling_responses_total",
            "counter",
            "NSLP responses sent upstream.",
            sig.responses_sent.load(Relaxed),
        ),
        (
            "netserv_signaling_queries_intercepted_total",
            "counter",
            "GIST queries taken off the wire in transit.",
            sig.tap.taken.load(Relaxed),
        ),
        (
            "netserv_signaling_bad_cookies_total",
            "counter",
            "Confirms refused because their responder cookie did not verify.",
            sig.bad_cookies.load(Relaxed),
        ),
        (
            "netserv_signaling_decode_errors_total",
            "counter",
            "GIST datagrams that did not decode.",
            sig.decode_errors.load(Relaxed),
        ),
        (
            "netserv_signaling_routing_states",
            "gauge",
            "GIST routing state entries (signaling sessions) held.",
            sig.routing_states.load(Relaxed),
        ),
        ("netserv_signaling_pending", "gauge", "Requests waiting for the rest of the path.", sig.pending.load(Relaxed)),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{node=\"{node}\"}} {v}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

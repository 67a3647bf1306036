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
        let c = &m.counters;
        for (outcome, v) in [
            ("accept", c.accepted),
            ("drop", c.dropped),
            ("replace", c.replaced),
            ("reply", c.replied),
            ("fail_open", c.fail_open),
            ("verdict_error", c.verdict_errors),
        ] {
            let _ = writeln!(
                out,
                "netserv_module_packets_total{{tenant=\"{t}\",module=\"{n}\",outcome=\"{outcome}\"}} {v}"
            );
        }
    }
    let _ = writeln!(out, "# HELP netserv_module_faults_total Traps and deadline overruns of a module.");
    let _ = writeln!(out, "# TYPE netserv_module_faults_total counter");
    for m in &modules {
        let _ = writeln!(
            out,
            "netserv_module_faults_total{{tenant=\"{}\",module=\"{}\"}} {}",
            escape(&m.tenant),
            escape(&m.name),
            m.counters.faults
        );
    }
    let _ = writeln!(out, "# HELP netserv_module_quarantined Whether a module is quarantined (1) or not (0).");
    let _ = writeln!(out, "# TYPE netserv_module_quarantined gauge");
    for m in &modules {
        let q = u8::from(m.state == "quarantined");
        let _ = writeln!(
            out,
            "netserv_module_quarantined{{tenant=\"{}\",module=\"{}\"}} {q}",
            escape(&m.tenant),
            escape(&m.name)
        );
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
    let _ = writeln!(out, "# HELP netserv_queue_packets_total Packets through each NFQUEUE, by verdict.");
    let _ = writeln!(out, "# TYPE netserv_queue_packets_total counter");
    for q in s.queues.iter() {
        for (verdict, v) in [
            ("accept", q.accepted.load(Relaxed)),
            ("modified", q.modified.load(Relaxed)),
            ("drop", q.dropped.load(Relaxed)),
            ("reply", q.replied.load(Relaxed)),
        ] {
            let _ = writeln!(out, "netserv_queue_packets_total{{queue=\"{}\",verdict=\"{verdict}\"}} {v}", q.queue);
        }
    }
    let _ = writeln!(out, "# HELP netserv_queue_errors_total Receive, verdict and reply-send errors per NFQUEUE.");
    let _ = writeln!(out, "# TYPE netserv_queue_errors_total counter");
    for q in s.queues.iter() {
        for (kind, v) in [
            ("recv", q.recv_errors.load(Relaxed)),
            ("verdict", q.verdict_errors.load(Relaxed)),
            ("reply", q.reply_errors.load(Relaxed)),
        ] {
            let _ = writeln!(out, "netserv_queue_errors_total{{queue=\"{}\",kind=\"{kind}\"}} {v}", q.queue);
        }
    }
    // Worker placement (CPU steering), one sample per queue.
    type PerQueue = fn(&QueueStats) -> u64;
    let per_queue: [(&str, &str, &str, PerQueue); 2] = [
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
            "netserv_signaling_queries_overflow_total",
            "counter",
            "GIST queries let through untouched because the signaling service was busy.",
            sig.tap.overflow.load(Relaxed),
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

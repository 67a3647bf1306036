//! How fast the edge follows a report, and how fast control ends once the
//! report runs out: the sending entity installed on the edge over a sipp
//! UAS in `core` (no Kamailio, no plugin: nothing else in the loop), sipp
//! callers offering a steady rate through it, one report of `oc=50` with a
//! validity of 2 s posted to the feedback API, and the entity's counters
//! read every 50 ms meanwhile.
//!
//! - **tracking**: the share of INVITEs passed in each 250 ms after the
//!   report, and the rate passed over the second after it, against half of
//!   what is offered (target: within ±5 % inside 1 s);
//! - **end**: when the last INVITE was shed, after the report's validity
//!   ran out (target: within validity + 100 ms).

use netserv_tests::appliance::{ADMIN_TOKEN, TENANT_A_TOKEN, TempDir, node_config};
use netserv_tests::bench::progress;
use netserv_tests::netns::CORE_IP;
use netserv_tests::{Appliance, Testbed, paths, sipp};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SERVER: &str = "198.18.2.20:5060";
const RATE: u32 = 200;
const VALIDITY_MS: u64 = 2000;

/// One reading of the entity's counters.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Duration,
    admitted: u64,
    shed: u64,
}

pub fn measure() -> anyhow::Result<Value> {
    progress(&format!("response: {RATE} calls/s through the entity, oc=50 for {VALIDITY_MS} ms"));
    let tb = Testbed::new("ocr")?;
    let dir = TempDir::new("ocresp")?;
    let _uas = sipp::call_uas(&tb, &dir.0.join("uas.log"))?;
    let app = Appliance::start(&tb, &node_config("", ""))?;
    app.install(&json!({
        "tenant": "itsp-a", "name": "overload",
        "source": { "path": paths::module("netserv_overload_se") },
        "filter": { "transport": "udp", "destination": format!("{CORE_IP}/32"), "ports": [5060] },
    }))?;
    let (ua, logs) = (tb.ua.clone(), dir.0.clone());
    let callers = std::thread::spawn(move || sipp::callers_to(&ua, SERVER, "uas", 5061, RATE * 6, RATE, &logs));
    let start = Instant::now();
    let read = |app: &Appliance| -> Option<Reading> {
        let m = app.module("itsp-a", "overload").ok()?;
        let n = |k: &str| m["module_counters"][k].as_u64().unwrap_or(0);
        Some(Reading { at: start.elapsed(), admitted: n("admitted_initial"), shed: n("shed_initial") })
    };
    let mut readings = Vec::new();
    let mut posted = None;
    while start.elapsed() < Duration::from_millis(5500) {
        if posted.is_none() && start.elapsed() >= Duration::from_millis(2000) {
            let body = json!({ "server": SERVER, "algorithm": "loss", "oc": 50, "validity_ms": VALIDITY_MS, "seq": 1 });
            let sent = start.elapsed();
            let (code, v) = app.api("POST", "/api/v1/modules/itsp-a/overload/feedback", Some(&body), TENANT_A_TOKEN)?;
            anyhow::ensure!(code == 202, "the report was refused: {code} {v}");
            posted = Some(sent);
        }
        if let Some(r) = read(&app) {
            readings.push(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = callers.join();
    let _ = app.api("DELETE", "/api/v1/modules/itsp-a/overload", None, ADMIN_TOKEN);
    let t0 = posted.ok_or_else(|| anyhow::anyhow!("no report posted"))?;
    Ok(summarize(&readings, t0))
}

/// The counters between `from` and `to` (the readings nearest inside), and
/// the seconds between those readings.
fn between(readings: &[Reading], from: Duration, to: Duration) -> Option<(u64, u64, f64)> {
    let a = readings.iter().find(|r| r.at >= from)?;
    let b = readings.iter().rev().find(|r| r.at <= to)?;
    (b.at > a.at)
        .then(|| (b.admitted.saturating_sub(a.admitted), b.shed.saturating_sub(a.shed), (b.at - a.at).as_secs_f64()))
}

fn summarize(readings: &[Reading], t0: Duration) -> Value {
    let ms = Duration::from_millis;
    let shares: Vec<Value> = (0..4)
        .map(|i| {
            let (a, s, _) = between(readings, t0 + ms(250 * i), t0 + ms(250 * (i + 1))).unwrap_or((0, 0, 0.0));
            json!((a as f64 / (a + s).max(1) as f64 * 1000.0).round() / 1000.0)
        })
        .collect();
    // Rates, each over the time its readings span: the readings come every
    // 50 ms or so, and a second's window holds 0.9 s of them or 1.0 s.
    let before = between(readings, t0.saturating_sub(ms(1000)), t0).map(|(a, s, secs)| (a + s) as f64 / secs);
    let after = between(readings, t0, t0 + ms(1000)).map(|(a, _, secs)| a as f64 / secs);
    let rate_ratio = match (before, after) {
        (Some(b), Some(a)) if b > 0.0 => a / (b / 2.0),
        _ => f64::NAN,
    };
    // The last reading at which the shed count still grew.
    let last_shed = readings.windows(2).rev().find(|w| w[1].shed > w[0].shed).map(|w| w[1].at);
    let end_after_validity_ms =
        last_shed.map(|t| t.as_millis() as i64 - (t0 + ms(VALIDITY_MS)).as_millis() as i64).unwrap_or(i64::MIN);
    progress(&format!(
        "response: passed share per 250 ms after the report {shares:?}; rate passed over the next second / half the offer = {rate_ratio:.3}; last INVITE shed {end_after_validity_ms} ms after the validity ran out (readings every 50 ms)"
    ));
    json!({
        "passed_share_per_250ms": shares,
        "rate_passed_over_half_offered_first_second": (rate_ratio * 1000.0).round() / 1000.0,
        "last_shed_ms_after_validity": end_after_validity_ms,
        "targets": { "rate_within": 0.05, "end_within_ms": 100 },
    })
}

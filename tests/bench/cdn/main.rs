//! `netserv-bench-cdn`: the edge cache (the appliance with the ActiveCDN
//! module) side by side with nginx 1.22 `proxy_cache` (`proxy_cache_lock`,
//! `proxy_cache_use_stale updating`, `proxy_cache_background_update`) and
//! Varnish 7.1, all started by the benchmark in one network namespace on
//! loopback, each pinned to the same CPU, in front of the same origin
//! (`netserv-cdn-tool origin`), in one run. wrk and the origin get the
//! other CPU.
//!
//! 1. cache hits: the same wrk load on each (64 keep-alive connections, a
//!    10,000-object Zipf set of 1 KB and then 16 KB objects, every object
//!    cached first), `BENCH_SECONDS` (default 5) each, in `BENCH_PAIRS`
//!    (default 3) rounds whose order alternates; requests a second and p99,
//!    and the edge's ratios to each anchor per round (median, min, max);
//! 2. 1,000 concurrent cold requests for one key: origin fetches, per cache;
//! 3. a 2 s origin stall on a stale object (`stale-while-revalidate`):
//!    p99 of the answers and origin fetches meanwhile, per cache;
//! 4. the origin down (503) on a stale object (`stale-if-error`): the share
//!    answered 200, per cache;
//! 5. the edge only: a purge's latency (from the API call to the next answer,
//!    which misses), resident memory against
//!    the byte budget when full (`BENCH_MEM_BUDGET`, default 64 MiB, filled
//!    with twice that in 16 KB objects), and GeoIP lookups a second on one
//!    core (the director's, MaxMind's City test database).
//!
//! Progress on stderr; the last line on stdout is JSON. Needs root, nginx,
//! varnish and wrk. Run: `PROFILE=release bash scripts/build.sh && target/release/netserv-bench-cdn`

mod load;
mod servers;

use netserv_tests::bench::{Summary, env_u64, json_line, num, progress, round1};
use netserv_tests::{Testbed, paths, rss_kib};
use serde_json::{Value, json};
use servers::{CDN_TOKEN, Cache, MEM_PORT, ORIGIN};
use std::time::{Duration, Instant};

struct Bench {
    tb: Testbed,
    client_cpu: String,
    dir: netserv_tests::appliance::TempDir,
    tool: String,
}

impl Bench {
    fn wrk(&self, script: &str, url: &str, secs: u64, conns: u32) -> anyhow::Result<Value> {
        static SCRIPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SCRIPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.0.join(format!("script-{n}.lua"));
        std::fs::write(&path, script)?;
        let (d, c) = (format!("{secs}s"), conns.to_string());
        let out = self.tb.output(
            &self.tb.core,
            "taskset",
            &["-c", &self.client_cpu, "wrk", "-t1", "-c", &c, "-d", &d, "-s", path.to_str().unwrap_or_default(), url],
        )?;
        let _ = std::fs::remove_file(&path);
        let v = json_line(&out);
        anyhow::ensure!(v.is_object(), "wrk printed no result: {out}");
        Ok(v)
    }

    fn tool(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut a = vec!["-c", self.client_cpu.as_str(), self.tool.as_str()];
        a.extend(args);
        Ok(json_line(&self.tb.output(&self.tb.core, "taskset", &a)?))
    }

    fn curl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut a = vec!["-s", "-m", "10"];
        a.extend(args);
        self.tb.output(&self.tb.core, "curl", &a)
    }

    fn origin_count(&self, path: &str) -> u64 {
        self.curl(&[&format!("http://{ORIGIN}/_ctl/count?path={path}")])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn origin_ctl(&self, what: &str) -> anyhow::Result<()> {
        self.curl(&[&format!("http://{ORIGIN}/_ctl/{what}")]).map(drop)
    }

    fn wait_port(&self, url: &str) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self.curl(&["-o", "/dev/null", "-w", "%{http_code}", url]).is_ok_and(|c| c != "000") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("{url} did not answer")
    }
}

fn main() -> anyhow::Result<()> {
    let pairs = env_u64("BENCH_PAIRS", 3).clamp(1, 20) as usize;
    let secs = env_u64("BENCH_SECONDS", 5).clamp(1, 60);
    let mem_budget = env_u64("BENCH_MEM_BUDGET", 64 << 20).clamp(8 << 20, 1 << 30);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let server_cpu = (cpus.saturating_sub(1)).to_string();
    let b = Bench {
        tb: Testbed::new("cdnbench")?,
        client_cpu: "0".into(),
        dir: netserv_tests::appliance::TempDir::new("cdnbench")?,
        tool: paths::bin("netserv-cdn-tool").to_str().unwrap_or_default().to_owned(),
    };
    progress(&format!("caches on CPU {server_cpu}, wrk and the origin on CPU 0; {pairs} rounds of {secs} s"));
    let _origin = b.tb.spawn(&b.tb.core, "taskset", &["-c", "0", &b.tool, "origin", ORIGIN], None)?;
    b.wait_port(&format!("http://{ORIGIN}/_ctl/count"))?;
    let app = servers::start_edge(&b.tb.core, &server_cpu, 512 << 20, mem_budget)?;
    let _anchors = servers::start_anchors(&b.tb, &server_cpu)?;
    for c in Cache::ALL {
        b.wait_port(&c.url("/o/1024/1"))?;
    }

    // 5a. Memory: the edge's resident growth while a cache fills to its budget.
    progress(&format!("memory: filling a {} MiB cache with twice that in 16 KB objects", mem_budget >> 20));
    let pid = app.proc.pid();
    let rss0 = rss_kib(pid);
    let objects = u32::try_from(2 * mem_budget / 16_384).unwrap_or(u32::MAX);
    let mem_url = format!("http://127.0.0.1:{MEM_PORT}/");
    let mut filled = 0.0;
    while filled < f64::from(objects) * 1.2 {
        // Few connections: their buffers are not the store's.
        let v = b.wrk(&load::sequential(16_384, 100_000, objects), &mem_url, 4, 4)?;
        filled += num(&v, "requests");
    }
    let rss1 = rss_kib(pid);
    let (_, mem) = app.api("GET", "/api/v1/modules/cdn-m/active-cdn", None, netserv_tests::appliance::ADMIN_TOKEN)?;
    let stored = mem["cache"]["stored_bytes"].as_f64().unwrap_or(f64::NAN);
    let growth = (rss1.saturating_sub(rss0) * 1024) as f64;
    let mem_ratio = growth / mem_budget as f64;
    progress(&format!(
        "  resident growth {:.1} MiB for a {:.0} MiB budget: {:.3} of it (stored {:.1} MiB)",
        growth / 1048576.0,
        mem_budget as f64 / 1048576.0,
        mem_ratio,
        stored / 1048576.0
    ));

    // Every object of the set in every cache before the hits are measured.
    for c in Cache::ALL {
        for size in [1024, 16_384] {
            let mut sent = 0.0;
            while sent < f64::from(load::OBJECTS) * 1.2 {
                sent += num(&b.wrk(&load::sequential(size, 1, load::OBJECTS), &c.url("/"), 3, 64)?, "requests");
            }
            progress(&format!("warm {} {size} B: {sent} requests", c.name()));
        }
    }

    // One unmeasured Zipf run each: what a first run pays once (page faults,
    // the store's frequency sketch growing) is paid by every cache alike.
    for c in Cache::ALL {
        for size in [1024, 16_384] {
            b.wrk(&load::zipf(size), &c.url("/"), 2, 64)?;
        }
    }

    // 1. Hits, in rounds of alternating order.
    let sizes = [1024u32, 16_384];
    let mut rps = vec![vec![Vec::new(); 3]; 2];
    let mut p99 = vec![vec![Vec::new(); 3]; 2];
    for round in 0..pairs {
        let mut order = Cache::ALL;
        order.rotate_left(round % 3);
        for c in order {
            for (si, size) in sizes.iter().enumerate() {
                let v = b.wrk(&load::zipf(*size), &c.url("/"), secs, 64)?;
                let r = num(&v, "requests") / (num(&v, "duration_us") / 1e6);
                let bad = num(&v, "errors") + num(&v, "non2xx");
                progress(&format!(
                    "round {}: {} {size} B: {r:.0} req/s, p99 {:.2} ms{}",
                    round + 1,
                    c.name(),
                    num(&v, "p99_us") / 1000.0,
                    if bad > 0.0 { format!(", {bad} errors") } else { String::new() }
                ));
                rps[si][c as usize].push(if bad > 0.0 { f64::NAN } else { r });
                p99[si][c as usize].push(num(&v, "p99_us") / 1000.0);
            }
        }
    }
    let mut hits = serde_json::Map::new();
    for (si, size) in sizes.iter().enumerate() {
        let per = |c: Cache| Summary::of(&rps[si][c as usize]);
        let ratio = |anchor: Cache| {
            let r: Vec<f64> =
                rps[si][Cache::Edge as usize].iter().zip(&rps[si][anchor as usize]).map(|(e, a)| e / a).collect();
            Summary::of(&r)
        };
        let p99d: Vec<f64> =
            p99[si][Cache::Edge as usize].iter().zip(&p99[si][Cache::Nginx as usize]).map(|(e, n)| e - n).collect();
        for c in Cache::ALL {
            progress(&format!("{size} B {}: {} req/s", c.name(), per(c).show(0)));
        }
        progress(&format!(
            "{size} B edge/nginx {}, edge/varnish {}",
            ratio(Cache::Nginx).show(2),
            ratio(Cache::Varnish).show(2)
        ));
        hits.insert(
            format!("{size}"),
            json!({
                "rps": Cache::ALL.map(|c| (c.name().to_owned(), per(c).json(0))).into_iter().collect::<serde_json::Map<_, _>>(),
                "p99_ms": Cache::ALL.map(|c| (c.name().to_owned(), Summary::of(&p99[si][c as usize]).json(2))).into_iter().collect::<serde_json::Map<_, _>>(),
                "edge_over_nginx": ratio(Cache::Nginx).json(2),
                "edge_over_varnish": ratio(Cache::Varnish).json(2),
                "edge_p99_minus_nginx_ms": Summary::of(&p99d).json(2),
            }),
        );
    }

    // 2. 1,000 concurrent cold requests for one key.
    let mut cold = serde_json::Map::new();
    for c in Cache::ALL {
        let path = format!("/cold/{}", c.name());
        let v = b.tool(&["burst", &c.url(&path), "1000"])?;
        let fetches = b.origin_count(&path);
        progress(&format!("cold: {} answered {} of 1000, origin fetches {fetches}", c.name(), v["ok"]));
        cold.insert(c.name().into(), json!({ "ok": v["ok"], "origin_fetches": fetches }));
    }

    // 3. A 2 s origin stall on a stale object.
    let mut stall = serde_json::Map::new();
    for c in Cache::ALL {
        let path = format!("/swr/stall-{}", c.name());
        b.curl(&["-o", "/dev/null", &c.url(&path)])?;
        std::thread::sleep(Duration::from_millis(1300));
        let before = b.origin_count(&path);
        b.origin_ctl("stall?ms=2000")?;
        let v = b.tool(&["probe", &c.url(&path), "2000", "4"])?;
        let during = b.origin_count(&path) - before;
        b.origin_ctl("stall?ms=0")?;
        progress(&format!(
            "stall: {} answered {} of {} (p99 {:.2} ms), origin fetches during the stall {during}",
            c.name(),
            v["ok"],
            v["requests"],
            num(&v, "p99_us") / 1000.0
        ));
        stall.insert(
            c.name().into(),
            json!({ "ok": v["ok"], "requests": v["requests"], "p99_ms": round1(num(&v, "p99_us") / 100.0) / 10.0, "origin_fetches": during }),
        );
        std::thread::sleep(Duration::from_millis(2500));
    }

    // 4. The origin down on a stale object.
    let mut down = serde_json::Map::new();
    for c in Cache::ALL {
        let path = format!("/swr/down-{}", c.name());
        b.curl(&["-o", "/dev/null", &c.url(&path)])?;
        std::thread::sleep(Duration::from_millis(1300));
        b.origin_ctl("down?on=1")?;
        let v = b.tool(&["probe", &c.url(&path), "1000", "2"])?;
        b.origin_ctl("down?on=0")?;
        let share = num(&v, "ok") / num(&v, "requests");
        progress(&format!(
            "down: {} answered {:.3} of {} requests with the stale object",
            c.name(),
            share,
            v["requests"]
        ));
        down.insert(c.name().into(), json!({ "ok": v["ok"], "requests": v["requests"], "bodies": v["bodies"] }));
    }

    // 5b. Purge: from sending it to the API to the next answer, which misses.
    let v = b.tool(&[
        "purge",
        "http://127.0.0.1:8270/",
        CDN_TOKEN,
        "cdn-a/active-cdn",
        &Cache::Edge.url("/"),
        "/o/1024/1",
        "20",
    ])?;
    let purge_ms: Vec<f64> =
        v["ms"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    let missed = v["missed"].as_u64().unwrap_or(0);
    let purge = Summary::of(&purge_ms);
    progress(&format!(
        "purge: {} ms from the API call to the next answer; {missed} of 20 next answers missed",
        purge.show(2)
    ));

    // 5c. GeoIP lookups on one core.
    let db = netserv_cdn_director::geo::GeoDb::open(
        &paths::repo().join("modules/active-cdn/director/tests/data/GeoIP2-City-Test.mmdb"),
    )?;
    let addrs: Vec<std::net::IpAddr> =
        ["81.2.69.142", "2.125.160.216", "89.160.20.112", "216.160.83.56", "175.16.199.1", "2001:218::1", "198.18.0.1"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
    let n = 2_000_000usize;
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        found += usize::from(db.locate(addrs[i % addrs.len()]).is_some());
    }
    let geo_rate = n as f64 / t.elapsed().as_secs_f64();
    progress(&format!("geoip: {:.2} M lookups/s ({found} found)", geo_rate / 1e6));

    println!(
        "{}",
        json!({
            "bench": "cdn", "pairs": pairs, "seconds": secs,
            "hits": hits, "cold_1000": cold, "stall_2s": stall, "origin_down": down,
            "purge_api_ms": purge.json(2), "purge_next_missed": missed,
            "memory": { "budget_bytes": mem_budget, "resident_growth_bytes": growth, "ratio": (mem_ratio * 1000.0).round() / 1000.0, "stored_bytes": stored },
            "geoip_lookups_per_s": geo_rate.round(),
        })
    );
    Ok(())
}

//! The testbed's load, for the keepalive benchmark: floods, sinks, round
//! trips and the hostile tenant's traffic, each on the tester's CPU, and
//! what the kernels counted of them.

use netserv_tests::Testbed;
use netserv_tests::appliance::TempDir;
use netserv_tests::bench::{Summary, json_line, num, progress};
use serde_json::Value;
use std::time::{Duration, Instant};

pub const SERVER: &str = "198.18.2.20:5060";
/// A port no filter matches: plain delivery and the latency baseline.
pub const BASELINE: &str = "198.18.2.20:5062";
/// The hostile tenant's own server port, and the phone its traffic comes from.
pub const HOSTILE: &str = "198.18.2.20:5070";
pub const HOSTILE_IP: &str = "198.18.1.50";
/// The hostile tenant's traffic, in both halves of a pair.
pub const HOSTILE_PPS: u64 = 2000;

pub struct Bench {
    pub tb: Testbed,
    pub dir: TempDir,
    pub tester_cpu: String,
    pub phones: String,
    pub notify: String,
    pub register: String,
    pub probe: String,
    pub flood_ms: u64,
    pub rtt_count: u64,
}

impl Bench {
    /// `program args...` behind `taskset` on the tester's CPU.
    pub fn pinned<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["-c", self.tester_cpu.as_str(), program];
        v.extend_from_slice(args);
        v
    }

    pub fn run_in(&self, ns: &str, program: &str, args: &[&str]) -> anyhow::Result<Value> {
        Ok(json_line(&self.tb.output(ns, "taskset", &self.pinned(program, args))?))
    }

    pub fn spawn_in(&self, ns: &str, log: &str, program: &str, args: &[&str]) -> anyhow::Result<netserv_tests::Proc> {
        self.tb.spawn(ns, "taskset", &self.pinned(program, args), Some(&self.dir.0.join(log)))
    }

    /// A keep-alive flood to `to`; `read`: the phones read their answers
    /// (else nothing does, and the sender has the tester's CPU to itself).
    pub fn flood(&self, to: &str, read: bool) -> anyhow::Result<Value> {
        let ms = self.flood_ms.to_string();
        let mut args = vec![
            "flood",
            "--to",
            to,
            "--bind-ip",
            &self.phones,
            "--payload",
            &self.notify,
            "--ports",
            "32",
            "--duration-ms",
            &ms,
        ];
        if !read {
            args.push("--no-receive");
        }
        self.run_in(&self.tb.ua, &self.probe, &args)
    }

    /// UDP datagrams the kernel of `ns` has delivered to its sockets so far
    /// (`InDatagrams + InErrors` of /proc/net/snmp: what a socket too slow to
    /// read them drops counts as delivered — the kernel's work, not the
    /// reader's, is what both halves of a pair compare).
    pub fn udp_delivered(&self, ns: &str) -> anyhow::Result<f64> {
        let snmp = self.tb.output(ns, "cat", &["/proc/net/snmp"])?;
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next().unwrap_or_default(), udp.next().unwrap_or_default());
        let field = |name: &str| -> f64 {
            names
                .split_whitespace()
                .position(|n| n == name)
                .and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        Ok(field("InDatagrams") + field("InErrors"))
    }

    /// Packets a second the plain kernel delivers to core on BASELINE, to a
    /// server that reads them (`read`) or to a socket nobody reads.
    pub fn plain_pps_with(&self, read: bool) -> anyhow::Result<f64> {
        let log = self.dir.0.join("sink.json");
        let ms = (self.flood_ms + 2000).to_string();
        let mut args = vec!["sink", "--bind", BASELINE, "--duration-ms", &ms];
        if !read {
            args.push("--hold");
        }
        let mut sink = self.spawn_in(&self.tb.core, "sink.json", &self.probe, &args)?;
        wait_ready(&log)?;
        let before = self.udp_delivered(&self.tb.core)?;
        let f = self.flood(BASELINE, read)?;
        let delivered = self.udp_delivered(&self.tb.core)? - before;
        sink.signal_and_wait("0", Duration::from_millis(self.flood_ms + 10_000))?;
        Ok(delivered / num(&f, "elapsed_s"))
    }

    /// Keep-alives a second the appliance answers (answers the kernel of
    /// `ua` delivered to the phones' sockets); `read`: the phones read them.
    pub fn answered_pps_with(&self, read: bool) -> anyhow::Result<f64> {
        let before = self.udp_delivered(&self.tb.ua)?;
        let f = self.flood(SERVER, read)?;
        Ok((self.udp_delivered(&self.tb.ua)? - before) / num(&f, "elapsed_s"))
    }

    /// `n` alternating pairs of plain delivery and answered floods, with
    /// readers or not; (plain, answered, answered / plain), each summarized.
    pub fn pairs(&self, n: usize, read: bool, label: &str) -> anyhow::Result<(Summary, Summary, Summary)> {
        let (mut plain, mut answered, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let p = self.plain_pps_with(read)?;
            let a = self.answered_pps_with(read)?;
            progress(&format!("  pair {}: plain {p:.0} pps, answered {a:.0} pps, ratio {:.3}{label}", i + 1, a / p));
            plain.push(p);
            answered.push(a);
            ratio.push(a / p);
        }
        Ok((Summary::of(&plain), Summary::of(&answered), Summary::of(&ratio)))
    }

    /// `n` answered floods at capacity (nothing reading), summarized.
    pub fn answered_runs(&self, n: usize, label: &str) -> anyhow::Result<Summary> {
        let mut rates = Vec::new();
        for i in 0..n {
            let a = self.answered_pps_with(false)?;
            progress(&format!("  run {}: answered {a:.0} pps{label}", i + 1));
            rates.push(a);
        }
        Ok(Summary::of(&rates))
    }

    /// Round trips with `payload`, alternating SERVER and BASELINE.
    pub fn rtt(&self, payload: &str) -> anyhow::Result<Value> {
        let count = self.rtt_count.to_string();
        let (ua, core) = (self.tb.ua.as_str(), self.tb.core.as_str());
        let args = [
            "rtt-spin",
            "--client-ns",
            ua,
            "--server-ns",
            core,
            "--to",
            SERVER,
            "--baseline",
            BASELINE,
            "--payload",
            payload,
            "--count",
            &count,
        ];
        let out = std::process::Command::new("taskset").args(self.pinned(&self.probe, &args)).output()?;
        anyhow::ensure!(out.status.success(), "rtt-spin: {}", String::from_utf8_lossy(&out.stderr));
        let v = json_line(&String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(num(&v, "count") > 0.0 && num(&v["baseline"], "count") > 0.0, "no round trips: {v}");
        Ok(v)
    }

    /// The hostile tenant's traffic for `ms`, and a sink for what passes.
    pub fn hostile_traffic(&self, ms: u64) -> anyhow::Result<(netserv_tests::Proc, netserv_tests::Proc)> {
        let sink_ms = (ms + 2000).to_string();
        let sink = self.spawn_in(
            &self.tb.core,
            "hostile-sink.json",
            &self.probe,
            &["sink", "--bind", HOSTILE, "--duration-ms", &sink_ms],
        )?;
        wait_ready(&self.dir.0.join("hostile-sink.json"))?;
        let (ms, rate) = (ms.to_string(), HOSTILE_PPS.to_string());
        let args = [
            "flood",
            "--to",
            HOSTILE,
            "--bind-ip",
            HOSTILE_IP,
            "--payload",
            &self.register,
            "--ports",
            "4",
            "--duration-ms",
            &ms,
            "--rate-pps",
            &rate,
        ];
        let load = self.spawn_in(&self.tb.ua, "hostile-flood.json", &self.probe, &args)?;
        Ok((sink, load))
    }
}

pub fn wait_ready(log: &std::path::Path) -> anyhow::Result<()> {
    let t = Instant::now();
    while !std::fs::read_to_string(log).is_ok_and(|s| s.contains("ready")) {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(5), "sink not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The sum over queues of a per-queue counter in a Prometheus text.
pub fn queue_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn write(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write payload");
    p.to_str().expect("utf-8").to_owned()
}

/// One pair's two halves of the hostile-neighbour figure.
pub struct Neighbour {
    pub pps: f64,
    pub p99: f64,
}

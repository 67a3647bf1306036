//! sipp (package sip-tester) as a real SIP peer: a UAC phone sending keep-alives,
//! a UAS standing in for the SIP server, and their message logs.

use crate::netns::{Proc, Testbed};
use crate::paths;
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Runs the keep-alive UAC in `ua` towards `server`: `calls` rounds of NOTIFY
/// (Event: keep-alive) then OPTIONS, each expecting 200. Returns whether every
/// round succeeded (sipp's exit status) and sipp's output.
pub fn keepalive_uac(
    tb: &Testbed,
    server: &str,
    calls: u32,
    rate: u32,
    log_dir: &Path,
) -> anyhow::Result<(bool, String)> {
    let scenario = paths::fixture("sipp/keepalive_uac.xml");
    let log = log_dir.join("uac_messages.log");
    let out = tb
        .cmd(&tb.ua, "sipp")
        .args([server, "-sf"])
        .arg(&scenario)
        .args(["-i", crate::netns::UA_IP, "-p", "5061", "-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-recv_timeout", "2000", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_msg", "-message_file"])
        .arg(&log)
        .output()
        .context("running sipp (install the sip-tester package)")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Starts the UAS in `core` on 5060, logging every message it receives.
pub fn uas(tb: &Testbed, log: &Path) -> anyhow::Result<Proc> {
    let scenario = paths::fixture("sipp/keepalive_uas.xml");
    let scenario = scenario.to_str().context("utf-8")?;
    let log = log.to_str().context("utf-8")?;
    tb.spawn(
        &tb.core,
        "sipp",
        &["-sf", scenario, "-i", crate::netns::CORE_IP, "-p", "5060", "-nostdin", "-trace_msg", "-message_file", log],
        None,
    )
}

/// How many messages starting with `start` (e.g. `"BYE "`) a sipp message log holds.
pub fn received_start(log: &PathBuf, start: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.matches(&format!("\n{start}")).count()
}

/// How many requests of `method` appear as received in a sipp message log.
pub fn received(log: &PathBuf, method: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!("\n{method} sip:");
    text.matches(&needle).count()
}

/// Starts sipp's built-in UAS (`-sn uas`: 180, 200, then ACK and BYE) in
/// `core` on 5060, logging every message it receives: a SIP server that
/// completes every call it is offered.
pub fn call_uas(tb: &Testbed, log: &Path) -> anyhow::Result<Proc> {
    uas_with(tb, &["-sn", "uas"], log)
}

/// Starts fixture scenario `scenario` as the UAS in `core` on 5060, logging
/// every message it receives.
pub fn scenario_uas(tb: &Testbed, scenario: &str, log: &Path) -> anyhow::Result<Proc> {
    let f = paths::fixture(scenario);
    uas_with(tb, &["-sf", f.to_str().context("utf-8")?], log)
}

fn uas_with(tb: &Testbed, scenario: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let log = log.to_str().context("utf-8")?;
    let mut args = scenario.to_vec();
    args.extend(["-i", crate::netns::CORE_IP, "-p", "5060", "-nostdin", "-trace_msg", "-message_file", log]);
    tb.spawn(&tb.core, "sipp", &args, None)
}

/// A run of calls and what sipp counted.
#[derive(Debug, Clone)]
pub struct Calls {
    pub successful: u64,
    pub failed: u64,
    /// BYEs sent (first copies) and answered 200, for a scenario that has
    /// them (sipp's per-message counts).
    pub byes: Option<(u64, u64)>,
    /// Calls completed so far, once a second while sipp ran: (Unix time in
    /// seconds, cumulative successful calls), from its start (0).
    pub completed: Vec<(f64, u64)>,
    pub output: String,
}

impl Calls {
    /// Calls completed between Unix times `from` and `to` (seconds), read
    /// off the once-a-second series, linear between its rows: how much a
    /// run contributed to a window of wall time that other runs share.
    pub fn completed_between(&self, from: f64, to: f64) -> f64 {
        self.completed_at(to) - self.completed_at(from)
    }

    fn completed_at(&self, t: f64) -> f64 {
        let s = &self.completed;
        match s.iter().position(|(at, _)| *at >= t) {
            None => s.last().map_or(0.0, |(_, n)| *n as f64),
            Some(0) => 0.0,
            Some(i) => {
                let ((t0, n0), (t1, n1)) = (s[i - 1], s[i]);
                let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 1.0 };
                n0 as f64 + f * (n1 as f64 - n0 as f64)
            }
        }
    }
}

/// Places `calls` calls at `rate` a second from namespace `ua` (port
/// `port`) to `server`: sipp's built-in UAC (`scenario` None) or a fixture
/// scenario. Every run is bounded (`-timeout`, retransmissions at most 5).
pub fn calls(
    ua: &str,
    server: &str,
    scenario: Option<&str>,
    port: u16,
    calls: u32,
    rate: u32,
    log_dir: &Path,
) -> anyhow::Result<Calls> {
    run_calls(ua, server, scenario, None, &[], port, calls, rate, log_dir)
}

/// [`calls`] with sipp's built-in UAC calling user `callee` (`-s`).
pub fn calls_to(
    ua: &str,
    server: &str,
    callee: &str,
    port: u16,
    calls: u32,
    rate: u32,
    log_dir: &Path,
) -> anyhow::Result<Calls> {
    run_calls(ua, server, None, Some(callee), &[], port, calls, rate, log_dir)
}

/// [`calls_to`] placed by callers who hang up as people do
/// (`fixtures/sipp/caller_uac.xml`: CANCEL after 5 s without progress, a
/// second of talk before the BYE): the load the overload benchmark offers.
pub fn callers_to(
    ua: &str,
    server: &str,
    callee: &str,
    port: u16,
    calls: u32,
    rate: u32,
    log_dir: &Path,
) -> anyhow::Result<Calls> {
    let extra = ["-default_behaviors", "all,-bye"];
    run_calls(ua, server, Some("sipp/caller_uac.xml"), Some(callee), &extra, port, calls, rate, log_dir)
}

#[allow(clippy::too_many_arguments)]
fn run_calls(
    ua: &str,
    server: &str,
    scenario: Option<&str>,
    callee: Option<&str>,
    extra: &[&str],
    port: u16,
    calls: u32,
    rate: u32,
    log_dir: &Path,
) -> anyhow::Result<Calls> {
    let stat = log_dir.join(format!("calls-{port}.csv"));
    let _ = std::fs::remove_file(&stat);
    // sipp writes its per-message counts into its working directory: one
    // of its own for each run.
    let work = log_dir.join(format!("sipp-{port}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut cmd = crate::netns::cmd(ua, "sipp");
    cmd.current_dir(&work);
    cmd.arg(server);
    match scenario {
        Some(f) => cmd.arg("-sf").arg(paths::fixture(f)),
        None => cmd.args(["-sn", "uac"]),
    };
    if let Some(user) = callee {
        cmd.args(["-s", user]);
    }
    cmd.args(extra);
    let out = cmd
        .args(["-i", crate::netns::UA_IP, "-p", &port.to_string(), "-m", &calls.to_string(), "-r", &rate.to_string()])
        .args([
            "-max_retrans",
            "5",
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
            "-trace_counts",
            "-trace_stat",
            // A row a second: when the calls completed, not only how many.
            "-fd",
            "1",
            "-stf",
        ])
        .arg(&stat)
        .output()
        .context("running sipp (install the sip-tester package)")?;
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&stat).with_context(|| format!("sipp wrote no statistics:\n{output}"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<&str> = lines.next().context("statistics without a header")?.split(';').collect();
    let last: Vec<&str> = lines.next_back().context("statistics without a row")?.split(';').collect();
    let column = |name: &str| -> anyhow::Result<u64> {
        let i = head.iter().position(|h| *h == name).with_context(|| format!("no column {name}"))?;
        last.get(i).and_then(|v| v.trim().parse().ok()).with_context(|| format!("column {name} unreadable"))
    };
    Ok(Calls {
        successful: column("SuccessfulCall(C)")?,
        failed: column("FailedCall(C)")?,
        byes: bye_counts(&work),
        completed: completion_series(&text),
        output,
    })
}

/// The (Unix time, `SuccessfulCall(C)`) rows of sipp's statistics file,
/// starting with (its `StartTime`, 0). sipp writes times as
/// `date<TAB>time<TAB>unix-seconds`.
fn completion_series(text: &str) -> Vec<(f64, u64)> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(head) = lines.next().map(|h| h.split(';').collect::<Vec<_>>()) else { return Vec::new() };
    let col = |name: &str| head.iter().position(|h| *h == name);
    let (Some(start), Some(now), Some(ok)) = (col("StartTime"), col("CurrentTime"), col("SuccessfulCall(C)")) else {
        return Vec::new();
    };
    let unix =
        |field: Option<&&str>| field.and_then(|f| f.rsplit('\t').next()).and_then(|t| t.trim().parse::<f64>().ok());
    let mut series = Vec::new();
    for row in lines {
        let row: Vec<&str> = row.split(';').collect();
        if series.is_empty()
            && let Some(t) = unix(row.get(start))
        {
            series.push((t, 0));
        }
        if let (Some(t), Some(n)) = (unix(row.get(now)), row.get(ok).and_then(|v| v.trim().parse().ok())) {
            series.push((t, n));
        }
    }
    series
}

/// From sipp's `*_counts.csv` in `dir`: the BYEs a scenario sent (first
/// copies) and the 200s that answered them (the `N_BYE_Sent` column and the
/// `N+1_200_Recv` after it, last row).
fn bye_counts(dir: &Path) -> Option<(u64, u64)> {
    let file =
        std::fs::read_dir(dir).ok()?.flatten().find(|e| e.file_name().to_string_lossy().ends_with("_counts.csv"))?;
    let text = std::fs::read_to_string(file.path()).ok()?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let sent_at = head.iter().position(|h| h.ends_with("_BYE_Sent"))?;
    let step: u32 = head.get(sent_at)?.split('_').next()?.parse().ok()?;
    let answered_at = head.iter().position(|h| *h == format!("{}_200_Recv", step + 1))?;
    let value = |i: usize| last.get(i).and_then(|v| v.trim().parse().ok());
    Some((value(sent_at)?, value(answered_at)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three rows as sipp 3.6 writes them with `-fd 1` (columns cut down).
    const STATS: &str = "StartTime;LastResetTime;CurrentTime;SuccessfulCall(P);SuccessfulCall(C)\n\
        2026-12-07\t14:23:55.800000\t1796653435.800000;x;2026-12-07\t14:23:56.800000\t1796653436.800000;4;4\n\
        2026-12-07\t14:23:55.800000\t1796653435.800000;x;2026-12-07\t14:23:57.800000\t1796653437.800000;6;10\n\
        2026-12-07\t14:23:55.800000\t1796653435.800000;x;2026-12-07\t14:23:58.800000\t1796653438.800000;0;10\n";

    #[test]
    fn the_completion_series_starts_at_zero_and_interpolates_between_rows() {
        let s = completion_series(STATS);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], (1_796_653_435.8, 0));
        let calls = Calls { successful: 10, failed: 0, byes: None, completed: s, output: String::new() };
        let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
        // Half of the first second's 4, all of the next second's 6.
        assert!(near(calls.completed_between(1_796_653_436.3, 1_796_653_437.8), 8.0));
        // Before the start and after the end: nothing more.
        assert!(near(calls.completed_between(1_796_653_400.0, 1_796_653_435.8), 0.0));
        assert!(near(calls.completed_between(1_796_653_438.8, 1_796_653_999.0), 0.0));
    }

    #[test]
    fn a_statistics_file_without_the_columns_gives_no_series() {
        assert!(completion_series("").is_empty());
        assert!(completion_series("A;B\n1;2\n").is_empty());
    }
}

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

/// How many requests of `method` appear as received in a sipp message log.
pub fn received(log: &PathBuf, method: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!("\n{method} sip:");
    text.matches(&needle).count()
}

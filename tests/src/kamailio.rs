//! A real Kamailio (Debian package `kamailio`) as the ITSP's SIP server, with
//! the NetServ fragment from `sip-server-plugin/kamailio/netserv.cfg`.

use crate::netns::{self, Proc};
use crate::paths;
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Kamailio {
    pub proc: Proc,
    ns: String,
    ctl: PathBuf,
    pub log: PathBuf,
}

impl Kamailio {
    /// Starts Kamailio in `ns` listening on `listen` (ip:port), mirroring HEP
    /// to `hep` (a `sip:` URI), with its files in `dir`.
    pub fn start(ns: &str, listen: &str, hep: &str, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(ns, listen, hep, dir, "", "")
    }

    /// [`Kamailio::start`] with config lines of the caller's: `modules` after
    /// the module section, `route` early in `request_route`.
    pub fn start_with(
        ns: &str,
        listen: &str,
        hep: &str,
        dir: &Path,
        modules: &str,
        route: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ctl = dir.join("kamailio_ctl");
        let cfg = std::fs::read_to_string(paths::fixture("kamailio/kamailio.cfg"))?
            .replace("@LISTEN@", listen)
            .replace("@HEP@", hep)
            .replace("@CTL@", ctl.to_str().context("utf-8")?)
            .replace("@RPC@", dir.join("kamailio_rpc.sock").to_str().context("utf-8")?)
            .replace("#@MODULES@", modules)
            .replace("#@ROUTE@", route);
        std::fs::write(dir.join("kamailio.cfg"), cfg)?;
        std::fs::copy(paths::repo().join("sip-server-plugin/kamailio/netserv.cfg"), dir.join("netserv.cfg"))?;
        let log = dir.join("kamailio.log");
        let d = dir.to_str().context("utf-8")?;
        let cfg_path = format!("{d}/kamailio.cfg");
        let pid = format!("{d}/kamailio.pid");
        // -DD: stay in the foreground (the guard kills it); -E: log to stderr.
        let proc =
            netns::spawn(ns, "kamailio", &["-f", &cfg_path, "-DD", "-E", "-P", &pid, "-Y", d, "-w", d], Some(&log))?;
        let me = Self { proc, ns: ns.to_owned(), ctl, log };
        let start = Instant::now();
        while me.statistic("netserv_keepalives").is_err() {
            if start.elapsed() > Duration::from_secs(15) {
                bail!("kamailio did not start:\n{}", std::fs::read_to_string(&me.log).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    /// Its config file (its processes' command lines name it).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.log.with_file_name("kamailio.cfg")
    }

    /// Its `jsonrpcs` datagram socket (what the plugin's monitor reads).
    pub fn rpc_socket(&self) -> std::path::PathBuf {
        self.log.with_file_name("kamailio_rpc.sock")
    }

    /// One of Kamailio's own statistics (`kamcmd stats.get_statistics`).
    pub fn statistic(&self, name: &str) -> anyhow::Result<u64> {
        let ctl = format!("unix:{}", self.ctl.display());
        let out = netns::output(&self.ns, "kamcmd", &["-s", &ctl, "stats.get_statistics", name])?;
        out.lines()
            .find_map(|l| l.split_once(" = ").and_then(|(_, v)| v.trim().parse().ok()))
            .with_context(|| format!("no statistic {name} in {out:?}"))
    }
}

/// A `request_route` line (for [`Kamailio::start_with`]) that sends
/// emergency calls (`urn:service:sos`, RFC 5031) to the callee of
/// [`start_callee`] behind `server` (ip:port).
pub fn emergency_to_callee(server: &str) -> String {
    format!("if ($ru =~ \"^urn:service:sos\") {{ $ru = \"sip:uas@{server}\"; }}")
}

/// The callee behind the server `server` (ip:port), for calls to user
/// `uas`: registers a sipp UAS in `core` (port 5070; its scenario file in
/// `dir`) and starts it. Stops with the returned process.
pub fn start_callee(ns: &str, server: &str, dir: &Path) -> anyhow::Result<Proc> {
    let reg = dir.join("uas-register.xml");
    std::fs::write(&reg, phone_scenario("uas", 0, 0, 0, 3600))?;
    let reg = reg.to_str().context("non-UTF-8 path")?;
    let r = netns::cmd(ns, "sipp")
        .args([server, "-sf", reg, "-i", netns::CORE_IP, "-p", "5070", "-m", "1"])
        .args(["-recv_timeout", "3000", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .output()
        .context("running sipp (install the sip-tester package)")?;
    if !r.status.success() {
        bail!("the callee did not register: {}", String::from_utf8_lossy(&r.stdout));
    }
    let callee = paths::fixture("sipp/callee_uas.xml");
    let callee = callee.to_str().context("non-UTF-8 path")?;
    netns::spawn(ns, "sipp", &["-sf", callee, "-i", netns::CORE_IP, "-p", "5070", "-nostdin"], None)
}

/// A sipp phone scenario: REGISTER (Expires `expires`), then `keepalives`
/// NOTIFY keep-alives every `interval_ms`, re-registering every
/// `register_every` keep-alives; every request must get a 200. One Call-ID
/// for all of them: sipp matches answers to its call by Call-ID.
pub fn phone_scenario(user: &str, keepalives: u32, interval_ms: u32, register_every: u32, expires: u32) -> String {
    let register = |cseq: u32| {
        format!(
            r#"  <send retrans="500"><![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:{user}@[remote_ip]>;tag=[pid]reg
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Expires: {expires}
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200" />
"#
        )
    };
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n<scenario name=\"NetServ phone\">\n",
    );
    x.push_str(&register(1));
    for i in 1..=keepalives {
        x.push_str(&format!("  <pause milliseconds=\"{interval_ms}\"/>\n"));
        x.push_str(&format!(
            r#"  <send retrans="500"><![CDATA[
      NOTIFY sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:{user}@[local_ip]>;tag=[pid]ka
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {i} NOTIFY
      Event: keep-alive
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <recv response="200" />
"#
        ));
        if register_every > 0 && i % register_every == 0 {
            x.push_str(&register(i + 1));
        }
    }
    x.push_str("</scenario>\n");
    x
}

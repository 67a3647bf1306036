//! Network namespaces made and removed by the test itself.
//!
//! ```text
//!   ua (198.18.1.10) ── edge (198.18.1.1 | 198.18.2.1, forwarding) ── core (198.18.2.20)
//! ```

use anyhow::{Context as _, bail};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const UA_IP: &str = "198.18.1.10";
pub const EDGE_UA_IP: &str = "198.18.1.1";
pub const EDGE_CORE_IP: &str = "198.18.2.1";
pub const CORE_IP: &str = "198.18.2.20";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub(crate) fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Three namespaces and two veth links; removed on drop.
pub struct Testbed {
    pub ua: String,
    pub edge: String,
    pub core: String,
}

impl Testbed {
    /// Builds the topology. Needs root (CAP_NET_ADMIN).
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let id = format!("{}{}{}", tag, std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let tb = Testbed { ua: format!("ns-{id}-ua"), edge: format!("ns-{id}-edge"), core: format!("ns-{id}-core") };
        // From here on, Drop cleans up whatever was made.
        build(
            &[&tb.ua, &tb.edge, &tb.core],
            &[
                (&tb.ua, "ua0", "198.18.1.10/24", &tb.edge, "e0", "198.18.1.1/24"),
                (&tb.edge, "e1", "198.18.2.1/24", &tb.core, "c0", "198.18.2.20/24"),
            ],
            &[(&tb.ua, "default", EDGE_UA_IP), (&tb.core, "default", EDGE_CORE_IP)],
            &[&tb.edge],
        )?;
        Ok(tb)
    }

    /// Adds another address to `ua` (another phone behind the same edge).
    pub fn add_ua_address(&self, ip: &str) -> anyhow::Result<()> {
        sh(&["ip", "-n", &self.ua, "addr", "add", &format!("{ip}/24"), "dev", "ua0"])
    }

    /// A command to run inside namespace `ns`.
    pub fn cmd(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        cmd(ns, program)
    }

    /// Runs a command in `ns` to completion and returns its stdout.
    pub fn output(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<String> {
        output(ns, program, args)
    }

    /// Starts a long-running command in `ns` (see [`spawn`]).
    pub fn spawn(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> anyhow::Result<Proc> {
        spawn(ns, program, args, log)
    }

    /// Counts iptables rules in the edge that send a module's traffic to NFQUEUE.
    pub fn nfqueue_rules(&self) -> usize {
        module_rules(&self.edge)
    }
}

/// Module filters steered to NFQUEUE in `ns`: entries of the appliance's
/// ipsets plus NFQUEUE rules of their own (not the signaling tap's, nor the
/// one rule that serves the sets).
pub fn module_rules(ns: &str) -> usize {
    let rules = output(ns, "iptables", &["-S"]).map_or(0, |s| {
        s.lines()
            .filter(|l| l.contains("NFQUEUE") && !l.contains("netserv:signaling") && !l.contains("netserv:modules"))
            .count()
    });
    let entries =
        output(ns, "ipset", &["save"]).map_or(0, |s| s.lines().filter(|l| l.starts_with("add NETSERV-")).count());
    rules + entries
}

/// Whether the rule that sends the appliance's ipsets to NFQUEUE is in `ns`.
pub fn set_rule_present(ns: &str) -> bool {
    output(ns, "iptables", &["-S"]).is_ok_and(|s| s.contains("netserv:modules"))
}

/// A command to run inside namespace `ns`.
pub fn cmd(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c
}

/// Runs a command in `ns` to completion and returns its stdout.
pub fn output(ns: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<String> {
    let out = cmd(ns, program).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{args:?} in {ns} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a long-running command in `ns`, its output going to `log` (or
/// nowhere: an unread pipe would block a chatty child); killed on drop.
pub fn spawn(
    ns: &str,
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    log: Option<&std::path::Path>,
) -> anyhow::Result<Proc> {
    let (out, err) = match log {
        Some(p) => {
            let f = std::fs::File::create(p)?;
            (Stdio::from(f.try_clone()?), Stdio::from(f))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let child = cmd(ns, program).args(args).stdin(Stdio::null()).stdout(out).stderr(err).spawn()?;
    Ok(Proc(Some(child)))
}

/// Kills what runs in each namespace and deletes it (its veths and iptables
/// rules go with it).
pub(crate) fn delete_namespaces<'a>(names: impl IntoIterator<Item = &'a String>) {
    for ns in names {
        let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        });
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
}

/// A veth link: (namespace, device, address/len) at each end.
pub(crate) type Link<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

/// Makes `namespaces` (loopback up), joins them with `links`, adds `routes`
/// (namespace, destination, gateway) and lets `forwarders` route between
/// their links. Reverse-path filtering is off there: replies leave an edge
/// with the intercepted server's address as source. The caller's Drop
/// removes whatever was made if this fails half-way.
pub(crate) fn build(
    namespaces: &[&str],
    links: &[Link<'_>],
    routes: &[(&str, &str, &str)],
    forwarders: &[&str],
) -> anyhow::Result<()> {
    for ns in namespaces {
        sh(&["ip", "netns", "add", ns]).context("creating a network namespace (are you root?)")?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    for &(ns1, d1, a1, ns2, d2, a2) in links {
        sh(&["ip", "link", "add", d1, "netns", ns1, "type", "veth", "peer", "name", d2, "netns", ns2])?;
        for (ns, dev, addr) in [(ns1, d1, a1), (ns2, d2, a2)] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
    }
    for &(ns, to, via) in routes {
        sh(&["ip", "-n", ns, "route", "add", to, "via", via])?;
    }
    for ns in forwarders {
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])?;
    }
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        delete_namespaces([&self.ua, &self.edge, &self.core]);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.0.as_mut().context("process already reaped")?;
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.0 = None;
                return Ok(status);
            }
            if start.elapsed() > timeout {
                bail!("process {} did not exit within {timeout:?}", child.id());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Sends a signal (by name, e.g. "TERM") and waits up to `timeout` for exit.
    pub fn signal_and_wait(
        &mut self,
        sig: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.0.take().context("process already reaped")?;
        let _ = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
        let start = std::time::Instant::now();
        let mut child = child;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                bail!("process did not exit within {timeout:?} of SIG{sig}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

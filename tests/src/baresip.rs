//! Real SIP phones: two `baresip`s (Debian package `baresip`) behind a NAT.
//!
//! ```text
//!   pa 198.19.1.2 ─┐
//!                  ua (NAT: MASQUERADE to 198.18.1.10) ── edge ── core
//!   pb 198.19.2.2 ─┘
//! ```
//!
//! `ua` becomes the phones' home router: it masquerades what they send
//! towards the edge, and drops what one phone sends straight to the other,
//! so media can only meet through a relay. Each phone plays a sine wave
//! (`ausine`) into the call and plays what it receives into ALSA's `null`
//! device; `rtp_stats` makes baresip print what it sent and received when
//! the call ends.

use crate::netns::{self, Proc, Testbed, delete_namespaces, sh};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The phones' private addresses and their router's.
pub const PHONE_A: &str = "198.19.1.2";
pub const PHONE_B: &str = "198.19.2.2";

/// Two phone namespaces behind `ua`'s NAT; removed on drop (with the NAT's
/// rules, which live in `ua` and go when the testbed does).
pub struct NatPhones {
    pub a: String,
    pub b: String,
}

impl NatPhones {
    pub fn new(tb: &Testbed) -> anyhow::Result<Self> {
        let me = Self { a: format!("{}-pa", tb.ua), b: format!("{}-pb", tb.ua) };
        let links: [netns::Link<'_>; 2] = [
            (&me.a, "p0", "198.19.1.2/24", &tb.ua, "la", "198.19.1.1/24"),
            (&me.b, "p0", "198.19.2.2/24", &tb.ua, "lb", "198.19.2.1/24"),
        ];
        let routes = [(me.a.as_str(), "default", "198.19.1.1"), (me.b.as_str(), "default", "198.19.2.1")];
        netns::build(&[&me.a, &me.b], &links, &routes, &[])?;
        let ua = tb.ua.as_str();
        sh(&["ip", "netns", "exec", ua, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let ipt = |rule: &[&str]| {
            let mut args = vec!["ip", "netns", "exec", ua, "iptables"];
            args.extend_from_slice(rule);
            sh(&args)
        };
        ipt(&["-t", "nat", "-A", "POSTROUTING", "-o", "ua0", "-j", "MASQUERADE"])?;
        ipt(&["-A", "FORWARD", "-i", "la", "-o", "lb", "-j", "DROP"])?;
        ipt(&["-A", "FORWARD", "-i", "lb", "-o", "la", "-j", "DROP"])?;
        Ok(me)
    }
}

impl Drop for NatPhones {
    fn drop(&mut self) {
        delete_namespaces([&self.a, &self.b]);
    }
}

/// A phone's TURN settings: `server` is `host:port`.
pub struct Turn<'a> {
    pub server: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// One baresip's configuration directory.
pub struct Phone {
    pub dir: PathBuf,
    pub ns: String,
    pub user: String,
}

impl Phone {
    /// Writes the config for `user` at `ip` (in namespace `ns`), registered
    /// with `registrar` (`host:port`), answering calls by itself, with media
    /// through `turn` when given.
    pub fn configure(
        dir: &Path,
        ns: &str,
        user: &str,
        ip: &str,
        registrar: &str,
        turn: Option<&Turn<'_>>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // ausine makes 48 kHz stereo only: the resampler brings it to PCMU's
        // 8 kHz mono. ALSA's `null` device swallows what is played.
        let config = format!(
            "sip_listen\t{ip}:5060\n\
             audio_player\talsa,null\naudio_alert\talsa,null\naudio_source\tausine,440\n\
             ausrc_srate\t48000\nausrc_channels\t2\nauplay_srate\t48000\nauplay_channels\t1\n\
             rtp_stats\tyes\nmodule_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\nmodule\tausine.so\nmodule\talsa.so\nmodule\tturn.so\n\
             module_tmp\taccount.so\nmodule_app\tmenu.so\n"
        );
        std::fs::write(dir.join("config"), config)?;
        let mut account = format!("<sip:{user}@{registrar}>;regint=300;answermode=auto;audio_codecs=pcmu");
        if let Some(t) = turn {
            account.push_str(&format!(
                ";medianat=turn;stunserver=\"turn:{}\";stunuser={};stunpass={}",
                t.server, t.username, t.password
            ));
        }
        std::fs::write(dir.join("accounts"), account + "\n")?;
        Ok(Self { dir: dir.to_owned(), ns: ns.to_owned(), user: user.to_owned() })
    }

    /// Starts baresip, quitting by itself after `secs`; `commands` are run
    /// at start (e.g. `/dial sip:bob@...`). Output goes to `log()`.
    pub fn start(&self, secs: u32, commands: &[&str]) -> anyhow::Result<Proc> {
        let dir = self.dir.to_str().context("non-UTF-8 path")?;
        let secs = secs.to_string();
        let mut args = vec!["-f", dir, "-t", &secs];
        for c in commands {
            args.extend(["-e", c]);
        }
        netns::spawn(&self.ns, "baresip", &args, Some(&self.dir.join("baresip.log")))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }
}

/// What one phone said of its call when it ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// RTP packets it sent and received (baresip's `rtp_stats` table).
    pub sent: u64,
    pub received: u64,
    /// Where the other side's media came from ("receiving from a:p").
    pub media_from: Option<String>,
}

/// Reads a baresip log's call summary.
pub fn call_stats(log: &str) -> CallStats {
    let mut s = CallStats::default();
    for line in log.lines() {
        // "packets:            500          500" (Transmit, Receive)
        if let Some(rest) = line.trim_start().strip_prefix("packets:") {
            let mut n = rest.split_whitespace().filter_map(|v| v.parse().ok());
            s.sent = n.next().unwrap_or(0);
            s.received = n.next().unwrap_or(0);
        }
        // "stream: incoming rtp for 'audio' established, receiving from 198.18.1.1:49160"
        if let Some(at) = line.find("receiving from ") {
            s.media_from = line.get(at + "receiving from ".len()..).map(|v| v.trim().to_owned());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_phone_says_of_its_call() {
        let log = "stream: incoming rtp for 'audio' established, receiving from 198.18.1.1:49160\n\
                   audio           Transmit:     Receive:\npackets:            500          498\n";
        assert_eq!(
            call_stats(log),
            CallStats { sent: 500, received: 498, media_from: Some("198.18.1.1:49160".into()) }
        );
        assert_eq!(call_stats("no call"), CallStats::default());
    }
}

//! The multi-hop testbed: two appliances with a plain Linux router between
//! them, so on-path signaling must find both and skip the router.
//!
//! ```text
//!  core 198.18.10.20 ── .10.1 edge1 .11.1 ── .11.2 router .12.1 ── .12.2 edge2 .13.1 ── .13.10 ua
//! ```

use crate::netns::{self, Proc, delete_namespaces, run};
use std::sync::atomic::{AtomicU32, Ordering};

pub const CORE_IP: &str = "198.18.10.20";
pub const EDGE1_UP: &str = "198.18.10.1";
pub const EDGE2_UP: &str = "198.18.12.2";
pub const UA_IP: &str = "198.18.13.10";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct PathTestbed {
    pub core: String,
    pub edge1: String,
    pub router: String,
    pub edge2: String,
    pub ua: String,
}

impl PathTestbed {
    /// Builds the five namespaces and four links. Needs root.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let id = format!("{tag}{}{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let n = |role: &str| format!("np-{id}-{role}");
        let tb = Self { core: n("core"), edge1: n("e1"), router: n("rt"), edge2: n("e2"), ua: n("ua") };
        for ns in tb.all() {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        // (namespace, device, address) at each end of each link.
        let links: [(&str, &str, &str, &str, &str, &str); 4] = [
            (&tb.core, "c0", "198.18.10.20/24", &tb.edge1, "a0", "198.18.10.1/24"),
            (&tb.edge1, "a1", "198.18.11.1/24", &tb.router, "r0", "198.18.11.2/24"),
            (&tb.router, "r1", "198.18.12.1/24", &tb.edge2, "b0", "198.18.12.2/24"),
            (&tb.edge2, "b1", "198.18.13.1/24", &tb.ua, "u0", "198.18.13.10/24"),
        ];
        for (ns1, d1, a1, ns2, d2, a2) in links {
            run(&["ip", "link", "add", d1, "netns", ns1, "type", "veth", "peer", "name", d2, "netns", ns2])?;
            for (ns, dev, addr) in [(ns1, d1, a1), (ns2, d2, a2)] {
                run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev])?;
                run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            }
        }
        let routes: [(&str, &str, &str); 8] = [
            (&tb.core, "default", "198.18.10.1"),
            (&tb.edge1, "198.18.12.0/24", "198.18.11.2"),
            (&tb.edge1, "198.18.13.0/24", "198.18.11.2"),
            (&tb.router, "198.18.10.0/24", "198.18.11.1"),
            (&tb.router, "198.18.13.0/24", "198.18.12.2"),
            (&tb.edge2, "198.18.10.0/24", "198.18.12.1"),
            (&tb.edge2, "198.18.11.0/24", "198.18.12.1"),
            (&tb.ua, "default", "198.18.13.1"),
        ];
        for (ns, to, via) in routes {
            run(&["ip", "-n", ns, "route", "add", to, "via", via])?;
        }
        for ns in [&tb.edge1, &tb.router, &tb.edge2] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])?;
        }
        Ok(tb)
    }

    fn all(&self) -> [&String; 5] {
        [&self.core, &self.edge1, &self.router, &self.edge2, &self.ua]
    }

    pub fn output(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> anyhow::Result<String> {
        netns::output(ns, program, args)
    }

    pub fn spawn(
        &self,
        ns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: Option<&std::path::Path>,
    ) -> anyhow::Result<Proc> {
        netns::spawn(ns, program, args, log)
    }
}

impl Drop for PathTestbed {
    fn drop(&mut self) {
        delete_namespaces(self.all());
    }
}

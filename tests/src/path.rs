//! The multi-hop testbed: two appliances with a plain Linux router between
//! them, so on-path signaling must find both and skip the router.
//!
//! ```text
//!  core 198.18.10.20 ── .10.1 edge1 .11.1 ── .11.2 router .12.1 ── .12.2 edge2 .13.1 ── .13.10 ua
//! ```

use crate::appliance::ADMIN_TOKEN;
use crate::netns::{self, Proc, delete_namespaces};
use crate::paths;
use std::sync::atomic::{AtomicU32, Ordering};

pub const CORE_IP: &str = "198.18.10.20";
pub const EDGE1_UP: &str = "198.18.10.1";
pub const EDGE2_UP: &str = "198.18.12.2";
pub const UA_IP: &str = "198.18.13.10";

/// RFC 8032 §7.1 TEST 1 secret seed: tenant `itsp-a`'s signing key in
/// [`appliance_config`] (its public key is the TEST 1 public key).
pub const SEED_A: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// An appliance for this testbed: tenant `itsp-a` owns core's SIP port;
/// `signaling` is extra lines for the `[signaling]` table.
pub fn appliance_config(node_id: &str, state_dir: &std::path::Path, signaling: &str) -> String {
    format!(
        r#"node_id = "{node_id}"
state_dir = {state_dir:?}

[api]
listen = "127.0.0.1:8270"
admin_token = "{ADMIN_TOKEN}"

[dataplane]
queues = 1

[signaling]
{signaling}

[[tenants]]
name = "itsp-a"
public_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
api_token = "tenant-a-token-0123456789"
filter_prefixes = ["198.18.10.0/24"]
listen_ports = [5060]
"#
    )
}

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
        let links: [netns::Link<'_>; 4] = [
            (&tb.core, "c0", "198.18.10.20/24", &tb.edge1, "a0", "198.18.10.1/24"),
            (&tb.edge1, "a1", "198.18.11.1/24", &tb.router, "r0", "198.18.11.2/24"),
            (&tb.router, "r1", "198.18.12.1/24", &tb.edge2, "b0", "198.18.12.2/24"),
            (&tb.edge2, "b1", "198.18.13.1/24", &tb.ua, "u0", "198.18.13.10/24"),
        ];
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
        // From here on, Drop cleans up whatever was made.
        netns::build(&tb.all().map(String::as_str), &links, &routes, &[&tb.edge1, &tb.router, &tb.edge2])?;
        Ok(tb)
    }

    /// Serves the keepalive module over HTTP from core (python3's http.server,
    /// files from `www`); returns the server and the module's URL once it answers.
    pub fn module_origin(&self, www: &std::path::Path) -> anyhow::Result<(Proc, String)> {
        std::fs::create_dir_all(www)?;
        std::fs::copy(paths::module("netserv_keepalive"), www.join("keepalive.wasm"))?;
        let dir = www.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
        let origin = self.spawn(
            &self.core,
            "python3",
            &["-m", "http.server", "8080", "--bind", CORE_IP, "--directory", dir],
            None,
        )?;
        let url = format!("http://{CORE_IP}:8080/keepalive.wasm");
        for _ in 0..200 {
            if self.output(&self.core, "curl", &["-sf", "-o", "/dev/null", &url]).is_ok() {
                return Ok((origin, url));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("the module origin did not come up")
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

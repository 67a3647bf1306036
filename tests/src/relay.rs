//! The media relay in the testbed: the appliance's config for it, its
//! install, and coturn's own client (`turnutils_uclient`) and peer
//! (`turnutils_peer`) as the real peers that drive it.

use crate::appliance::{TENANT_A_TOKEN, node_config};
use crate::netns::{EDGE_UA_IP, Proc, Testbed};
use crate::paths;
use anyhow::Context as _;
use serde_json::{Value, json};

/// Where the relay listens (the edge's address on the phones' side).
pub const RELAY_PORT: u16 = 3478;
/// The port `turnutils_peer` echoes on, in `core`.
pub const PEER_PORT: u16 = 3480;
/// Tenant itsp-a's relay ports.
pub const RELAY_PORTS: &str = "49152-49407";
/// The TURN REST shared secret and a static user the tests set.
pub const REST_SECRET: &str = "north-wind-shared-secret";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";

/// The test node's config with `[servers] address` set and tenant itsp-a
/// authorized to listen on the TURN port and to relay on `RELAY_PORTS`.
pub fn relay_config(extra_itsp_a: &str) -> String {
    let base = node_config("queues = 2", "");
    let a = format!("listen_ports = [5060, {RELAY_PORT}]\nrelay_ports = \"{RELAY_PORTS}\"\n{extra_itsp_a}");
    let with = base.replacen("listen_ports = [5060]", &a, 1);
    format!("{with}\n[servers]\naddress = \"{EDGE_UA_IP}\"\n")
}

/// The relay's install request (UDP and TCP listeners on RELAY_PORT, REST and static users).
pub fn relay_install() -> Value {
    json!({
        "tenant": "itsp-a",
        "name": "relay",
        "source": { "path": paths::module("netserv_media_relay") },
        "listen": [{ "transport": "udp", "port": RELAY_PORT }, { "transport": "tcp", "port": RELAY_PORT }],
        "properties": { "auth": "rest,static", "realm": "itsp-a.example" },
    })
}

/// Sets itsp-a's secrets through its own API token.
pub fn set_secrets(app: &crate::Appliance) -> anyhow::Result<()> {
    for (name, value) in [("turn-secret", REST_SECRET), (&format!("user.{USER}") as &str, PASSWORD)] {
        let (code, v) = app.api(
            "PUT",
            &format!("/api/v1/tenants/itsp-a/secrets/{name}"),
            Some(&json!({ "value": value })),
            TENANT_A_TOKEN,
        )?;
        anyhow::ensure!(code == 204, "setting secret {name}: {code} {v}");
    }
    Ok(())
}

/// `turnutils_peer` in `core`: it echoes what reaches it.
pub fn peer(tb: &Testbed) -> anyhow::Result<Proc> {
    let port = PEER_PORT.to_string();
    crate::netns::spawn(&tb.core, "turnutils_peer", &["-L", crate::netns::CORE_IP, "-p", &port], None)
}

/// What one `turnutils_uclient` run reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRun {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub errors: Vec<String>,
    pub output: String,
}

/// Runs `turnutils_uclient` in `ua` against the relay with `args` (mode
/// flags and credentials) and parses its totals.
pub fn uclient(tb: &Testbed, args: &[&str], peer_ip: &str) -> anyhow::Result<ClientRun> {
    let port = RELAY_PORT.to_string();
    let peer_port = PEER_PORT.to_string();
    let mut all: Vec<&str> = vec!["30", "turnutils_uclient", "-p", &port, "-e", peer_ip, "-r", &peer_port];
    all.extend_from_slice(args);
    all.push(EDGE_UA_IP);
    let out = crate::netns::cmd(&tb.ua, "timeout").args(&all).output().context("running turnutils_uclient")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(parse_uclient(&text))
}

/// The totals of a `turnutils_uclient` run from its output.
pub fn parse_uclient(text: &str) -> ClientRun {
    let mut r = ClientRun { output: text.to_owned(), ..Default::default() };
    let num = |line: &str, key: &str| -> Option<u64> {
        let at = line.find(key)? + key.len();
        line.get(at..)?.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    for line in text.lines() {
        // The final totals: "start_mclient: tot_send_msgs=40, tot_recv_msgs=40".
        if line.contains("start_mclient: tot_send_msgs=") {
            r.sent = num(line, "tot_send_msgs=").unwrap_or(0);
            r.received = num(line, "tot_recv_msgs=").unwrap_or(0);
        }
        if line.contains("Total lost packets") {
            r.lost = num(line, "Total lost packets").unwrap_or(0);
        }
        if line.contains("error") {
            r.errors.push(line.trim().to_owned());
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clients_totals() {
        let text = "0: : channel bind: error 403 (Forbidden)\n4: : start_mclient: msz=2, tot_send_msgs=20, tot_recv_msgs=20, tot_send_bytes ~ 2000, tot_recv_bytes ~ 2000\n\
                    4: : start_mclient: tot_send_msgs=40, tot_recv_msgs=39\n4: : start_mclient: tot_send_bytes ~ 4000, tot_recv_bytes ~ 4000\n\
                    4: : Total lost packets 1 (2.5%), total send dropped 0 (0.000000%)\n";
        let r = parse_uclient(text);
        assert_eq!((r.sent, r.received, r.lost), (40, 39, 1));
        assert_eq!(r.errors.len(), 1);
        let cfg = relay_config("");
        assert!(cfg.contains("relay_ports = \"49152-49407\"") && cfg.contains("[servers]"));
    }
}

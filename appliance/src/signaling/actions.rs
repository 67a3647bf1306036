//! What a verified NetServ NSLP request does on this node, through the same
//! controller path the admin API uses; the outcome is this node's entry in
//! the response stack.

use crate::controller::{ControlError, Controller, InstallRequest, Principal};
use crate::dataplane::Filter;
use crate::dataplane::Transport;
use crate::relay::shell::Listen;
use crate::store::{FetchError, ModuleSource};
use netserv_nslp::sign::Verified;
use netserv_nslp::wire::{NodeEntry, Request, RequestKind, Status};
use std::net::IpAddr;
use std::sync::Arc;

/// What this node can do, for PROBE.
pub const CAPABILITIES: &[&str] =
    &["gist-dmode", "netserv-nslp/1", "wasm-packet-module", "wasm-server-module", "nfqueue", "ipv4", "ipv6"];

pub fn status_of(e: &ControlError) -> Status {
    match e {
        ControlError::UnknownTenant(_) => Status::UnknownTenant,
        ControlError::Forbidden(_) => Status::Unauthorized,
        ControlError::Invalid(_) => Status::Malformed,
        ControlError::Limit(_) | ControlError::Busy(_) => Status::LimitExceeded,
        ControlError::Fetch(FetchError::HashMismatch { .. }) => Status::HashMismatch,
        ControlError::Fetch(FetchError::TooLarge { .. }) => Status::LimitExceeded,
        ControlError::Fetch(_) => Status::DownloadFailed,
        ControlError::NotFound(_) => Status::NotInstalled,
        ControlError::Module(_) | ControlError::Dataplane(_) | ControlError::Internal(_) => Status::InstallFailed,
    }
}

/// What a signaling response says about a refusal. Signaling is signed but
/// not encrypted, and every node on the path sees it: no download error
/// text, no URL, no hash of what was fetched, no compiler message (those go
/// to the node's log).
pub fn wire_reason(e: &ControlError) -> String {
    match e {
        ControlError::Fetch(f) => f.coarse().to_owned(),
        ControlError::Module(_) | ControlError::Dataplane(_) | ControlError::Internal(_) => "install failed".into(),
        ControlError::Busy(_) => "node busy; try again".into(),
        other => other.to_string(),
    }
}

/// The install a SETUP asks for, or why it is malformed.
pub fn install_request(r: &Request) -> Result<InstallRequest, String> {
    let kind = r.kind.as_str();
    let name = r.module.clone().ok_or_else(|| format!("{kind} without a module name"))?;
    let url = r.module_url.clone().ok_or_else(|| format!("{kind} without a module URL"))?;
    let sha = r.sha256.ok_or_else(|| format!("{kind} without the module's sha256"))?;
    let transport = match r.filter_proto.unwrap_or(17) {
        17 => Transport::Udp,
        6 => Transport::Tcp,
        p => return Err(format!("filter-proto {p} is neither UDP (17) nor TCP (6)")),
    };
    // A SETUP without filter-addr is for a server module: its filter-port
    // are the ports it listens on.
    let (filter, listen) = match r.filter_addr {
        Some((addr, len)) => {
            let destination = ipnet::IpNet::new(addr, len).map_err(|e| format!("filter-addr: {e}"))?.trunc();
            (
                Some(Filter { transport, destination, ports: r.filter_ports.clone(), source: None, responses: false }),
                Vec::new(),
            )
        }
        None if !r.filter_ports.is_empty() => {
            (None, r.filter_ports.iter().map(|&port| Listen { transport, port }).collect())
        }
        None => {
            return Err(format!(
                "{kind} without filter-addr (a packet module's traffic) or filter-port (a server module's listeners)"
            ));
        }
    };
    Ok(InstallRequest {
        tenant: r.user.clone(),
        name,
        source: ModuleSource::Url(url),
        sha256: Some(hex::encode(sha)),
        filter,
        listen,
        properties: r.properties.iter().cloned().collect(),
        ttl_secs: r.ttl_secs.map(u64::from),
    })
}

/// Carries out the request; never fails, the entry says how it went. A
/// TRIGGER acts only on its return leg (from the far end of the path back
/// towards the requester), where it installs like a SETUP.
pub async fn perform(
    controller: &Arc<Controller>,
    node_id: &str,
    address: IpAddr,
    load_pps: u32,
    req: &Verified<Request>,
) -> NodeEntry {
    let who = Principal::Tenant(req.user.clone());
    let mut entry = match req.kind {
        RequestKind::Setup | RequestKind::Trigger => match install_request(req) {
            Err(why) => NodeEntry::new(node_id, Status::Malformed, why),
            Ok(ir) => {
                let ttl = ir.ttl_secs;
                match controller.install(&who, ir).await {
                    Ok(m) => NodeEntry::new(
                        node_id,
                        Status::Ok,
                        format!(
                            "installed {} (sha256 {}…){}",
                            m.id,
                            m.sha256.get(..12).unwrap_or_default(),
                            ttl.map(|t| format!(", ttl {t} s")).unwrap_or_default()
                        ),
                    ),
                    Err(e) => {
                        tracing::warn!(tenant = %req.user, error = %e, "SETUP refused");
                        NodeEntry::new(node_id, status_of(&e), wire_reason(&e))
                    }
                }
            }
        },
        RequestKind::Remove => match req.module.as_deref() {
            None => NodeEntry::new(node_id, Status::Malformed, "REMOVE without a module name"),
            Some(name) => match controller.remove(&who, &req.user, name).await {
                Ok(m) => NodeEntry::new(node_id, Status::Ok, format!("removed {}", m.id)),
                Err(e) => NodeEntry::new(node_id, status_of(&e), wire_reason(&e)),
            },
        },
        RequestKind::Probe => NodeEntry::new(node_id, Status::Ok, "probed"),
    };
    entry.address = Some(address);
    // Every entry reports the node: what it can do, the tenant's own modules
    // (never another tenant's), its load.
    let modules = controller.list(&who).await;
    entry.capabilities = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    // Where this node's server modules (relays) listen: what a plugin hands
    // its phones.
    if let Some(a) = controller.config().servers.address {
        entry.capabilities.push(format!("server-address={a}"));
    }
    // Where the tenant's SIP server side posts load reports (overload control).
    if let Some(a) = controller.config().api_advertise {
        entry.capabilities.push(format!("feedback={a}"));
    }
    entry.active_modules = u32::try_from(modules.len()).unwrap_or(u32::MAX);
    entry.modules = modules.iter().map(|m| format!("{}@{}", m.id, m.sha256.get(..12).unwrap_or_default())).collect();
    entry.load_pps = load_pps;
    entry.answered = modules.iter().map(|m| m.counters.packets.replied).sum();
    entry
}

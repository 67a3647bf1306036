//! The director's on-path signaling: SETUP, PROBE and REMOVE of the cache
//! module towards a client, signed with the provider's key; only certified
//! appliances on the path the request took count (`client::verified_path`).

use crate::config::Config;
use crate::geo::GeoDb;
use crate::placement::Landed;
use ed25519_dalek::{SigningKey, VerifyingKey};
use netserv_nslp::wire::{NodeEntry, Request, RequestKind, Status};
use netserv_shell::client::{self, ClientOptions};
use rand_core::{OsRng, RngCore};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Signer {
    pub tenant: String,
    pub module: String,
    pub url: String,
    pub sha256: [u8; 32],
    pub port: u16,
    pub ttl_secs: u64,
    pub properties: Vec<(String, String)>,
    pub key: SigningKey,
    pub trusted: Vec<VerifyingKey>,
    pub opts: ClientOptions,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Signer {
    pub fn new(cfg: &Config, module_bytes: &[u8]) -> anyhow::Result<Self> {
        use sha2::Digest as _;
        let trusted = cfg
            .signaling
            .trusted_isp_keys
            .iter()
            .map(|k| netserv_shell::keys::parse_public_key(k, "signaling.trusted_isp_keys"))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            tenant: cfg.tenant.clone(),
            module: cfg.module.name.clone(),
            url: cfg.module_url(),
            sha256: sha2::Sha256::digest(module_bytes).into(),
            port: cfg.module.port,
            ttl_secs: cfg.placement.ttl_secs,
            properties: cfg.module.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            key: netserv_shell::keys::read_signing_key(&cfg.key_file)?,
            trusted,
            opts: ClientOptions {
                node_id: format!("director-{}", cfg.tenant),
                query_attempts: cfg.signaling.query_attempts,
                timeout: Duration::from_millis(cfg.signaling.timeout_ms),
                ..ClientOptions::default()
            },
        })
    }

    /// Sends one request towards `toward`; the certified entries of its stack,
    /// or `None` when no appliance is on the path or signaling failed.
    pub async fn send(&self, kind: RequestKind, toward: IpAddr) -> Option<Vec<NodeEntry>> {
        let flow = client::flow_toward(toward, &self.opts).ok()?;
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let mut r = Request::new(kind, OsRng.next_u32(), self.tenant.clone(), now_ms(), nonce);
        if kind != RequestKind::Probe {
            r.module = Some(self.module.clone());
        }
        if kind == RequestKind::Setup {
            r.module_url = Some(self.url.clone());
            r.sha256 = Some(self.sha256);
            // A module with listeners: TCP on the cache's port, no filter address.
            r.filter_proto = Some(6);
            r.filter_ports = vec![self.port];
            r.ttl_secs = Some(u32::try_from(self.ttl_secs).unwrap_or(u32::MAX));
            r.properties.clone_from(&self.properties);
        }
        if let Err(e) = netserv_nslp::sign::sign(&mut r, &flow, &self.key) {
            tracing::warn!(request = kind.as_str(), %toward, error = %e, "signing failed");
            return None;
        }
        match client::request(&flow, r.id, r.encode(), &self.opts).await {
            Ok(client::Outcome::Response(resp)) => {
                let first = netserv_shell::net::local_toward(toward).ok();
                let (path, _) = client::verified_path(resp.stack, &r.nonce, &self.trusted, now_ms() / 1000, first);
                Some(path)
            }
            Ok(client::Outcome::NoAppliance { .. }) => {
                tracing::info!(request = kind.as_str(), %toward, "no NetServ appliance on the path");
                None
            }
            Err(e) => {
                tracing::warn!(request = kind.as_str(), %toward, error = %e, "signaling failed");
                None
            }
        }
    }

    /// The nodes of a stack that run this tenant's module (PROBE), or that
    /// installed it (SETUP), placed by GeoIP.
    pub fn landed(&self, stack: &[NodeEntry], kind: RequestKind, geo: &GeoDb) -> Vec<Landed> {
        let ours = format!("{}/{}", self.tenant, self.module);
        stack
            .iter()
            .filter(|e| e.status == Status::Ok)
            .filter(|e| {
                kind != RequestKind::Probe || e.modules.iter().any(|m| m.split('@').next() == Some(ours.as_str()))
            })
            .filter_map(|e| {
                let address = client::server_address(&e.capabilities).or(e.address);
                address.map(|a| Landed { address: a, node_id: e.node_id.clone(), location: geo.locate(a) })
            })
            .collect()
    }
}

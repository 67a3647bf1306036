//! Authorization of an install: a tenant intercepts only traffic to its own
//! servers (configured prefixes and ports), within its limits.

use super::types::{ControlError, InstallRequest, Principal};
use crate::config::Tenant;
use crate::dataplane::Filter;
use crate::relay::shell::Listen;
use crate::store::ModuleSource;

pub fn check(principal: &Principal, tenant: &Tenant, req: &InstallRequest) -> Result<(), ControlError> {
    if let Principal::Tenant(who) = principal {
        if *who != req.tenant {
            return Err(ControlError::Forbidden(format!("tenant `{who}` cannot install for `{}`", req.tenant)));
        }
        if matches!(req.source, ModuleSource::Path(_)) {
            return Err(ControlError::Forbidden("only the node's admin may install from a local path".into()));
        }
    }
    if req.name.is_empty()
        || req.name.len() > 64
        || !req.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ControlError::Invalid("`name` must be 1-64 letters, digits, '-', '_' or '.'".into()));
    }
    if matches!(req.source, ModuleSource::Url(_)) && req.sha256.is_none() {
        return Err(ControlError::Invalid("`sha256` is required for modules fetched by URL".into()));
    }
    match (&req.filter, req.listen.is_empty()) {
        (Some(f), true) => check_filter(tenant, f)?,
        (None, false) => check_listen(tenant, &req.listen)?,
        (Some(_), false) => {
            return Err(ControlError::Invalid(
                "a module has `filter` (a packet module) or `listen` (a server module), not both".into(),
            ));
        }
        (None, true) => {
            return Err(ControlError::Invalid(
                "a module needs `filter` (a packet module) or `listen` (a server module)".into(),
            ));
        }
    }
    if let Some(ttl) = req.ttl_secs
        && (ttl == 0 || ttl > tenant.limits.max_ttl_secs)
    {
        return Err(ControlError::Limit(format!("ttl_secs must be 1..={}", tenant.limits.max_ttl_secs)));
    }
    for (k, v) in &req.properties {
        if k.len() > 128 || v.len() > 4096 {
            return Err(ControlError::Invalid(format!("property `{k}` is too long")));
        }
    }
    Ok(())
}

/// A server module listens only on ports its tenant is authorized for.
fn check_listen(tenant: &Tenant, listen: &[Listen]) -> Result<(), ControlError> {
    if listen.len() > 8 {
        return Err(ControlError::Invalid("`listen` holds at most 8 listeners".into()));
    }
    for (i, l) in listen.iter().enumerate() {
        if !tenant.listen_ports.contains(&l.port) {
            return Err(ControlError::Forbidden(format!(
                "`listen[{i}]`: port {} is not authorized for tenant `{}`",
                l.port, tenant.name
            )));
        }
        if listen.iter().take(i).any(|o| o == l) {
            return Err(ControlError::Invalid(format!("`listen[{i}]` is named twice")));
        }
    }
    Ok(())
}

/// A packet module intercepts only traffic to its tenant's own servers.
fn check_filter(tenant: &Tenant, f: &Filter) -> Result<(), ControlError> {
    if !tenant.filter_prefixes.iter().any(|p| p.contains(&f.destination)) {
        return Err(ControlError::Forbidden(format!(
            "filter destination {} is outside the prefixes of tenant `{}`",
            f.destination, tenant.name
        )));
    }
    if f.ports.is_empty() {
        return Err(ControlError::Invalid("`filter.ports` must name at least one port".into()));
    }
    if f.ports.len() > 15 {
        return Err(ControlError::Invalid("`filter.ports` holds at most 15 ports (iptables multiport)".into()));
    }
    if let Some(p) = f.ports.iter().find(|p| !tenant.listen_ports.contains(p)) {
        return Err(ControlError::Forbidden(format!("port {p} is not authorized for tenant `{}`", tenant.name)));
    }
    if f.source.is_some_and(|s| s.addr().is_ipv4() != f.destination.addr().is_ipv4()) {
        return Err(ControlError::Invalid("`filter.source` and `filter.destination` must be the same family".into()));
    }
    Ok(())
}

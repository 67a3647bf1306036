//! The admin / feedback HTTP API (axum). `app(state)` builds the router with no
//! sockets, so tests drive it with `oneshot`.
//!
//! Routes: `GET /healthz`, `GET /metrics` (OpenMetrics text), and under
//! `/api/v1` (bearer token: the admin token, or a tenant's token which sees
//! only that tenant's modules): `GET /modules`, `POST /modules`,
//! `GET|DELETE /modules/{tenant}/{name}`, `GET /tenants` (admin), `GET /usage`
//! (what each tenant's modules use and were refused: memory, logs, counter
//! names, state; a tenant sees its own), `GET /tenants/{t}/secrets` and
//! `PUT|DELETE /tenants/{t}/secrets/{name}` (a tenant's own secrets, which
//! its modules read; values are never returned), and
//! `POST /modules/{tenant}/{name}/feedback` (a load report for the module's
//! instances: `feedback.rs`), and `POST /modules/{tenant}/{name}/purge` (an
//! edge cache module's purge by key, prefix or tag: `purge.rs`).

#[cfg(test)]
mod cache_tests;
mod feedback;
mod metrics;
mod purge;
mod secrets;
#[cfg(test)]
mod tests;

use crate::controller::{ControlError, Controller, InstallRequest, Principal};
use crate::dataplane::QueueStats;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub controller: Arc<Controller>,
    pub queues: Arc<Vec<Arc<QueueStats>>>,
    pub signaling: Arc<crate::signaling::SignalingStats>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/modules", get(list).post(install))
        .route("/api/v1/modules/{tenant}/{name}", get(get_one).delete(remove))
        .route("/api/v1/modules/{tenant}/{name}/feedback", axum::routing::post(feedback::post))
        .route("/api/v1/modules/{tenant}/{name}/purge", axum::routing::post(purge::post))
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/tenants/{tenant}/secrets", get(secrets::list))
        .route("/api/v1/tenants/{tenant}/secrets/{name}", axum::routing::put(secrets::set).delete(secrets::remove))
        .route("/api/v1/usage", get(usage))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .with_state(state)
}

/// An API error as JSON: `{"error": "...", "kind": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.2, "kind": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, kind) = match &e {
            ControlError::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            ControlError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ControlError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ControlError::Limit(_) => (StatusCode::TOO_MANY_REQUESTS, "limit"),
            ControlError::Fetch(crate::store::FetchError::HashMismatch { .. }) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "sha256_mismatch")
            }
            ControlError::Fetch(_) => (StatusCode::BAD_GATEWAY, "fetch"),
            ControlError::Module(_) => (StatusCode::UNPROCESSABLE_ENTITY, "module"),
            ControlError::Dataplane(_) => (StatusCode::INTERNAL_SERVER_ERROR, "dataplane"),
            ControlError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ControlError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        };
        ApiError(status, kind, e.to_string())
    }
}

/// The authenticated caller.
pub struct Caller(Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized =
            || ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required".into());
        principal(&parts.headers, &state.controller).map(Caller).ok_or_else(unauthorized)
    }
}

/// Whom the request's bearer token names, if anyone.
fn principal(headers: &axum::http::HeaderMap, controller: &Controller) -> Option<Principal> {
    let token = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?;
    controller.authenticate(token.trim())
}

async fn healthz(State(s): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let cfg = s.controller.config();
    // A node that could not restore all its saved modules runs, but says so:
    // the counts to anyone, why and where the file went to the admin.
    let admin = principal(&headers, &s.controller) == Some(Principal::Admin);
    let full = s.controller.restore_report();
    let status = if full.is_clean() { "ok" } else { "degraded" };
    let restore = if admin { full } else { full.counts() };
    Json(serde_json::json!({ "status": status, "node_id": cfg.node_id, "restore": restore }))
}

async fn list(State(s): State<AppState>, Caller(p): Caller) -> impl IntoResponse {
    Json(s.controller.list(&p).await)
}

async fn install(State(s): State<AppState>, Caller(p): Caller, body: axum::body::Bytes) -> Result<Response, ApiError> {
    // Parse by hand so that a bad body names the field in a JSON error.
    let req: InstallRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid", format!("request body: {e}")))?;
    let c = s.controller.clone();
    let info = detached(async move { c.install(&p, req).await }).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// Runs a change of the controller's to its end even if the request is
/// dropped meanwhile (the client went away, the API's timeout fired): a
/// change holds the controller's lock across rule and state writes, and
/// stopping it half-way would leave a rule without its module, or a module
/// removed from the answer but not from the node.
async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ControlError>> + Send + 'static,
) -> Result<T, ControlError> {
    tokio::spawn(change).await.map_err(|e| ControlError::Internal(e.to_string()))?
}

async fn get_one(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(s.controller.get(&p, &tenant, &name).await?).into_response())
}

async fn remove(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = s.controller.clone();
    Ok(Json(detached(async move { c.remove(&p, &tenant, &name).await }).await?).into_response())
}

async fn usage(State(s): State<AppState>, Caller(p): Caller) -> impl IntoResponse {
    Json(s.controller.usage(&p).await)
}

async fn tenants(State(s): State<AppState>, Caller(p): Caller) -> Result<Response, ApiError> {
    if p != Principal::Admin {
        return Err(ApiError(StatusCode::FORBIDDEN, "forbidden", "only the admin lists tenants".into()));
    }
    let cfg = s.controller.config();
    let v: Vec<_> = cfg
        .tenants
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "filter_prefixes": t.filter_prefixes,
                "listen_ports": t.listen_ports,
                "relay_ports": t.relay_ports.as_ref().map(|r| format!("{}-{}", r.start(), r.end())),
                "peer_allow": t.peer_allow,
                "limits": {
                    "memory_bytes": t.limits.memory_bytes,
                    "cpu_deadline_ms": t.limits.cpu_deadline_ms,
                    "cpu_budget_percent": t.limits.cpu_budget_percent,
                    "reply_max_bytes": t.limits.reply_max_bytes,
                    "max_modules": t.limits.max_modules,
                    "max_ttl_secs": t.limits.max_ttl_secs,
                },
            })
        })
        .collect();
    Ok(Json(v).into_response())
}

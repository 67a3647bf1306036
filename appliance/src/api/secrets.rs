//! `/api/v1/tenants/{tenant}/secrets[/{name}]`: a tenant's secrets (its
//! TURN REST shared secret, its relay users' passwords). Only the tenant
//! itself sets and removes them; the admin may see their names. No call
//! ever returns a value: modules read them through the `secrets` import.

use super::{ApiError, AppState, Caller};
use crate::controller::Principal;
use crate::secrets::SecretError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSecret {
    value: String,
}

fn check(s: &AppState, p: &Principal, tenant: &str, write: bool) -> Result<(), ApiError> {
    let known = s.controller.config().tenant(tenant).is_some();
    let allowed = match p {
        Principal::Tenant(t) => t == tenant,
        Principal::Admin => !write,
    };
    if !known || !matches!(p, Principal::Admin) && !allowed {
        // A tenant learns nothing of another's existence.
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("tenant `{tenant}` is not configured on this node"),
        ));
    }
    if !allowed {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the tenant itself sets or removes its secrets".into(),
        ));
    }
    Ok(())
}

fn error(e: SecretError) -> ApiError {
    match e {
        SecretError::Io(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        _ => ApiError(StatusCode::BAD_REQUEST, "invalid", e.to_string()),
    }
}

pub async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    check(&s, &p, &tenant, false)?;
    Ok(Json(serde_json::json!({ "tenant": tenant, "names": s.controller.secrets().tenant(&tenant).names() }))
        .into_response())
}

pub async fn set(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check(&s, &p, &tenant, true)?;
    let v: SetSecret = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid", format!("request body: {e}")))?;
    s.controller.secrets().tenant(&tenant).set(&name, v.value.into_bytes()).map_err(error)?;
    tracing::info!(%tenant, secret = %name, "tenant secret set");
    Ok((StatusCode::NO_CONTENT, ()).into_response())
}

pub async fn remove(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check(&s, &p, &tenant, true)?;
    match s.controller.secrets().tenant(&tenant).remove(&name).map_err(error)? {
        true => Ok((StatusCode::NO_CONTENT, ()).into_response()),
        false => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("secret `{name}` is not set"))),
    }
}

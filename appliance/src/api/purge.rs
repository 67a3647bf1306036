//! `POST /api/v1/modules/{tenant}/{name}/purge`: a content provider purges
//! its edge cache. Body, JSON, exactly one of:
//!
//! ```json
//! {"key": "/news/today.html"}   {"prefix": "/img/"}   {"tag": "front-page"}
//! ```
//!
//! 200 `{"purged": n}` once the objects are gone (the next request for
//! them goes to the origin); 400 naming the field; 404 for a module the
//! caller does not own.

use super::{ApiError, AppState, Caller};
use crate::controller::Purge;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The longest key, prefix or tag a purge may name.
const MAX_LEN: usize = 2048;

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "invalid", format!("`{field}`: {why}"))
}

pub fn parse_purge(body: &[u8]) -> Result<Purge, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("body", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !["key", "prefix", "tag"].contains(&k.as_str())) {
        return Err(bad(k, "unknown field"));
    }
    let mut named = obj.iter();
    let (Some((field, value)), None) = (named.next(), named.next()) else {
        return Err(bad("body", "name exactly one of `key`, `prefix`, `tag`"));
    };
    let s = value.as_str().ok_or_else(|| bad(field, "must be a string"))?;
    if s.is_empty() || s.len() > MAX_LEN {
        return Err(bad(field, format!("must be 1..={MAX_LEN} bytes")));
    }
    Ok(match field.as_str() {
        "key" => Purge::Key(s.to_owned()),
        "prefix" => Purge::Prefix(s.to_owned()),
        _ => Purge::Tag(s.to_owned()),
    })
}

pub async fn post(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let what = parse_purge(&body)?;
    let n = s.controller.cache_purge(&p, &crate::controller::module_id(&tenant, &name), &what)?;
    Ok((StatusCode::OK, Json(serde_json::json!({ "purged": n }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_purge(body.as_bytes()) {
            Ok(_) => "ok".into(),
            Err(ApiError(_, _, msg)) => msg.split('`').nth(1).unwrap_or_default().to_owned(),
        }
    }

    #[test]
    fn one_of_key_prefix_tag() {
        assert_eq!(parse_purge(br#"{"key":"/a?b=1"}"#).ok(), Some(Purge::Key("/a?b=1".into())));
        assert_eq!(parse_purge(br#"{"prefix":"/img/"}"#).ok(), Some(Purge::Prefix("/img/".into())));
        assert_eq!(parse_purge(br#"{"tag":"news"}"#).ok(), Some(Purge::Tag("news".into())));
    }

    #[test]
    fn bad_purges_name_their_field() {
        assert_eq!(field_of("["), "body");
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of("{}"), "body");
        assert_eq!(field_of(r#"{"key":"/a","tag":"b"}"#), "body");
        assert_eq!(field_of(r#"{"url":"/a"}"#), "url");
        assert_eq!(field_of(r#"{"key":5}"#), "key");
        assert_eq!(field_of(r#"{"prefix":""}"#), "prefix");
    }
}

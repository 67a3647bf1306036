//! `POST /api/v1/modules/{tenant}/{name}/feedback`: a load report for a
//! tenant's packet module (its overload-control sending entity), from the
//! SIP server side. Body, JSON:
//!
//! ```json
//! {"server": "198.18.2.20:5060", "algorithm": "loss", "oc": 50,
//!  "validity_ms": 500, "seq": 1282321615.78}
//! ```
//!
//! RFC 7339's Via parameters as fields: `oc` a percentage (loss) or requests
//! a second (rate); `validity_ms` defaults to 500 and 0 ends control; `seq`
//! an integer or a decimal string with up to 5 fraction digits, as
//! `oc-seq` is. A bad report gets 400 naming the field; 202 once every
//! worker will see it before its next batch.

use super::{ApiError, AppState, Caller};
use crate::dataplane::pipeline::wit_addr;
use crate::runtime::{LoadReport, OverloadAlgorithm};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::net::SocketAddr;

/// `validity_ms` when the report has none (RFC 7339 §5.2's default).
pub const DEFAULT_VALIDITY_MS: u32 = 500;
/// The longest validity accepted: a day.
const MAX_VALIDITY_MS: u64 = 86_400_000;
/// The highest rate a report may name, requests a second.
const MAX_RATE: u64 = 10_000_000;

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "invalid", format!("`{field}`: {why}"))
}

/// `oc-seq` (`1*12DIGIT ["." 1*5DIGIT]`) in units of 10^-5.
pub fn parse_seq(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str, max: usize| !d.is_empty() && d.len() <= max && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int, 12) || s.contains('.') && !digits(frac, 5) {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let frac: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<5}").parse().ok()? };
    Some(int * 100_000 + frac)
}

/// The report in `body`, or a 400 naming the field at fault.
pub fn parse_report(body: &[u8]) -> Result<LoadReport, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("body", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !["server", "algorithm", "oc", "validity_ms", "seq"].contains(&k.as_str())) {
        return Err(bad(k, "unknown field"));
    }
    let server: SocketAddr = obj
        .get("server")
        .ok_or_else(|| bad("server", "missing"))?
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("server", "must be an address and port such as \"198.18.2.20:5060\""))?;
    let algorithm = match obj.get("algorithm").and_then(Value::as_str) {
        Some("loss") => OverloadAlgorithm::Loss,
        Some("rate") => OverloadAlgorithm::Rate,
        Some(other) => return Err(bad("algorithm", format!("`{other}` is neither \"loss\" nor \"rate\""))),
        None => return Err(bad("algorithm", "missing: \"loss\" or \"rate\"")),
    };
    let oc = obj
        .get("oc")
        .ok_or_else(|| bad("oc", "missing"))?
        .as_u64()
        .ok_or_else(|| bad("oc", "must be a whole number"))?;
    match algorithm {
        OverloadAlgorithm::Loss if oc > 100 => return Err(bad("oc", "a loss percentage is 0..=100")),
        OverloadAlgorithm::Rate if oc > MAX_RATE => {
            return Err(bad("oc", format!("a rate is 0..={MAX_RATE} a second")));
        }
        _ => {}
    }
    let validity_ms = match obj.get("validity_ms") {
        None => u64::from(DEFAULT_VALIDITY_MS),
        Some(v) => v
            .as_u64()
            .filter(|v| *v <= MAX_VALIDITY_MS)
            .ok_or_else(|| bad("validity_ms", format!("must be 0..={MAX_VALIDITY_MS} (0 ends control)")))?,
    };
    let seq = match obj.get("seq") {
        None => return Err(bad("seq", "missing")),
        Some(Value::Number(n)) => n.as_u64().filter(|n| *n < 1_000_000_000_000).map(|n| n * 100_000),
        Some(Value::String(s)) => parse_seq(s),
        Some(_) => None,
    }
    .ok_or_else(|| bad("seq", "must be a whole number below 10^12 or a decimal string like \"1282321615.781\""))?;
    Ok(LoadReport {
        server: wit_addr(server),
        algorithm,
        oc: u32::try_from(oc).unwrap_or(u32::MAX),
        validity_ms: u32::try_from(validity_ms).unwrap_or(u32::MAX),
        seq,
    })
}

pub async fn post(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((tenant, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let report = parse_report(&body)?;
    let workers = s.controller.post_feedback(&p, &tenant, &name, report).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "workers": workers }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_report(body.as_bytes()) {
            Ok(_) => "ok".into(),
            Err(ApiError(_, _, msg)) => msg.split('`').nth(1).unwrap_or_default().to_owned(),
        }
    }

    #[test]
    fn a_report_parses_with_its_defaults() {
        let r = parse_report(br#"{"server":"198.18.2.20:5060","algorithm":"loss","oc":50,"seq":7}"#).expect("valid");
        assert_eq!((r.oc, r.validity_ms, r.seq), (50, DEFAULT_VALIDITY_MS, 700_000));
        assert_eq!(r.server.port, 5060);
        let r = parse_report(
            br#"{"server":"[2001:db8::1]:5060","algorithm":"rate","oc":250,"validity_ms":0,"seq":"1282321615.781"}"#,
        )
        .expect("valid");
        assert_eq!((r.algorithm, r.validity_ms, r.seq), (OverloadAlgorithm::Rate, 0, 128_232_161_578_100));
    }

    #[test]
    fn bad_reports_name_their_field() {
        assert_eq!(field_of("[]"), "body");
        assert_eq!(field_of("{"), "body");
        assert_eq!(field_of(r#"{"algorithm":"loss","oc":1,"seq":1}"#), "server");
        assert_eq!(field_of(r#"{"server":"nowhere","algorithm":"loss","oc":1,"seq":1}"#), "server");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"fair","oc":1,"seq":1}"#), "algorithm");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":101,"seq":1}"#), "oc");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":-1,"seq":1}"#), "oc");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"rate","oc":1e9,"seq":1}"#), "oc");
        assert_eq!(
            field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":1,"seq":1,"validity_ms":"x"}"#),
            "validity_ms"
        );
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":1}"#), "seq");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":1,"seq":"1.123456"}"#), "seq");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":1,"seq":"-3"}"#), "seq");
        assert_eq!(field_of(r#"{"server":"1.2.3.4:5","algorithm":"loss","oc":1,"seq":1,"extra":1}"#), "extra");
    }

    #[test]
    fn oc_seq_keeps_five_fraction_digits() {
        assert_eq!(parse_seq("1"), Some(100_000));
        assert_eq!(parse_seq("1.5"), Some(150_000));
        assert_eq!(parse_seq("999999999999.99999"), Some(99_999_999_999_999_999));
        assert_eq!(parse_seq("1."), None);
        assert_eq!(parse_seq(".5"), None);
        assert_eq!(parse_seq("1234567890123"), None, "13 digits");
    }
}

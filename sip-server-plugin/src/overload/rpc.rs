//! Kamailio's JSON-RPC (the `jsonrpcs` module) for the load monitor: the
//! request for the server's processed-requests counter, and its answer.
//! Codec only; the datagram exchange is in `shell.rs`.

use serde_json::Value;

/// The statistic the monitor reads: requests the server's core took in.
const STAT: &str = "rcv_requests";

/// `stats.get_statistics rcv_requests` as a JSON-RPC 2.0 request.
pub fn request(id: u64) -> Vec<u8> {
    serde_json::json!({ "jsonrpc": "2.0", "method": "stats.get_statistics", "params": [STAT], "id": id })
        .to_string()
        .into_bytes()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    #[error("the answer is not JSON-RPC: {0}")]
    Malformed(String),
    #[error("Kamailio answered an error: {0}")]
    Remote(String),
    #[error("the answer has no `core:{STAT}` (is the statistics core loaded?)")]
    Missing,
    #[error("the answer is for request {got}, not {want}")]
    WrongId { got: String, want: u64 },
}

/// The counter in Kamailio's answer to [`request`] `id`
/// (`{"result": ["core:rcv_requests = 1234"], "id": …}`).
pub fn parse(answer: &[u8], id: u64) -> Result<u64, RpcError> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| RpcError::Malformed(e.to_string()))?;
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(RpcError::WrongId { got: v.get("id").map(Value::to_string).unwrap_or_default(), want: id });
    }
    if let Some(e) = v.get("error") {
        return Err(RpcError::Remote(e.get("message").and_then(Value::as_str).unwrap_or("?").to_owned()));
    }
    let wanted = format!("core:{STAT}");
    v.get("result")
        .and_then(Value::as_array)
        .ok_or_else(|| RpcError::Malformed("no `result` list".into()))?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == wanted).then(|| value.trim().parse().ok())?
        })
        .ok_or(RpcError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_the_counter() {
        let v: Value = serde_json::from_slice(&request(7)).expect("json");
        assert_eq!(v["method"], "stats.get_statistics");
        assert_eq!(v["params"][0], "rcv_requests");
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn kamailios_answer_gives_the_counter() {
        // As Kamailio 5.6 answers (pretty-printed with tabs).
        let a = b"{\n\t\"jsonrpc\":\t\"2.0\",\n\t\"result\":\t[\"core:rcv_requests = 1234\"],\n\t\"id\":\t7\n}";
        assert_eq!(parse(a, 7), Ok(1234));
    }

    #[test]
    fn bad_answers_say_what_is_wrong() {
        assert!(matches!(parse(b"nope", 1), Err(RpcError::Malformed(_))));
        assert!(matches!(parse(br#"{"jsonrpc":"2.0","result":[],"id":2}"#, 1), Err(RpcError::WrongId { .. })));
        assert_eq!(parse(br#"{"jsonrpc":"2.0","result":[],"id":1}"#, 1), Err(RpcError::Missing));
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method Not Found"},"id":1}"#, 1),
            Err(RpcError::Remote("Method Not Found".into()))
        );
        assert_eq!(parse(br#"{"jsonrpc":"2.0","result":["core:rcv_requests = x"],"id":1}"#, 1), Err(RpcError::Missing));
    }
}

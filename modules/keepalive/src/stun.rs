//! STUN Binding keep-alives on the SIP port (RFC 5626 §4.4.2, RFC 8489 §10).

use netserv_stun_wire::{Builder, Class, METHOD_BINDING, Message, attr};
use std::net::SocketAddr;

/// Attributes a plain keep-alive Binding request may carry and we still answer.
/// USERNAME / MESSAGE-INTEGRITY mean an authenticated check (ICE), which only
/// the server holding the credentials can answer: those pass.
fn answerable(kind: u16) -> bool {
    matches!(kind, attr::SOFTWARE | attr::FINGERPRINT) || !attr::comprehension_required(kind) && !is_auth(kind)
}

fn is_auth(kind: u16) -> bool {
    matches!(kind, attr::USERNAME | attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::USERHASH)
}

/// A Binding success response for a valid, unauthenticated Binding request.
pub(crate) fn answer_binding(source: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let req = Message::parse(payload).ok()?;
    if req.class() != Class::Request || req.method() != METHOD_BINDING {
        return None;
    }
    let mut fingerprint = false;
    for a in req.attributes() {
        let a = a.ok()?;
        if !answerable(a.kind) {
            return None;
        }
        fingerprint |= a.kind == attr::FINGERPRINT;
    }
    let b = Builder::new(Class::Success, METHOD_BINDING, req.transaction_id()).xor_mapped_address(source);
    // RFC 8489 §7.3.1.1... FINGERPRINT answered in kind: a client that uses it
    // to demultiplex expects it back.
    Some(if fingerprint { b.finish_with_fingerprint() } else { b.finish() })
}

//! Signed response entries: what lets a requester trust that an appliance,
//! and not the phone at the end of the path, answered.
//!
//! The eyeball ISP certifies each of its appliances' keys
//! ([`certify`]: its Ed25519 signature over the node id, the node's key and
//! an expiry); the ITSP configures the ISP's public key. An appliance signs
//! its entry with its key, over the request's nonce and every byte of the
//! entry before the signature (certificate included), so an entry cannot be
//! moved to another request or altered on the way back. A requester counts
//! an entry only when [`verify_entry`] accepts it; anything else is a hint.

use crate::wire::{EntrySignature, NodeCertificate, NodeEntry};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Separates entry signatures from anything else a node key might sign.
const CONTEXT: &[u8] = b"netserv-nslp node entry v1\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the entry is not signed")]
    Unsigned,
    #[error("the entry carries no certificate of its node's key")]
    NoCertificate,
    #[error("the node's certificate expired")]
    Expired,
    #[error("the node's certificate is not signed by a trusted ISP key (or names another node)")]
    UntrustedCertificate,
    #[error("the entry's signature does not verify with its certified key")]
    BadSignature,
}

/// The ISP's certificate for `node_id`'s key, valid until `not_after_unix`.
pub fn certify(isp: &SigningKey, node_id: &str, node_key: &VerifyingKey, not_after_unix: u64) -> NodeCertificate {
    let node_key = node_key.to_bytes();
    let m = NodeCertificate::message(node_id, &node_key, not_after_unix);
    NodeCertificate { node_key, not_after_unix, isp_signature: isp.sign(&m).to_bytes() }
}

fn message(request_nonce: &[u8; 16], signed: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 16 + signed.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(request_nonce);
    m.extend_from_slice(signed);
    m
}

/// Signs `entry` — the answer to the request with nonce `request_nonce` —
/// with the node's key, carrying its certificate. Set every field first.
pub fn sign_entry(entry: &mut NodeEntry, certificate: &NodeCertificate, key: &SigningKey, request_nonce: &[u8; 16]) {
    entry.signature = None;
    entry.certificate = Some(*certificate);
    let signed = entry.encode_unsigned();
    let signature = key.sign(&message(request_nonce, &signed)).to_bytes();
    entry.signature = Some(EntrySignature { signature, signed });
}

/// Whether `entry` answers the request with nonce `request_nonce`, signed
/// by a node key that one of `isps` certified for the entry's node id and
/// that has not expired at `now_unix` (seconds).
pub fn verify_entry(
    entry: &NodeEntry,
    request_nonce: &[u8; 16],
    isps: &[VerifyingKey],
    now_unix: u64,
) -> Result<(), EntryError> {
    let sig = entry.signature.as_ref().ok_or(EntryError::Unsigned)?;
    let cert = entry.certificate.as_ref().ok_or(EntryError::NoCertificate)?;
    let cert_message = NodeCertificate::message(&entry.node_id, &cert.node_key, cert.not_after_unix);
    let isp_signature = Signature::from_bytes(&cert.isp_signature);
    if !isps.iter().any(|isp| isp.verify_strict(&cert_message, &isp_signature).is_ok()) {
        return Err(EntryError::UntrustedCertificate);
    }
    if now_unix > cert.not_after_unix {
        return Err(EntryError::Expired);
    }
    let node_key = VerifyingKey::from_bytes(&cert.node_key).map_err(|_| EntryError::BadSignature)?;
    node_key
        .verify_strict(&message(request_nonce, &sig.signed), &Signature::from_bytes(&sig.signature))
        .map_err(|_| EntryError::BadSignature)
}

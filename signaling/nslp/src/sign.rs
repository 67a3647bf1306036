//! Ed25519 signatures over a request's canonical encoding and the flow its
//! signaling follows, and the proof of verification (STYLE.md §8): code that
//! acts on a request takes a [`Verified`], which only [`verify`] can make.
//!
//! The signature covers the GIST MRI (its addresses, prefixes, what else it
//! names and its direction; a TRIGGER's in either direction) though the MRI
//! is not in the request: a request captured on one path and sent towards another flow does
//! not verify there, so the replay window cannot be used to install a module
//! along a path its tenant never signed for.

use crate::wire::{self, DecodeError, Request, RequestKind};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use netserv_gist::wire::Mri;

/// Separates what NetServ signs from anything else signed with the same key.
const CONTEXT: &[u8] = b"netserv-nslp request v2\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed request: {0}")]
    Malformed(#[from] DecodeError),
    #[error("the request is not signed")]
    Unsigned,
    #[error("the request is not in canonical form")]
    NotCanonical,
    #[error("the signature does not verify with the tenant's key")]
    BadSignature,
    #[error("the flow the request travels on cannot be encoded")]
    BadFlow,
}

/// A request whose signature verified with the named tenant's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    inner: T,
}

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.inner
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// What the signature covers: a context string, the MRI's bytes (length
/// first), the request's canonical bytes. The MRI with its direction, but
/// for a TRIGGER, which travels the flow both ways ([`Mri::flow_bytes`]): a
/// SETUP or REMOVE captured on its way down does not verify sent upstream.
fn message(request: &[u8], kind: RequestKind, flow: &Mri) -> Option<Vec<u8>> {
    let flow = if kind == RequestKind::Trigger { flow.flow_bytes()? } else { flow.to_bytes()? };
    let mut m = Vec::with_capacity(CONTEXT.len() + 2 + flow.len() + request.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(&u16::try_from(flow.len()).ok()?.to_be_bytes());
    m.extend_from_slice(&flow);
    m.extend_from_slice(request);
    Some(m)
}

/// Signs `req` in place with the tenant's key, for the flow `flow` (the MRI
/// it will be sent with).
pub fn sign(req: &mut Request, flow: &Mri, key: &SigningKey) -> Result<(), VerifyError> {
    let m = message(&req.signed_bytes(), req.kind, flow).ok_or(VerifyError::BadFlow)?;
    req.signature = Some(key.sign(&m).to_bytes());
    Ok(())
}

/// Peeks at the tenant a request names, so the caller can look up its key.
pub fn user_of(bytes: &[u8]) -> Result<String, DecodeError> {
    wire::decode_signed(bytes).map(|d| d.request.user)
}

/// Checks a request as received on the flow `flow`: it decodes, it is in
/// canonical form, and its signature verifies (strictly: no malleable
/// signatures) with `key` over the bytes before it and the flow.
pub fn verify(bytes: &[u8], flow: &Mri, key: &VerifyingKey) -> Result<Verified<Request>, VerifyError> {
    let d = wire::decode_signed(bytes)?;
    let sig = d.request.signature.ok_or(VerifyError::Unsigned)?;
    let signed = bytes.get(..d.signed_len).ok_or(VerifyError::NotCanonical)?;
    // One encoding per request: what was signed must be what we re-encode.
    if signed != d.request.signed_bytes().as_slice() {
        return Err(VerifyError::NotCanonical);
    }
    let m = message(signed, d.request.kind, flow).ok_or(VerifyError::BadFlow)?;
    key.verify_strict(&m, &Signature::from_bytes(&sig)).map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified { inner: d.request })
}

//! Ed25519 signatures over a request's canonical encoding, and the proof of
//! verification (STYLE.md §8): code that acts on a request takes a
//! [`Verified`], which only [`verify`] can make.

use crate::wire::{self, DecodeError, Request};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

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

/// Signs `req` in place with the tenant's key.
pub fn sign(req: &mut Request, key: &SigningKey) {
    req.signature = Some(key.sign(&req.signed_bytes()).to_bytes());
}

/// Peeks at the tenant a request names, so the caller can look up its key.
pub fn user_of(bytes: &[u8]) -> Result<String, DecodeError> {
    wire::decode_signed(bytes).map(|d| d.request.user)
}

/// Checks a request as received: it decodes, it is in canonical form, and
/// its signature verifies (strictly: no malleable signatures) over the bytes
/// before it with `key`.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Verified<Request>, VerifyError> {
    let d = wire::decode_signed(bytes)?;
    let sig = d.request.signature.ok_or(VerifyError::Unsigned)?;
    let signed = bytes.get(..d.signed_len).ok_or(VerifyError::NotCanonical)?;
    // One encoding per request: what was signed must be what we re-encode.
    if signed != d.request.signed_bytes().as_slice() {
        return Err(VerifyError::NotCanonical);
    }
    key.verify_strict(signed, &Signature::from_bytes(&sig)).map_err(|_| VerifyError::BadSignature)?;
    Ok(Verified { inner: d.request })
}

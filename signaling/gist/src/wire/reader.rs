//! The one way peer bytes are read: a cursor whose every read is checked.

use super::DecodeError;

/// A bounded cursor over borrowed bytes (after rustls' `Reader`).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes, or `err` when fewer remain.
    pub(crate) fn take(&mut self, n: usize, err: DecodeError) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(err);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, err: DecodeError) -> Result<u8, DecodeError> {
        let b = self.take(1, err)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    pub(crate) fn u16(&mut self, err: DecodeError) -> Result<u16, DecodeError> {
        let b = self.take(2, err)?;
        Ok(u16::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    pub(crate) fn u32(&mut self, err: DecodeError) -> Result<u32, DecodeError> {
        let b = self.take(4, err)?;
        Ok(u32::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    pub(crate) fn array<const N: usize>(&mut self, err: DecodeError) -> Result<[u8; N], DecodeError> {
        let b = self.take(N, err)?;
        b.try_into().map_err(|_| err)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Bytes of padding that bring `len` to a whole number of 32-bit words.
pub(crate) const fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

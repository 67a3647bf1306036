//! The layout of a `multipart/byteranges` answer (RFC 9110 §14.6): the
//! header of each part, and the closing delimiter. The shell interleaves
//! them with the ranges' bytes, as they fill.

use crate::wire::range::{ByteRange, ContentRange};
use bytes::Bytes;

/// A multipart body's framing around `ranges`, for a representation of
/// `complete` bytes of `content_type`.
#[derive(Debug)]
pub struct Multipart {
    pub boundary: String,
    /// One header per range, in order: delimiter, part fields, blank line.
    pub part_heads: Vec<Bytes>,
    pub close: Bytes,
}

impl Multipart {
    pub fn new(boundary: String, ranges: &[ByteRange], complete: u64, content_type: Option<&str>) -> Self {
        let part_heads = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                // Every part but the first starts after the previous part's bytes: CRLF first.
                let lead = if i == 0 { "" } else { "\r\n" };
                let ct = content_type.map(|t| format!("Content-Type: {t}\r\n")).unwrap_or_default();
                let cr = ContentRange { range: *r, complete };
                Bytes::from(format!("{lead}--{boundary}\r\n{ct}Content-Range: {cr}\r\n\r\n"))
            })
            .collect();
        let close = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        Self { boundary, part_heads, close }
    }

    /// The body's length: the framing plus every range's bytes.
    pub fn content_length(&self, ranges: &[ByteRange]) -> u64 {
        let framing: usize = self.part_heads.iter().map(Bytes::len).sum::<usize>() + self.close.len();
        framing as u64 + ranges.iter().map(ByteRange::len).sum::<u64>()
    }

    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of RFC 9110 §14.6's example, rebuilt and measured.
    #[test]
    fn rfc9110_layout() {
        let ranges = [ByteRange { start: 500, end: 1000 }, ByteRange { start: 7000, end: 8000 }];
        let m = Multipart::new("THIS_STRING_SEPARATES".into(), &ranges, 8000, Some("application/pdf"));
        assert_eq!(
            m.part_heads[0],
            "--THIS_STRING_SEPARATES\r\nContent-Type: application/pdf\r\nContent-Range: bytes 500-999/8000\r\n\r\n"
        );
        assert!(m.part_heads[1].starts_with(b"\r\n--THIS_STRING_SEPARATES\r\n"));
        assert_eq!(m.close, "\r\n--THIS_STRING_SEPARATES--\r\n");
        let body_len = m.part_heads.iter().map(Bytes::len).sum::<usize>() + 500 + 1000 + m.close.len();
        assert_eq!(m.content_length(&ranges), body_len as u64);
        assert_eq!(m.content_type(), "multipart/byteranges; boundary=THIS_STRING_SEPARATES");
    }
}

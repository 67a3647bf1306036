//! TURN framing (RFC 8656 §12): telling STUN messages from ChannelData on a
//! relay's client socket, and cutting them out of a TCP byte stream. The
//! host's relay fast path runs this on every client packet, so it reads only
//! the four header bytes it needs and borrows the rest.
//!
//! ```text
//!  0                   1                   2                   3
//! |         Channel Number        |            Length             |
//! /                       Application Data                        /
//! ```
//!
//! The first two bits decide (RFC 7983 §7): `00` STUN, `01` ChannelData
//! (channel numbers 0x4000–0x7FFF, see [`CHANNEL_MAX`]), anything else is
//! not ours. Over UDP the datagram may carry padding after
//! the data; it must not be shorter than the Length says. Over TCP every
//! ChannelData message is padded to a multiple of four bytes, and frames
//! follow each other with nothing between.

use crate::HEADER_LEN;

/// Channel numbers a client may bind. RFC 8656 §12 narrowed them to
/// 0x4000–0x4FFF ([`CHANNEL_MAX_RFC8656`]); RFC 5766's 0x4000–0x7FFF is what
/// coturn accepts and its clients and libwebrtc pick from, so the framing
/// takes the whole range and the relay decides which it binds.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;
pub const CHANNEL_MAX_RFC8656: u16 = 0x4FFF;
pub const CHANNEL_HEADER_LEN: usize = 4;
/// The largest frame either kind can be: a 16-bit length plus its header.
pub const MAX_FRAME: usize = HEADER_LEN + 0xFFFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole STUN message (header included), for the STUN codec.
    Stun(&'a [u8]),
    /// Application data on a bound channel.
    ChannelData { channel: u16, data: &'a [u8] },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("shorter than the header or than the length it claims")]
    Truncated,
    #[error("channel number {0:#06x} is outside 0x4000-0x7fff")]
    ReservedChannel(u16),
    #[error("neither STUN nor ChannelData (first byte {0:#04x})")]
    NotTurn(u8),
    #[error("STUN message length {0} is not a multiple of 4")]
    UnalignedStun(u16),
    #[error("{0} bytes of data do not fit one ChannelData message")]
    TooLong(usize),
}

/// What one UDP datagram from a client is.
pub fn parse_datagram(b: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (frame, _) = parse_head(b, false)?;
    Ok(frame)
}

/// The next frame of a TCP stream, and how many bytes it took (with its
/// padding); `Ok(None)` while `buf` holds only part of it. An error means
/// the stream is out of step: the connection must be closed.
pub fn next_stream_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    match parse_head(buf, true) {
        Ok(f) => Ok(Some(f)),
        Err(FrameError::Truncated) => {
            // Say "need more" only for a header that could still complete.
            // (A reserved channel or an unaligned length is refused as soon
            // as its bytes are in: `parse_head` checks those first.)
            match buf.first() {
                Some(&b) if b >> 6 > 1 => Err(FrameError::NotTurn(b)),
                _ => Ok(None),
            }
        }
        Err(e) => Err(e),
    }
}

/// Parses the frame at the start of `b`; `stream`: TCP rules (padding to 4
/// is part of a ChannelData frame and must be there).
fn parse_head(b: &[u8], stream: bool) -> Result<(Frame<'_>, usize), FrameError> {
    let first = *b.first().ok_or(FrameError::Truncated)?;
    match first >> 6 {
        0 => {
            let len =
                u16::from_be_bytes([*b.get(2).ok_or(FrameError::Truncated)?, *b.get(3).ok_or(FrameError::Truncated)?]);
            if len % 4 != 0 {
                return Err(FrameError::UnalignedStun(len));
            }
            let total = HEADER_LEN + usize::from(len);
            let msg = b.get(..total).ok_or(FrameError::Truncated)?;
            Ok((Frame::Stun(msg), total))
        }
        1 => {
            let channel = u16::from_be_bytes([first, *b.get(1).ok_or(FrameError::Truncated)?]);
            if channel > CHANNEL_MAX {
                return Err(FrameError::ReservedChannel(channel));
            }
            let len = usize::from(u16::from_be_bytes([
                *b.get(2).ok_or(FrameError::Truncated)?,
                *b.get(3).ok_or(FrameError::Truncated)?,
            ]));
            let data = b.get(CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + len).ok_or(FrameError::Truncated)?;
            let taken = if stream { CHANNEL_HEADER_LEN + len.next_multiple_of(4) } else { b.len() };
            if stream && b.len() < taken {
                return Err(FrameError::Truncated);
            }
            Ok((Frame::ChannelData { channel, data }, taken))
        }
        _ => Err(FrameError::NotTurn(first)),
    }
}

/// Appends a ChannelData message to `out`; `pad`: to a multiple of four
/// bytes (required over TCP, optional over UDP).
pub fn write_channel_data(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) -> Result<(), FrameError> {
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
        return Err(FrameError::ReservedChannel(channel));
    }
    let len = u16::try_from(data.len()).map_err(|_| FrameError::TooLong(data.len()))?;
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.resize(out.len() + (data.len().next_multiple_of(4) - data.len()), 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5769 §2.1's Binding request (the first 8 bytes suffice to frame it).
    const RFC5769_REQUEST_HEAD: [u8; 4] = [0x00, 0x01, 0x00, 0x58];

    #[test]
    fn channel_data_over_udp_with_and_without_padding() {
        let mut b = Vec::new();
        write_channel_data(&mut b, 0x4000, b"hello", false).expect("encodes");
        assert_eq!(b, [0x40, 0x00, 0x00, 0x05, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(parse_datagram(&b), Ok(Frame::ChannelData { channel: 0x4000, data: b"hello" }));
        // Padding after the data (allowed over UDP) is not data.
        b.extend_from_slice(&[0, 0, 0]);
        assert_eq!(parse_datagram(&b), Ok(Frame::ChannelData { channel: 0x4000, data: b"hello" }));
        // Shorter than its Length: discarded (RFC 8656 §12.5).
        assert_eq!(parse_datagram(&b[..8]), Err(FrameError::Truncated));
        // Empty data is a valid message.
        assert_eq!(parse_datagram(&[0x4f, 0xff, 0, 0]), Ok(Frame::ChannelData { channel: 0x4fff, data: b"" }));
    }

    #[test]
    fn the_first_two_bits_decide() {
        let mut stun = RFC5769_REQUEST_HEAD.to_vec();
        stun.resize(HEADER_LEN + 0x58, 0);
        assert_eq!(parse_datagram(&stun), Ok(Frame::Stun(&stun)));
        // RFC 5766's upper range, which coturn's clients use.
        assert_eq!(parse_datagram(&[0x50, 0x00, 0, 0]), Ok(Frame::ChannelData { channel: 0x5000, data: b"" }));
        assert_eq!(parse_datagram(&[0x7f, 0xff, 0, 0]), Ok(Frame::ChannelData { channel: 0x7fff, data: b"" }));
        assert_eq!(parse_datagram(&[0x80, 0, 0, 0]), Err(FrameError::NotTurn(0x80)));
        assert_eq!(
            parse_datagram(&[0x16, 0x03, 0x01, 0x00]),
            Err(FrameError::Truncated),
            "TLS-looking: STUN bits, too short"
        );
        assert_eq!(parse_datagram(&[0x00, 0x01, 0x00, 0x05]), Err(FrameError::UnalignedStun(5)));
        assert_eq!(parse_datagram(&[]), Err(FrameError::Truncated));
        assert_eq!(parse_datagram(&[0x40]), Err(FrameError::Truncated));
    }

    #[test]
    fn a_tcp_stream_is_cut_into_frames_with_their_padding() {
        let mut s = Vec::new();
        write_channel_data(&mut s, 0x4001, b"abcde", true).expect("encodes");
        assert_eq!(s.len(), 12, "4 + 5 data + 3 padding");
        let mut stun = RFC5769_REQUEST_HEAD.to_vec();
        stun.resize(HEADER_LEN + 0x58, 7);
        s.extend_from_slice(&stun);
        write_channel_data(&mut s, 0x4fff, b"", true).expect("encodes");
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((f, n)) = next_stream_frame(&s[at..]).expect("in step") {
            seen.push(f);
            at += n;
        }
        assert_eq!(at, s.len());
        assert_eq!(
            seen,
            [
                Frame::ChannelData { channel: 0x4001, data: b"abcde" },
                Frame::Stun(&stun),
                Frame::ChannelData { channel: 0x4fff, data: b"" }
            ]
        );
        // Every proper prefix of the first frame asks for more.
        for cut in 0..12 {
            assert_eq!(next_stream_frame(&s[..cut]), Ok(None), "cut at {cut}");
        }
        // Out of step: the connection is closed, not waited on.
        assert_eq!(next_stream_frame(&[0xc0]), Err(FrameError::NotTurn(0xc0)));
        assert_eq!(next_stream_frame(&[0x50, 0x00]), Ok(None), "a header still arriving");
    }

    #[test]
    fn what_cannot_be_written_is_refused() {
        let mut out = Vec::new();
        assert_eq!(write_channel_data(&mut out, 0x3fff, b"x", false), Err(FrameError::ReservedChannel(0x3fff)));
        assert_eq!(write_channel_data(&mut out, 0x8000, b"x", false), Err(FrameError::ReservedChannel(0x8000)));
        let big = vec![0u8; 0x1_0000];
        assert_eq!(write_channel_data(&mut out, 0x4000, &big, false), Err(FrameError::TooLong(0x1_0000)));
        assert!(out.is_empty(), "nothing half-written");
    }

    proptest! {
        #[test]
        fn channel_data_round_trips(channel in CHANNEL_MIN..=CHANNEL_MAX, data in proptest::collection::vec(any::<u8>(), 0..600), pad in any::<bool>()) {
            let mut b = Vec::new();
            write_channel_data(&mut b, channel, &data, pad).expect("encodes");
            prop_assert_eq!(parse_datagram(&b), Ok(Frame::ChannelData { channel, data: &data }));
            if pad {
                prop_assert_eq!(next_stream_frame(&b), Ok(Some((Frame::ChannelData { channel, data: &data }, b.len()))));
            }
        }

        #[test]
        fn any_bytes_frame_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_datagram(&b);
            if let Ok(Some((_, n))) = next_stream_frame(&b) {
                prop_assert!(n > 0 && n <= b.len());
            }
        }
    }
}

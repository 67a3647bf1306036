//! What a TURN client may send a relay: each datagram is STUN, ChannelData or
//! refused, never a panic; a TCP stream is cut into frames that never
//! overrun it; whatever ChannelData parses re-encodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_stun_wire::framing::{Frame, next_stream_frame, parse_datagram, write_channel_data};

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::ChannelData { channel, data: payload }) = parse_datagram(data) {
        let mut again = Vec::new();
        write_channel_data(&mut again, channel, payload, false).expect("a parsed channel re-encodes");
        assert_eq!(parse_datagram(&again), Ok(Frame::ChannelData { channel, data: payload }));
    }
    let mut at = 0;
    while let Ok(Some((_, n))) = next_stream_frame(data.get(at..).unwrap_or_default()) {
        assert!(n > 0 && at + n <= data.len(), "a frame stays inside the stream");
        at += n;
    }
});

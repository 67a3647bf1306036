//! TURN over TCP (RFC 8656 §12.5): a client's connection to a listener
//! carries STUN messages and ChannelData frames back to back; this cuts
//! them out (`stun-wire`'s framing) and buffers what the socket cannot take
//! yet. Both buffers are bounded: a client that sends faster than frames
//! can be cut, or reads slower than its relay delivers, loses what does not
//! fit (as a UDP client would) instead of holding memory.

use netserv_stun_wire::framing::{self, FrameError};
use std::io::{self, Read as _};
use std::net::SocketAddr;

/// Bytes buffered per direction per connection.
pub const MAX_BUFFER: usize = 256 * 1024;
/// Connections a server module holds at once, and from one address.
pub const MAX_STREAMS: usize = 16_384;
pub const MAX_STREAMS_PER_IP: u32 = 64;
/// A connection that holds no allocation is closed after this long idle.
pub const IDLE_WITHOUT_ALLOCATION_MS: u64 = 30_000;

pub struct Stream {
    pub socket: mio::net::TcpStream,
    pub peer: SocketAddr,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Outbound bytes dropped because the client did not read.
    pub dropped: u64,
    /// When it last sent a frame (the shell's ms).
    pub last_active_ms: u64,
    /// An RFC 6062 data connection: joined to this peer connection, its
    /// bytes are raw, not TURN framing.
    pub bound: Option<u32>,
}

/// After a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Frames cut so far (whole STUN messages or ChannelData frames).
    Frames(Vec<Vec<u8>>),
    /// The client closed, or sent what is not TURN framing: close it.
    Closed,
}

impl Stream {
    pub fn new(socket: mio::net::TcpStream, peer: SocketAddr, now_ms: u64) -> Self {
        Self { socket, peer, inbuf: Vec::new(), outbuf: Vec::new(), dropped: 0, last_active_ms: now_ms, bound: None }
    }

    /// Reads what the socket has and cuts every whole frame (after each
    /// chunk, so what waits is at most one partial frame).
    pub fn read(&mut self, now_ms: u64) -> Read {
        let mut chunk = [0u8; 16 * 1024];
        let mut frames = Vec::new();
        loop {
            match self.socket.read(&mut chunk) {
                Ok(0) => return Read::Closed,
                Ok(n) => {
                    self.inbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    match cut(&mut self.inbuf) {
                        Ok(mut f) => frames.append(&mut f),
                        Err(_) => return Read::Closed,
                    }
                    if self.inbuf.len() > framing::MAX_FRAME || frames.len() > 4096 {
                        return Read::Closed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Read::Closed,
            }
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > 64 * 1024 {
            self.inbuf = Vec::new();
        }
        if !frames.is_empty() {
            self.last_active_ms = now_ms;
        }
        Read::Frames(frames)
    }

    /// Sends `bytes` (one whole message), buffering what the socket does not take now.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.outbuf.len() + bytes.len() > MAX_BUFFER {
            self.dropped += 1;
            return;
        }
        self.outbuf.extend_from_slice(bytes);
        self.flush();
    }

    /// Bytes waiting to go out.
    pub fn pending_out(&self) -> usize {
        self.outbuf.len()
    }

    /// Queues raw bytes of a data connection (the caller keeps within
    /// `MAX_BUFFER` through `pending_out`: nothing is dropped here).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.outbuf.extend_from_slice(bytes);
    }

    /// What was read but not cut into frames (a data connection's first bytes).
    pub fn take_unframed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Writes out what is buffered, as far as the socket takes it (a failed
    /// socket shows as closed on its next read).
    pub fn flush(&mut self) {
        let _ = write_out(&mut self.socket, &mut self.outbuf);
    }
}

/// Writes `buf` to `socket` as far as it takes it, and gives back a large
/// buffer once it is empty; Err when the socket failed.
pub fn write_out(socket: &mut impl io::Write, buf: &mut Vec<u8>) -> io::Result<()> {
    while !buf.is_empty() {
        match socket.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.drain(..n.min(buf.len()));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if buf.capacity() > 64 * 1024 {
        *buf = Vec::new();
    }
    Ok(())
}

/// Takes every whole frame off the front of `buf`.
pub fn cut(buf: &mut Vec<u8>) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((_, taken)) = framing::next_stream_frame(buf.get(at..).unwrap_or_default())? {
        frames.push(buf.get(at..at + taken).unwrap_or_default().to_vec());
        at += taken;
    }
    buf.drain(..at);
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_across_reads() {
        let stun = netserv_stun_wire::Builder::new(netserv_stun_wire::Class::Request, 1, &[1; 12]).finish();
        let mut chan = Vec::new();
        framing::write_channel_data(&mut chan, 0x4001, b"abcde", true).expect("frame");
        let mut wire: Vec<u8> = [stun.clone(), chan.clone(), stun.clone()].concat();
        let tail = wire.split_off(wire.len() - 7);
        let mut buf = wire;
        assert_eq!(cut(&mut buf), Ok(vec![stun.clone(), chan]));
        buf.extend_from_slice(&tail);
        assert_eq!(cut(&mut buf), Ok(vec![stun]));
        assert!(buf.is_empty());
        let mut junk = vec![0xff, 1, 2, 3];
        assert!(cut(&mut junk).is_err(), "not TURN framing: the connection is out of step");
    }
}

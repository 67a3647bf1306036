//! TCP relaying (RFC 6062): a TCP allocation's relayed address is a TCP
//! listener; each connection between it and a peer — one the client asked
//! for with Connect, or one a permitted peer opened — is joined to a data
//! connection the client opens with ConnectionBind, and from then on the
//! bytes flow natively both ways, never through wasm.
//!
//! Flow control instead of loss: each direction holds at most `BUFFER`
//! bytes; a side whose buffer is full is not read until the other side has
//! taken some, so a slow reader slows the writer down as TCP would.

use super::streams::{Stream, write_out};
use crate::relay::engine::RelayId;
use std::io::{self, Read as _};
use std::net::SocketAddr;

/// A Connect the peer has not answered by then fails (447).
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// A connection no data connection has bound by then is closed (RFC 6062 §5.2, §5.3).
pub const BIND_TIMEOUT_MS: u64 = 30_000;
/// Connections per allocation, and per module.
pub const MAX_PER_RELAY: usize = 64;
pub const MAX_CONNECTIONS: usize = 16_384;
/// Bytes held per direction.
pub const BUFFER: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Our connect to the peer is in progress.
    Connecting,
    /// Connected; waiting for the client's ConnectionBind.
    Unbound,
    /// Joined to this data connection (a stream id).
    Bound(u32),
}

pub struct PeerConn {
    pub relay: RelayId,
    pub peer: SocketAddr,
    pub socket: mio::net::TcpStream,
    pub state: State,
    /// When Connecting or Unbound ends by itself (the shell's ms).
    pub deadline_ms: u64,
    /// Bytes from the client the peer has not taken yet.
    to_peer: Vec<u8>,
}

/// What a pump moved: (reads, bytes) each way, and whether a side closed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    pub to_peer: (u64, u64),
    pub to_client: (u64, u64),
    pub closed: bool,
}

impl PeerConn {
    pub fn new(relay: RelayId, peer: SocketAddr, socket: mio::net::TcpStream, state: State, deadline_ms: u64) -> Self {
        Self { relay, peer, socket, state, deadline_ms, to_peer: Vec::new() }
    }

    /// Whether a connect in progress has finished: Some(true) connected,
    /// Some(false) failed, None still going.
    pub fn connect_outcome(&self) -> Option<bool> {
        match self.socket.take_error() {
            Ok(Some(_)) | Err(_) => return Some(false),
            Ok(None) => {}
        }
        match self.socket.peer_addr() {
            Ok(_) => Some(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
            Err(_) => Some(false),
        }
    }

    /// Bytes the client sent before its data connection was bound.
    pub fn queue_to_peer(&mut self, bytes: &[u8]) {
        let room = BUFFER.saturating_sub(self.to_peer.len());
        self.to_peer.extend_from_slice(bytes.get(..bytes.len().min(room)).unwrap_or_default());
    }

    /// Moves what both sides have until neither can take or give more.
    pub fn pump(&mut self, client: &mut Stream) -> Pumped {
        let mut p = Pumped::default();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            // Client -> peer.
            p.closed |= write_out(&mut self.socket, &mut self.to_peer).is_err();
            let up = read_while_room(&mut client.socket, &mut chunk, &mut self.to_peer);
            p.closed |= write_out(&mut self.socket, &mut self.to_peer).is_err();
            // Peer -> client.
            client.flush();
            let down = read_while_room(&mut self.socket, &mut chunk, client);
            client.flush();
            for (total, got) in [(&mut p.to_peer, &up), (&mut p.to_client, &down)] {
                total.0 += got.reads;
                total.1 += got.bytes;
            }
            p.closed |= up.closed || down.closed;
            if p.closed || up.reads + down.reads == 0 {
                return p;
            }
        }
    }
}

/// What one direction's reads moved.
struct Read {
    reads: u64,
    bytes: u64,
    closed: bool,
}

/// Where one direction's bytes wait to be written.
trait Sink {
    fn held(&self) -> usize;
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn held(&self) -> usize {
        self.len()
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Stream {
    fn held(&self) -> usize {
        self.pending_out()
    }
    fn put(&mut self, bytes: &[u8]) {
        self.write_raw(bytes);
    }
}

/// Reads `from` into `sink` while it holds less than `BUFFER`, until the
/// socket has nothing more.
fn read_while_room(from: &mut mio::net::TcpStream, chunk: &mut [u8], sink: &mut impl Sink) -> Read {
    let mut r = Read { reads: 0, bytes: 0, closed: false };
    while sink.held() < BUFFER {
        let room = (BUFFER - sink.held()).min(chunk.len());
        match from.read(chunk.get_mut(..room).unwrap_or_default()) {
            Ok(0) => {
                r.closed = true;
                return r;
            }
            Ok(n) => {
                sink.put(chunk.get(..n).unwrap_or_default());
                r.reads += 1;
                r.bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                r.closed = true;
                return r;
            }
        }
    }
    r
}

/// A TCP socket on the relayed address, shared (SO_REUSEPORT) by the
/// allocation's listener and its outgoing connections: RFC 6062 has the
/// server reach peers *from* the relayed transport address.
pub fn relay_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// The allocation's listener.
pub fn listen(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let s = relay_socket(addr)?;
    s.listen(128)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Starts a connection from the relayed address `from` to `peer`.
pub fn connect(from: SocketAddr, peer: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let s = relay_socket(from)?;
    let _ = s.set_tcp_nodelay(true);
    match s.connect(&peer.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(s.into()))
}

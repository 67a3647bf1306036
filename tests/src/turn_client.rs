//! A minimal blocking TURN client (RFC 8656 over UDP) for the relay
//! benchmark: Allocate with TURN REST credentials, ChannelBind, Refresh,
//! ChannelData. Built on the project's own STUN codec; what it checks of
//! the server's answers is what a load generator needs (codes, relayed
//! address), not a full client's state machine.

use anyhow::{Context as _, bail};
use netserv_media_relay::credentials::rest_password;
use netserv_stun_wire::integrity::long_term_key_md5;
use netserv_stun_wire::turn::{attr as tattr, method};
use netserv_stun_wire::{Builder, Class, Message, attr};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// One allocation held by one socket.
pub struct TurnClient {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub relayed: SocketAddr,
    username: String,
    realm: String,
    nonce: Vec<u8>,
    key: [u8; 16],
    tx: u64,
}

fn tx_id(n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    for (i, b) in n.to_be_bytes().iter().enumerate() {
        if let Some(x) = t.get_mut(4 + i) {
            *x = *b;
        }
    }
    t
}

/// Sends `req` and waits for the answer with its transaction id (retrying a few times).
fn exchange(socket: &UdpSocket, server: SocketAddr, req: &[u8], tx: &[u8; 12]) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    for _ in 0..5 {
        socket.send_to(req, server)?;
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let got = buf.get(..n).unwrap_or_default();
                    if let Ok(m) = Message::parse(got)
                        && m.transaction_id() == tx
                    {
                        return Ok(got.to_vec());
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!("no answer from {server}")
}

/// A 437 answer to a bare Allocate, with the socket it came to.
struct Mismatch(UdpSocket);

fn code(raw: &[u8]) -> Option<u16> {
    Message::parse(raw).ok()?.error_code()?.ok().map(|(c, _)| c)
}

impl TurnClient {
    /// Allocates on `server` from a fresh socket on `local_ip`, as REST user
    /// `user` under `secret`, for `lifetime_s`.
    ///
    /// A fresh socket may get a port whose earlier allocation the server
    /// still holds (its delete was lost under load): that 5-tuple's Allocate
    /// is answered 437 Allocation Mismatch, without REALM. Another socket is
    /// then tried, up to three in all.
    pub fn allocate(
        local_ip: &str,
        server: SocketAddr,
        secret: &[u8],
        user: &str,
        lifetime_s: u32,
    ) -> anyhow::Result<Self> {
        let mut held = Vec::new();
        loop {
            match Self::allocate_once(local_ip, server, secret, user, lifetime_s) {
                Err(Mismatch(socket)) if held.len() < 2 => held.push(socket),
                Err(Mismatch(_)) => bail!("Allocate refused 437 Allocation Mismatch from three sockets"),
                Ok(result) => return result,
            }
        }
    }

    /// `Err` with the socket when the server already holds its 5-tuple
    /// (kept bound by the caller so the next try gets another port).
    fn allocate_once(
        local_ip: &str,
        server: SocketAddr,
        secret: &[u8],
        user: &str,
        lifetime_s: u32,
    ) -> Result<anyhow::Result<Self>, Mismatch> {
        let socket = match UdpSocket::bind((local_ip, 0)).context("binding the client socket") {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(200))) {
            return Ok(Err(e.into()));
        }
        let t0 = tx_id(u64::from(socket.local_addr().map_or(0, |a| a.port())) << 32);
        let bare = Builder::new(Class::Request, method::ALLOCATE, &t0).requested_transport(17).finish();
        let challenge = match exchange(&socket, server, &bare, &t0) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if code(&challenge) == Some(437) {
            return Err(Mismatch(socket));
        }
        Ok(Self::authenticate(socket, server, secret, user, lifetime_s, &challenge))
    }

    fn authenticate(
        socket: UdpSocket,
        server: SocketAddr,
        secret: &[u8],
        user: &str,
        lifetime_s: u32,
        challenge: &[u8],
    ) -> anyhow::Result<Self> {
        let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
        let username = format!("{expiry}:{user}");
        let password = rest_password(secret, &username);
        let seed = u64::from(socket.local_addr()?.port()) << 32;
        let m = Message::parse(challenge).context("challenge")?;
        let realm = m
            .attribute(attr::REALM)
            .map(|a| String::from_utf8_lossy(a.value).into_owned())
            .with_context(|| format!("no REALM in the answer (error code {:?})", code(challenge)))?;
        let nonce = m.attribute(attr::NONCE).map(|a| a.value.to_vec()).context("no NONCE")?;
        let key = long_term_key_md5(&username, &realm, &password);
        let mut c = Self { socket, server, relayed: server, username, realm, nonce, key, tx: seed + 1 };
        let raw = c.signed(method::ALLOCATE, |b| b.requested_transport(17).lifetime(lifetime_s))?;
        let m = Message::parse(&raw).context("allocate answer")?;
        if m.class() != Class::Success {
            bail!("Allocate refused: {:?}", code(&raw));
        }
        c.relayed = m.xor_address(tattr::XOR_RELAYED_ADDRESS).context("no XOR-RELAYED-ADDRESS")?.context("relayed")?;
        Ok(c)
    }

    /// A signed request of `method` with the attributes `f` adds; the answer.
    fn signed(&mut self, method: u16, f: impl FnOnce(Builder) -> Builder) -> anyhow::Result<Vec<u8>> {
        self.tx += 1;
        let tx = tx_id(self.tx);
        let b = f(Builder::new(Class::Request, method, &tx))
            .attribute(attr::USERNAME, self.username.as_bytes())
            .attribute(attr::REALM, self.realm.as_bytes())
            .attribute(attr::NONCE, &self.nonce)
            .message_integrity(&self.key)
            .finish_with_fingerprint();
        exchange(&self.socket, self.server, &b, &tx)
    }

    pub fn bind_channel(&mut self, channel: u16, peer: SocketAddr) -> anyhow::Result<()> {
        let raw = self
            .signed(method::CHANNEL_BIND, |b| b.channel_number(channel).xor_address(tattr::XOR_PEER_ADDRESS, peer))?;
        match Message::parse(&raw).map(|m| m.class()) {
            Ok(Class::Success) => Ok(()),
            _ => bail!("ChannelBind refused: {:?}", code(&raw)),
        }
    }

    /// Refresh with `lifetime_s` (0 frees the allocation).
    pub fn refresh(&mut self, lifetime_s: u32) -> anyhow::Result<()> {
        let raw = self.signed(method::REFRESH, |b| b.lifetime(lifetime_s))?;
        match Message::parse(&raw).map(|m| m.class()) {
            Ok(Class::Success) => Ok(()),
            _ => bail!("Refresh refused: {:?}", code(&raw)),
        }
    }
}

//! `netserv-turn-peers connect|send SERVER SECRET USER PEER...`: names each
//! PEER to the TURN server at SERVER on a path coturn's own client cannot
//! drive for a refused peer, with TURN REST credentials:
//!
//! - `connect`: a TCP allocation (RFC 6062) over a TCP control connection,
//!   then a Connect per peer; prints `PEER CODE` (200 on success, else the
//!   error code). `turnutils_uclient -T` connects its two clients to each
//!   other and cannot name a peer.
//! - `send`: a UDP allocation, then a Send indication per peer (no
//!   CreatePermission first); prints `PEER sent`. An indication gets no
//!   answer (RFC 8656 §11.2); the server's counters tell what it did.
//!   `turnutils_uclient -s` stops at the CreatePermission a forbidden peer
//!   is refused.

use anyhow::{Context as _, bail};
use netserv_media_relay::credentials::rest_password;
use netserv_stun_wire::integrity::long_term_key_md5;
use netserv_stun_wire::turn::{TRANSPORT_TCP, TRANSPORT_UDP, attr as tattr, method};
use netserv_stun_wire::{Builder, Class, Message, attr};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// The control connection: TCP (STUN messages back to back) or UDP.
enum Control {
    Tcp(TcpStream),
    Udp(UdpSocket, SocketAddr),
}

impl Control {
    fn send(&mut self, msg: &[u8]) -> anyhow::Result<()> {
        match self {
            Control::Tcp(s) => s.write_all(msg)?,
            Control::Udp(s, to) => {
                s.send_to(msg, *to)?;
            }
        }
        Ok(())
    }

    /// The answer to `req` (by transaction id; indications are skipped).
    fn exchange(&mut self, req: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.send(req)?;
        loop {
            let msg = match self {
                Control::Tcp(s) => {
                    let mut head = [0u8; 20];
                    s.read_exact(&mut head).context("reading an answer")?;
                    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
                    let mut msg = head.to_vec();
                    msg.resize(20 + len, 0);
                    s.read_exact(msg.get_mut(20..).unwrap_or_default())?;
                    msg
                }
                Control::Udp(s, _) => {
                    let mut buf = vec![0u8; 2048];
                    let (n, _) = s.recv_from(&mut buf).context("no answer")?;
                    buf.truncate(n);
                    buf
                }
            };
            if msg.get(8..20) == req.get(8..20) {
                return Ok(msg);
            }
        }
    }
}

fn code(raw: &[u8]) -> u16 {
    match Message::parse(raw) {
        Ok(m) if m.class() == Class::Success => 200,
        Ok(m) => m.error_code().and_then(Result::ok).map_or(0, |(c, _)| c),
        Err(_) => 0,
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, server, secret, user, peers @ ..] = &args[..] else {
        bail!("usage: netserv-turn-peers connect|send SERVER SECRET USER PEER...");
    };
    let server: SocketAddr = server.parse().context("SERVER: ip:port")?;
    let timeout = Some(Duration::from_secs(10));
    let (mut c, transport) = match mode.as_str() {
        "connect" => {
            let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
            s.set_read_timeout(timeout)?;
            (Control::Tcp(s), TRANSPORT_TCP)
        }
        "send" => {
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            s.set_read_timeout(timeout)?;
            (Control::Udp(s, server), TRANSPORT_UDP)
        }
        other => bail!("mode {other:?}: connect or send"),
    };
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
    let username = format!("{expiry}:{user}");
    let password = rest_password(secret.as_bytes(), &username);

    // The challenge: realm and nonce; then the signed Allocate.
    let tx = |n: u8| [n; 12];
    let bare = Builder::new(Class::Request, method::ALLOCATE, &tx(1)).requested_transport(transport).finish();
    let raw = c.exchange(&bare)?;
    let m = Message::parse(&raw).context("the challenge")?;
    let realm = m.attribute(attr::REALM).map(|a| a.value.to_vec()).context("no REALM")?;
    let nonce = m.attribute(attr::NONCE).map(|a| a.value.to_vec()).context("no NONCE")?;
    let key = long_term_key_md5(&username, std::str::from_utf8(&realm)?, &password);
    let signed = |b: Builder| {
        b.attribute(attr::USERNAME, username.as_bytes())
            .attribute(attr::REALM, &realm)
            .attribute(attr::NONCE, &nonce)
            .message_integrity(&key)
            .finish_with_fingerprint()
    };
    let alloc = signed(Builder::new(Class::Request, method::ALLOCATE, &tx(2)).requested_transport(transport));
    let raw = c.exchange(&alloc)?;
    if code(&raw) != 200 {
        bail!("the Allocate was refused with {}", code(&raw));
    }
    for (i, p) in peers.iter().enumerate() {
        let peer: SocketAddr = p.parse().with_context(|| format!("PEER {p}: ip:port"))?;
        let n = u8::try_from(i % 200).unwrap_or(0) + 3;
        if transport == TRANSPORT_TCP {
            let req = Builder::new(Class::Request, method::CONNECT, &tx(n)).xor_address(tattr::XOR_PEER_ADDRESS, peer);
            println!("{p} {}", code(&c.exchange(&signed(req))?));
        } else {
            let ind = Builder::new(Class::Indication, method::SEND, &tx(n))
                .xor_address(tattr::XOR_PEER_ADDRESS, peer)
                .attribute(tattr::DATA, b"netserv peer-policy probe")
                .finish();
            c.send(&ind)?;
            println!("{p} sent");
        }
    }
    Ok(())
}

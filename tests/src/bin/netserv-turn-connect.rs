//! `netserv-turn-connect SERVER SECRET USER PEER...`: makes a TCP allocation
//! (RFC 6062) on the TURN server at SERVER over a TCP control connection,
//! with TURN REST credentials, then sends a Connect for each PEER and prints
//! `PEER CODE` (200 on success, else the error code). coturn's client cannot
//! name the peer of a Connect (its `-T` mode connects its two clients to
//! each other), so the peer-policy test drives the Connect path with this.

use anyhow::{Context as _, bail};
use netserv_media_relay::credentials::rest_password;
use netserv_stun_wire::integrity::long_term_key_md5;
use netserv_stun_wire::turn::{TRANSPORT_TCP, attr as tattr, method};
use netserv_stun_wire::{Builder, Class, Message, attr};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn exchange(s: &mut TcpStream, req: &[u8]) -> anyhow::Result<Vec<u8>> {
    s.write_all(req)?;
    loop {
        let mut head = [0u8; 20];
        s.read_exact(&mut head).context("reading an answer")?;
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let mut msg = head.to_vec();
        msg.resize(20 + len, 0);
        s.read_exact(msg.get_mut(20..).unwrap_or_default())?;
        // Skip indications (a ConnectionAttempt); answer the request's.
        if msg.get(8..20) == req.get(8..20) {
            return Ok(msg);
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
    let [_, server, secret, user, peers @ ..] = &args[..] else {
        bail!("usage: netserv-turn-connect SERVER SECRET USER PEER...");
    };
    let server: SocketAddr = server.parse().context("SERVER: ip:port")?;
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
    let username = format!("{expiry}:{user}");
    let password = rest_password(secret.as_bytes(), &username);

    // The challenge: realm and nonce.
    let tx = |n: u8| [n; 12];
    let bare = Builder::new(Class::Request, method::ALLOCATE, &tx(1)).requested_transport(TRANSPORT_TCP).finish();
    let raw = exchange(&mut s, &bare)?;
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
    let alloc = signed(Builder::new(Class::Request, method::ALLOCATE, &tx(2)).requested_transport(TRANSPORT_TCP));
    let raw = exchange(&mut s, &alloc)?;
    if code(&raw) != 200 {
        bail!("the TCP Allocate was refused with {}", code(&raw));
    }
    for (i, p) in peers.iter().enumerate() {
        let peer: SocketAddr = p.parse().with_context(|| format!("PEER {p}: ip:port"))?;
        let n = u8::try_from(i % 200).unwrap_or(0) + 3;
        let req =
            signed(Builder::new(Class::Request, method::CONNECT, &tx(n)).xor_address(tattr::XOR_PEER_ADDRESS, peer));
        println!("{p} {}", code(&exchange(&mut s, &req)?));
    }
    Ok(())
}

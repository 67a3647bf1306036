//! The TURN control logic (media-relay's `Server`) on what a client
//! controls: any datagram as it arrives, and any attributes inside a
//! request that is correctly signed (so the fuzzer reaches Allocate,
//! Refresh, CreatePermission and ChannelBind past authentication, and over
//! a TCP control connection RFC 6062's Connect and ConnectionBind with the
//! host's later reports). Nothing may panic; every answer must parse as STUN.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netserv_media_relay::config::Config;
use netserv_media_relay::credentials::rest_password;
use netserv_media_relay::relay::{Client, Grant, PeerRefused, Relay, RelayError, RelayRequest};
use netserv_media_relay::server::{Now, Server};
use netserv_stun_wire::integrity::long_term_key_md5;
use netserv_stun_wire::turn::method;
use netserv_stun_wire::{Builder, Class, METHOD_BINDING, Message, attr};
use std::net::{IpAddr, SocketAddr};

const SECRET: &[u8] = b"fuzz-secret";
const NOW: Now = Now { unix_s: 1_800_000_000 };

#[derive(Default)]
struct Model {
    next: u32,
}

impl Relay for Model {
    fn allocate(&mut self, _: &RelayRequest) -> Result<Grant, RelayError> {
        self.next += 1;
        Ok(Grant { relay: self.next, relayed: SocketAddr::from(([198, 18, 1, 1], 50_000)), reservation: Some(7) })
    }
    fn refresh(&mut self, _: u32, _: u64) -> bool {
        true
    }
    fn permit(&mut self, _: u32, peers: &[IpAddr], _: u64) -> Result<(), PeerRefused> {
        if peers.iter().any(IpAddr::is_loopback) { Err(PeerRefused::Forbidden("loopback".into())) } else { Ok(()) }
    }
    fn bind_channel(&mut self, _: u32, _: u16, _: SocketAddr, _: u64) -> Result<(), PeerRefused> {
        Ok(())
    }
    fn connect(&mut self, _: u32, peer: SocketAddr) -> Result<u32, PeerRefused> {
        if peer.ip().is_loopback() { Err(PeerRefused::Forbidden("loopback".into())) } else { Ok(0x100) }
    }
    fn bind_connection(&mut self, connection: u32, _: u32) -> bool {
        connection == 0x100
    }
    fn secret(&mut self, name: &str) -> Option<Vec<u8>> {
        (name == "turn-secret").then(|| SECRET.to_vec())
    }
}

fn answer_parses(out: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let bytes = out?;
    assert!(Message::parse(&bytes).is_ok(), "an answer that is not STUN: {bytes:02x?}");
    Some(bytes)
}

fuzz_target!(|data: &[u8]| {
    let from: SocketAddr = "198.18.1.10:40000".parse().expect("addr");
    // The first byte's top bit: a TCP control connection and a TCP allocation.
    let tcp = data.first().is_some_and(|b| b & 0x80 != 0);
    let client = if tcp { Client::Stream(1) } else { Client::Datagram { listener: 0, from } };
    let mut s = Server::new(Config::default(), [9; 32]);
    let mut relay = Model::default();
    answer_parses(s.handle(&mut relay, client, from, data, NOW).response);

    // The nonce a challenge gives, then the same bytes as attributes of a
    // signed request (after an Allocate, so that the others find one).
    let bare = Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).finish();
    let Some(challenge) = answer_parses(s.handle(&mut relay, client, from, &bare, NOW).response) else { return };
    let Some(nonce) = Message::parse(&challenge).ok().and_then(|m| m.attribute(attr::NONCE).map(|a| a.value.to_vec()))
    else {
        return;
    };
    let user = format!("{}:fuzzer", NOW.unix_s + 600);
    let key = long_term_key_md5(&user, "netserv", &rest_password(SECRET, &user));
    let signed = |m: u16, tx: u8, attrs: &[u8]| {
        let mut b = Builder::new(Class::Request, m, &[tx; 12]);
        let mut rest = attrs;
        // (type: 2 bytes, length: 1 byte, value) as long as the input lasts.
        while let [t0, t1, len, tail @ ..] = rest {
            let n = usize::from(*len).min(tail.len());
            b = b.attribute(u16::from_be_bytes([*t0, *t1]), &tail[..n]);
            rest = &tail[n..];
        }
        b.attribute(attr::USERNAME, user.as_bytes())
            .attribute(attr::REALM, b"netserv")
            .attribute(attr::NONCE, &nonce)
            .message_integrity(&key)
            .finish_with_fingerprint()
    };
    let allocate = Builder::new(Class::Request, method::ALLOCATE, &[2; 12])
        .requested_transport(if tcp { 6 } else { 17 })
        .attribute(attr::USERNAME, user.as_bytes())
        .attribute(attr::REALM, b"netserv")
        .attribute(attr::NONCE, &nonce)
        .message_integrity(&key)
        .finish_with_fingerprint();
    answer_parses(s.handle(&mut relay, client, from, &allocate, NOW).response);
    let Some((&pick, attrs)) = data.split_first() else { return };
    let methods = [
        method::ALLOCATE,
        method::REFRESH,
        method::CREATE_PERMISSION,
        method::CHANNEL_BIND,
        METHOD_BINDING,
        method::CONNECT,
        method::CONNECTION_BIND,
    ];
    let m = methods[usize::from(pick & 0x7F) % methods.len()];
    // A ConnectionBind comes on a connection of its own.
    let on = if m == method::CONNECTION_BIND { Client::Stream(2) } else { client };
    answer_parses(s.handle(&mut relay, on, from, &signed(m, pick, attrs), NOW).response);
    // The host's later word on a Connect, a peer's own connection, closes.
    if let Some((_, out)) = s.connect_result(0x100, pick & 1 == 0) {
        answer_parses(out.response);
    }
    if let Some((_, out)) = s.connection_attempt(1, 0x200, "198.18.2.20:80".parse().expect("addr")) {
        answer_parses(out.response);
    }
    s.connection_closed(0x200);
    s.relay_closed(1);
});

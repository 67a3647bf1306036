//! The `server-module` world adapter: the host's messages in, the sans-IO
//! [`Server`] in the middle, its answers and the relay block's calls out
//! through the WIT imports.

// wit-bindgen generates the canonical-ABI glue with `unsafe` and `export_name`;
// this adapter is the only place it is allowed. The logic it calls is safe Rust.
#![allow(unsafe_code)]
// The generated glue passes the relay-request record's fields as arguments.
#![allow(clippy::too_many_arguments)]

use crate::config::Config;
use crate::relay::{self, AddressFamily, Grant, PeerRefused, Relay, RelayError, RelayRequest};
use crate::server::{Count, Now, Server};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

wit_bindgen::generate!({ path: "../wit", world: "server-module" });

use netserv::module::server as host;
use netserv::module::types::IpAddress;
use netserv::module::{clock, counters, secrets};

struct State {
    server: Server,
    counters: Vec<Option<counters::CounterId>>,
}

impl State {
    fn count(&self, c: Count) {
        if let Some(id) = Count::ALL.iter().position(|x| *x == c).and_then(|i| self.counters.get(i).copied().flatten())
        {
            counters::add(id, 1);
        }
    }
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn ip(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    }
}

fn wit_ip(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn addr(a: &SocketAddress) -> SocketAddr {
    SocketAddr::new(ip(&a.address), a.port)
}

fn wit_addr(a: SocketAddr) -> SocketAddress {
    SocketAddress { address: wit_ip(a.ip()), port: a.port() }
}

fn client_of(c: &host::Client) -> relay::Client {
    match c {
        host::Client::Udp((listener, from)) => relay::Client::Datagram { listener: *listener, from: addr(from) },
        host::Client::Tcp(id) => relay::Client::Stream(*id),
    }
}

fn wit_client(c: relay::Client) -> host::Client {
    match c {
        relay::Client::Datagram { listener, from } => host::Client::Udp((listener, wit_addr(from))),
        relay::Client::Stream(id) => host::Client::Tcp(id),
    }
}

/// The host's relay block through the imports.
struct Host;

impl Relay for Host {
    fn allocate(&mut self, r: &RelayRequest) -> Result<Grant, RelayError> {
        let req = host::RelayRequest {
            client: wit_client(r.client),
            family: match r.family {
                AddressFamily::V4 => host::AddressFamily::Ipv4,
                AddressFamily::V6 => host::AddressFamily::Ipv6,
            },
            even_port: r.even_port,
            reserve_next: r.reserve_next,
            reservation: r.reservation,
            lifetime_ms: r.lifetime_ms,
            max_bps: r.max_bps,
            dont_fragment: r.dont_fragment,
            tcp: r.tcp,
        };
        host::allocate(req)
            .map(|g| Grant { relay: g.id, relayed: addr(&g.relayed), reservation: g.reservation })
            .map_err(|e| match e {
                host::RelayError::QuotaReached => RelayError::QuotaReached,
                host::RelayError::Exists => RelayError::Exists,
                host::RelayError::FamilyUnsupported => RelayError::FamilyUnsupported,
                host::RelayError::BadReservation => RelayError::BadReservation,
                host::RelayError::NoPort => RelayError::NoPort,
            })
    }

    fn refresh(&mut self, relay: u32, lifetime_ms: u64) -> bool {
        host::refresh(relay, lifetime_ms)
    }

    fn permit(&mut self, relay: u32, peers: &[IpAddr], lifetime_ms: u64) -> Result<(), PeerRefused> {
        let peers: Vec<IpAddress> = peers.iter().map(|p| wit_ip(*p)).collect();
        host::permit(relay, &peers, lifetime_ms).map_err(refused)
    }

    fn bind_channel(
        &mut self,
        relay: u32,
        channel: u16,
        peer: SocketAddr,
        lifetime_ms: u64,
    ) -> Result<(), PeerRefused> {
        host::bind_channel(relay, channel, wit_addr(peer), lifetime_ms).map_err(refused)
    }

    fn connect(&mut self, relay: u32, peer: SocketAddr) -> Result<u32, PeerRefused> {
        host::connect(relay, wit_addr(peer)).map_err(refused)
    }

    fn bind_connection(&mut self, connection: u32, data: u32) -> bool {
        host::bind_connection(connection, data)
    }

    fn secret(&mut self, name: &str) -> Option<Vec<u8>> {
        secrets::get(name)
    }
}

fn refused(e: host::PeerRefused) -> PeerRefused {
    match e {
        host::PeerRefused::Forbidden(why) => PeerRefused::Forbidden(why),
        host::PeerRefused::NoRelay => PeerRefused::NoRelay,
        host::PeerRefused::QuotaReached => PeerRefused::QuotaReached,
        host::PeerRefused::Conflict => PeerRefused::Conflict,
    }
}

struct MediaRelay;

impl Guest for MediaRelay {
    fn init(properties: Vec<(String, String)>, _listeners: Vec<host::Listener>) -> Result<(), String> {
        let cfg = Config::from_properties(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| e.to_string())?;
        let key: [u8; 32] = secrets::instance_key().try_into().map_err(|_| "the host gave no 32-byte instance key")?;
        let counters = Count::ALL.iter().map(|c| counters::declare(c.as_str())).collect();
        STATE.with_borrow_mut(|s| *s = Some(State { server: Server::new(cfg, key), counters }));
        Ok(())
    }

    fn on_message(source: host::Client, from: SocketAddress, data: Vec<u8>) {
        STATE.with_borrow_mut(|s| {
            let Some(state) = s.as_mut() else { return };
            let now = Now { unix_s: clock::wall_now_ms() / 1000 };
            let client = client_of(&source);
            let out = state.server.handle(&mut Host, client, addr(&from), &data, now);
            state.count(out.count);
            if let Some(bytes) = out.response {
                host::send(source, &bytes);
            }
        });
    }

    fn on_connect_result(connection: host::ConnectionId, ok: bool) {
        STATE.with_borrow_mut(|s| {
            let Some(state) = s.as_mut() else { return };
            if let Some((client, out)) = state.server.connect_result(connection, ok) {
                state.count(out.count);
                if let Some(bytes) = out.response {
                    host::send(wit_client(client), &bytes);
                }
            }
        });
    }

    fn on_connection_attempt(relay: host::RelayId, connection: host::ConnectionId, peer: SocketAddress) {
        STATE.with_borrow_mut(|s| {
            let Some(state) = s.as_mut() else { return };
            if let Some((client, out)) = state.server.connection_attempt(relay, connection, addr(&peer)) {
                state.count(out.count);
                if let Some(bytes) = out.response {
                    host::send(wit_client(client), &bytes);
                }
            }
        });
    }

    fn on_connection_closed(connection: host::ConnectionId) {
        STATE.with_borrow_mut(|s| {
            if let Some(state) = s.as_mut() {
                state.server.connection_closed(connection);
            }
        });
    }

    fn on_stream_closed(_stream: host::StreamId) {
        // The host ends the stream's allocation itself and says so with
        // on-relay-closed.
    }

    fn on_relay_closed(relay: host::RelayId, _usage: host::RelayUsage) {
        STATE.with_borrow_mut(|s| {
            if let Some(state) = s.as_mut() {
                state.server.relay_closed(relay);
            }
        });
    }

    fn on_timer(_id: u32) {}
}

export!(MediaRelay);

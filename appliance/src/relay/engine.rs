//! The relay building block's core, sans-IO: one server module's
//! allocations with their permissions and channels, the peer policy on
//! every path a guest can name a peer through, and the fast path that moves
//! ChannelData, Send and Data indications between a client and its peers
//! without entering wasm. Time (monotonic ms) is an argument; the shell
//! (`relay::shell`) owns the sockets and calls in.

use super::peer_policy::{Denied, PeerPolicy};
use super::rate::Bucket;
use netserv_stun_wire::framing::{self, Frame};
use netserv_stun_wire::turn::{attr as tattr, method};
use netserv_stun_wire::{Builder, Class, Message};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
// foldhash: seeded per process, several times cheaper per lookup than
// SipHash on the fast path (three lookups per relayed datagram).
use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

pub type RelayId = u32;

/// The lifetime of the permission a channel binding installs (RFC 8656 §9).
pub const PERMISSION_LIFETIME_MS: u64 = 300_000;

/// Where a client's messages come from and its relayed data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Udp { listener: u32, from: SocketAddr },
    Tcp(u32),
}

impl Client {
    /// Over TCP, ChannelData is padded to four bytes (RFC 8656 §12.5).
    fn stream(&self) -> bool {
        matches!(self, Client::Tcp(_))
    }
}

/// What an allocation relayed: for quotas, metrics and the usage ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub packets_to_peers: u64,
    pub bytes_to_peers: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
    /// Over its rate, or from a peer without a permission.
    pub dropped: u64,
}

impl Usage {
    fn count_to_peers(&mut self, bytes: usize) {
        self.packets_to_peers += 1;
        self.bytes_to_peers += bytes as u64;
    }

    fn count_to_client(&mut self, bytes: usize) {
        self.packets_to_client += 1;
        self.bytes_to_client += bytes as u64;
    }

    pub fn add(&mut self, o: &Usage) {
        self.packets_to_peers += o.packets_to_peers;
        self.bytes_to_peers += o.bytes_to_peers;
        self.packets_to_client += o.packets_to_client;
        self.bytes_to_client += o.bytes_to_client;
        self.dropped += o.dropped;
    }
}

/// The path through which a guest named a peer (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerPath {
    CreatePermission,
    ChannelBind,
    Send,
    Connect,
}

impl PeerPath {
    pub const ALL: [PeerPath; 4] =
        [PeerPath::CreatePermission, PeerPath::ChannelBind, PeerPath::Send, PeerPath::Connect];
    pub fn as_str(self) -> &'static str {
        match self {
            PeerPath::CreatePermission => "create_permission",
            PeerPath::ChannelBind => "channel_bind",
            PeerPath::Send => "send",
            PeerPath::Connect => "connect",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Allocations at once (the tenant's relay ports bound it too).
    pub max_allocations: usize,
    pub permissions_per_allocation: usize,
    pub channels_per_allocation: usize,
    /// Relayed bytes per second over all allocations; 0: none.
    pub total_bps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_allocations: 16_384, permissions_per_allocation: 64, channels_per_allocation: 64, total_bps: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocateError {
    QuotaReached,
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    Forbidden(Denied),
    NoRelay,
    QuotaReached,
    Conflict,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    ip: IpAddr,
    expires_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires_ms: u64,
}

#[derive(Debug)]
pub struct Allocation {
    pub client: Client,
    pub relayed: SocketAddr,
    expires_ms: u64,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    pub usage: Usage,
    bucket: Option<Bucket>,
    pub dont_fragment: bool,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.expires_ms > now_ms)
    }

    fn channel_of_number(&self, number: u16, now_ms: u64) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == number && c.expires_ms > now_ms)
    }

    fn channel_of_peer(&self, peer: SocketAddr, now_ms: u64) -> Option<&Channel> {
        self.channels.iter().find(|c| c.peer == peer && c.expires_ms > now_ms)
    }

    fn admit(&mut self, total: &mut Option<Bucket>, bytes: usize, now_ms: u64) -> bool {
        let own = self.bucket.as_mut().is_none_or(|b| b.admit(bytes as u64, now_ms));
        let all = own && total.as_mut().is_none_or(|b| b.admit(bytes as u64, now_ms));
        if !all {
            self.usage.dropped += 1;
        }
        all
    }
}

/// What to do with a message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// Send `data[payload]` from `relay`'s socket to `peer`.
    ToPeer { relay: RelayId, peer: SocketAddr, payload: Range<usize> },
    /// A STUN request (or anything the block does not relay): the guest's.
    ToGuest,
    /// Relay data with no channel, permission or allocation, or over the rate.
    Dropped,
}

/// Refusals and drops, for metrics.
#[derive(Debug, Default)]
pub struct Counts {
    pub refused: HashMap<(PeerPath, Denied), u64>,
    pub dropped_no_permission: u64,
    pub dropped_over_rate: u64,
    pub dropped_no_allocation: u64,
    /// Client datagrams that were neither a request nor relay data.
    pub dropped_not_turn: u64,
}

pub struct Engine {
    policy: PeerPolicy,
    limits: Limits,
    allocations: HashMap<RelayId, Allocation>,
    by_client: HashMap<Client, RelayId>,
    next_id: RelayId,
    total: Option<Bucket>,
    /// (expiry, relay), lazily: an entry whose relay was refreshed or freed is skipped.
    expiries: BinaryHeap<Reverse<(u64, RelayId)>>,
    pub counts: Counts,
    /// Relayed addresses of the live allocations.
    relayed: HashSet<SocketAddr>,
    /// Usage of allocations that ended (the module's totals are this plus the live ones').
    pub ended: Usage,
    /// Transaction ids of Data indications (splitmix64).
    tx_state: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("allocations", &self.allocations.len()).finish_non_exhaustive()
    }
}

impl Engine {
    /// `seed`: random, for the transaction ids of Data indications.
    pub fn new(policy: PeerPolicy, limits: Limits, seed: u64) -> Self {
        Self {
            policy,
            total: (limits.total_bps > 0).then(|| Bucket::per_second(limits.total_bps)),
            limits,
            allocations: HashMap::new(),
            by_client: HashMap::new(),
            next_id: 1,
            expiries: BinaryHeap::new(),
            counts: Counts::default(),
            relayed: HashSet::new(),
            ended: Usage::default(),
            tx_state: seed,
        }
    }

    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    pub fn allocation(&self, relay: RelayId) -> Option<&Allocation> {
        self.allocations.get(&relay)
    }

    /// The relay `client` holds, if any.
    pub fn relay_of(&self, client: &Client) -> Option<RelayId> {
        self.by_client.get(client).copied()
    }

    pub fn has_client(&self, client: &Client) -> bool {
        self.by_client.contains_key(client)
    }

    /// Usage of every live allocation plus the ended ones.
    pub fn total_usage(&self) -> Usage {
        let mut u = self.ended;
        for a in self.allocations.values() {
            u.add(&a.usage);
        }
        u
    }

    /// Live permissions and channels, over all allocations.
    pub fn permissions_and_channels(&self, now_ms: u64) -> (usize, usize) {
        self.allocations.values().fold((0, 0), |(p, c), a| {
            (
                p + a.permissions.iter().filter(|x| x.expires_ms > now_ms).count(),
                c + a.channels.iter().filter(|x| x.expires_ms > now_ms).count(),
            )
        })
    }

    /// The one exception to "never the node's own addresses": another live
    /// allocation of this relay (two phones behind one edge calling each
    /// other through it). Its exact relayed address, nothing else of the node.
    fn own_relay(&self, checked: Result<SocketAddr, Denied>, peer: SocketAddr) -> Result<SocketAddr, Denied> {
        match checked {
            Err(Denied::ThisNode) => {
                let peer = SocketAddr::new(super::peer_policy::normalize(peer.ip()), peer.port());
                if self.relayed.contains(&peer) { Ok(peer) } else { Err(Denied::ThisNode) }
            }
            other => other,
        }
    }

    /// For a permission (an address, no port): the node's own address is a
    /// peer when it is this relay's (what may be *sent* there is then
    /// checked port and all by [`Engine::own_relay`]).
    fn own_relay_ip(&self, checked: Result<IpAddr, Denied>, peer: IpAddr) -> Result<IpAddr, Denied> {
        match checked {
            Err(Denied::ThisNode) => {
                let ip = super::peer_policy::normalize(peer);
                if self.relayed.iter().any(|r| r.ip() == ip) { Ok(ip) } else { Err(Denied::ThisNode) }
            }
            other => other,
        }
    }

    /// Gives back the capacity the tables grew (when few allocations are
    /// left); whether any was.
    pub fn shrink(&mut self) -> bool {
        if self.allocations.capacity() <= 64 || self.allocations.len() * 4 > self.allocations.capacity() {
            return false;
        }
        self.allocations.shrink_to_fit();
        self.by_client.shrink_to_fit();
        self.relayed.shrink_to_fit();
        self.compact_expiries();
        self.expiries.shrink_to_fit();
        true
    }

    /// Whether another allocation fits the limits (checked before a port is bound).
    pub fn check_new(&self, client: &Client) -> Result<(), AllocateError> {
        if self.by_client.contains_key(client) {
            return Err(AllocateError::Exists);
        }
        if self.allocations.len() >= self.limits.max_allocations {
            return Err(AllocateError::QuotaReached);
        }
        Ok(())
    }

    /// Records an allocation whose socket the shell bound at `relayed`.
    pub fn insert(
        &mut self,
        client: Client,
        relayed: SocketAddr,
        lifetime_ms: u64,
        max_bps: u64,
        dont_fragment: bool,
        now_ms: u64,
    ) -> Result<RelayId, AllocateError> {
        self.check_new(&client)?;
        let id = self.next_free_id();
        let expires_ms = now_ms.saturating_add(lifetime_ms);
        self.allocations.insert(
            id,
            Allocation {
                client,
                relayed,
                expires_ms,
                permissions: Vec::new(),
                channels: Vec::new(),
                usage: Usage::default(),
                bucket: (max_bps > 0).then(|| Bucket::per_second(max_bps)),
                dont_fragment,
            },
        );
        self.by_client.insert(client, id);
        self.relayed.insert(relayed);
        self.expiries.push(Reverse((expires_ms, id)));
        Ok(id)
    }

    fn next_free_id(&mut self) -> RelayId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.allocations.contains_key(&id) {
                return id;
            }
        }
    }

    /// A new remaining lifetime (None: no such relay). 0 ends it: the
    /// allocation is returned for the shell to close.
    pub fn refresh(&mut self, relay: RelayId, lifetime_ms: u64, now_ms: u64) -> Option<Option<Allocation>> {
        if lifetime_ms == 0 {
            return self.remove(relay).map(Some);
        }
        let a = self.allocations.get_mut(&relay)?;
        a.expires_ms = now_ms.saturating_add(lifetime_ms);
        self.expiries.push(Reverse((a.expires_ms, relay)));
        self.compact_expiries();
        Some(None)
    }

    /// Ends an allocation (its client went away, or the guest freed it).
    pub fn remove(&mut self, relay: RelayId) -> Option<Allocation> {
        let a = self.allocations.remove(&relay)?;
        self.by_client.remove(&a.client);
        self.relayed.remove(&a.relayed);
        self.ended.add(&a.usage);
        Some(a)
    }

    /// Installs or refreshes permissions for all of `peers`, or none.
    pub fn permit(&mut self, relay: RelayId, peers: &[IpAddr], lifetime_ms: u64, now_ms: u64) -> Result<(), PeerError> {
        let mut checked = Vec::with_capacity(peers.len());
        for p in peers {
            match self.own_relay_ip(self.policy.check(*p), *p) {
                Ok(ip) => checked.push(ip),
                Err(why) => {
                    *self.counts.refused.entry((PeerPath::CreatePermission, why)).or_default() += 1;
                    return Err(PeerError::Forbidden(why));
                }
            }
        }
        let limit = self.limits.permissions_per_allocation;
        let a = self.allocations.get_mut(&relay).ok_or(PeerError::NoRelay)?;
        a.permissions.retain(|p| p.expires_ms > now_ms);
        let new = checked.iter().filter(|ip| !a.permissions.iter().any(|p| p.ip == **ip)).count();
        if a.permissions.len() + new > limit {
            return Err(PeerError::QuotaReached);
        }
        let expires_ms = now_ms.saturating_add(lifetime_ms);
        for ip in checked {
            match a.permissions.iter_mut().find(|p| p.ip == ip) {
                Some(p) => p.expires_ms = expires_ms,
                None => a.permissions.push(Permission { ip, expires_ms }),
            }
        }
        Ok(())
    }

    /// Binds or refreshes channel `number` to `peer` (and its permission).
    pub fn bind_channel(
        &mut self,
        relay: RelayId,
        number: u16,
        peer: SocketAddr,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> Result<(), PeerError> {
        let peer = match self.own_relay(self.policy.check_addr(peer), peer) {
            Ok(p) => p,
            Err(why) => {
                *self.counts.refused.entry((PeerPath::ChannelBind, why)).or_default() += 1;
                return Err(PeerError::Forbidden(why));
            }
        };
        if !(framing::CHANNEL_MIN..=framing::CHANNEL_MAX).contains(&number) {
            return Err(PeerError::Conflict);
        }
        let ip = peer.ip();
        let limit = self.limits.channels_per_allocation;
        let a = self.allocations.get_mut(&relay).ok_or(PeerError::NoRelay)?;
        a.channels.retain(|c| c.expires_ms > now_ms);
        let by_number = a.channels.iter().position(|c| c.number == number);
        let by_peer = a.channels.iter().position(|c| c.peer == peer);
        let expires_ms = now_ms.saturating_add(lifetime_ms);
        match (by_number, by_peer) {
            (Some(i), Some(j)) if i == j => {
                if let Some(c) = a.channels.get_mut(i) {
                    c.expires_ms = expires_ms;
                }
            }
            (None, None) => {
                if a.channels.len() >= limit {
                    return Err(PeerError::QuotaReached);
                }
                a.channels.push(Channel { number, peer, expires_ms });
            }
            _ => return Err(PeerError::Conflict),
        }
        // A channel binding also installs or refreshes the permission, as
        // CreatePermission does (RFC 8656 §12.2, §9: 300 s).
        let perm_expiry = now_ms.saturating_add(PERMISSION_LIFETIME_MS);
        match a.permissions.iter_mut().find(|p| p.ip == ip) {
            Some(p) => p.expires_ms = p.expires_ms.max(perm_expiry),
            None => a.permissions.push(Permission { ip, expires_ms: perm_expiry }),
        }
        Ok(())
    }

    /// RFC 6062 Connect from `relay` to `peer`: the peer policy, as for
    /// every path (refusals counted under `connect`).
    pub fn check_connect(&mut self, relay: RelayId, peer: SocketAddr) -> Result<SocketAddr, PeerError> {
        if !self.allocations.contains_key(&relay) {
            return Err(PeerError::NoRelay);
        }
        self.own_relay(self.policy.check_addr(peer), peer).map_err(|why| {
            *self.counts.refused.entry((PeerPath::Connect, why)).or_default() += 1;
            PeerError::Forbidden(why)
        })
    }

    /// Whether a peer at `ip` may reach `relay` (a TCP allocation's
    /// incoming connection, RFC 6062 §5.3: it needs a permission).
    pub fn permitted(&self, relay: RelayId, ip: IpAddr, now_ms: u64) -> bool {
        let ip = super::peer_policy::normalize(ip);
        self.allocations.get(&relay).is_some_and(|a| a.permitted(ip, now_ms))
    }

    /// Bytes a TCP allocation's connection carried (RFC 6062 data
    /// connections): `reads` reads of `bytes` each way, for usage and quotas.
    pub fn count_stream(&mut self, relay: RelayId, to_peers: (u64, u64), to_client: (u64, u64)) {
        if let Some(a) = self.allocations.get_mut(&relay) {
            a.usage.packets_to_peers += to_peers.0;
            a.usage.bytes_to_peers += to_peers.1;
            a.usage.packets_to_client += to_client.0;
            a.usage.bytes_to_client += to_client.1;
        }
    }

    /// A message from `client`: relay it, or hand it to the guest.
    pub fn from_client(&mut self, client: &Client, data: &[u8], now_ms: u64) -> FromClient {
        match framing::parse_datagram(data) {
            Ok(Frame::ChannelData { channel, data: payload }) => {
                let Some(&relay) = self.by_client.get(client) else {
                    self.counts.dropped_no_allocation += 1;
                    return FromClient::Dropped;
                };
                let Some(a) = self.allocations.get_mut(&relay) else {
                    self.counts.dropped_no_allocation += 1;
                    return FromClient::Dropped;
                };
                let Some(peer) = a.channel_of_number(channel, now_ms).map(|c| c.peer) else {
                    a.usage.dropped += 1;
                    return FromClient::Dropped;
                };
                if !admit(a, &mut self.total, &mut self.counts, payload.len(), now_ms) {
                    return FromClient::Dropped;
                }
                a.usage.count_to_peers(payload.len());
                FromClient::ToPeer {
                    relay,
                    peer,
                    payload: framing::CHANNEL_HEADER_LEN..framing::CHANNEL_HEADER_LEN + payload.len(),
                }
            }
            Ok(Frame::Stun(raw)) if is_send_indication(raw) => self.send_indication(client, raw, data, now_ms),
            // Requests are the guest's; anything else (responses, other
            // indications, what is not TURN at all) costs no wasm call.
            Ok(Frame::Stun(raw)) if is_request(raw) => FromClient::ToGuest,
            _ => {
                self.counts.dropped_not_turn += 1;
                FromClient::Dropped
            }
        }
    }

    fn send_indication(&mut self, client: &Client, raw: &[u8], whole: &[u8], now_ms: u64) -> FromClient {
        let Ok(msg) = Message::parse(raw) else { return FromClient::Dropped };
        let (Some(Ok(peer)), Some(payload)) = (msg.xor_address(tattr::XOR_PEER_ADDRESS), msg.data()) else {
            return FromClient::Dropped;
        };
        let Some(&relay) = self.by_client.get(client) else {
            self.counts.dropped_no_allocation += 1;
            return FromClient::Dropped;
        };
        let peer = match self.own_relay(self.policy.check_addr(peer), peer) {
            Ok(p) => p,
            Err(why) => {
                *self.counts.refused.entry((PeerPath::Send, why)).or_default() += 1;
                return FromClient::Dropped;
            }
        };
        let ip = peer.ip();
        let Some(a) = self.allocations.get_mut(&relay) else { return FromClient::Dropped };
        if !a.permitted(ip, now_ms) {
            a.usage.dropped += 1;
            self.counts.dropped_no_permission += 1;
            return FromClient::Dropped;
        }
        if !admit(a, &mut self.total, &mut self.counts, payload.len(), now_ms) {
            return FromClient::Dropped;
        }
        a.usage.count_to_peers(payload.len());
        // The payload borrows `whole`: its offset there.
        let start = (payload.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        FromClient::ToPeer { relay, peer, payload: start..start + payload.len() }
    }

    /// A datagram from `peer` on `relay`'s socket: the message for the
    /// client (ChannelData on its channel, else a Data indication) is
    /// written to `out`, and its client returned; None: dropped (no
    /// permission, over the rate, no such relay).
    pub fn from_peer(
        &mut self,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        now_ms: u64,
        out: &mut Vec<u8>,
    ) -> Option<Client> {
        let peer = SocketAddr::new(super::peer_policy::normalize(peer.ip()), peer.port());
        let a = self.allocations.get_mut(&relay)?;
        if !a.permitted(peer.ip(), now_ms) {
            a.usage.dropped += 1;
            self.counts.dropped_no_permission += 1;
            return None;
        }
        if !admit(a, &mut self.total, &mut self.counts, data.len(), now_ms) {
            return None;
        }
        out.clear();
        match a.channel_of_peer(peer, now_ms).map(|c| c.number) {
            Some(number) => {
                framing::write_channel_data(out, number, data, a.client.stream()).ok()?;
            }
            None => {
                self.tx_state = self.tx_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let tx = transaction_id(self.tx_state);
                let msg = Builder::new(Class::Indication, method::DATA, &tx)
                    .xor_address(tattr::XOR_PEER_ADDRESS, peer)
                    .data(data)
                    .finish();
                out.extend_from_slice(&msg);
            }
        }
        a.usage.count_to_client(data.len());
        Some(a.client)
    }

    /// Each refresh leaves its old entry behind; once they outnumber the
    /// live allocations by far, rebuild the heap from those.
    fn compact_expiries(&mut self) {
        if self.expiries.len() > 4 * self.allocations.len() + 1024 {
            self.expiries = self.allocations.iter().map(|(id, a)| Reverse((a.expires_ms, *id))).collect();
        }
    }

    /// When the next allocation may expire.
    pub fn poll_timeout(&mut self) -> Option<u64> {
        while let Some(Reverse((at, id))) = self.expiries.peek().copied() {
            match self.allocations.get(&id) {
                Some(a) if a.expires_ms == at => return Some(at),
                _ => {
                    self.expiries.pop();
                }
            }
        }
        None
    }

    /// Ends every allocation whose lifetime ran out by `now_ms`.
    pub fn expire(&mut self, now_ms: u64, out: &mut Vec<(RelayId, Allocation)>) {
        while let Some(at) = self.poll_timeout() {
            if at > now_ms {
                break;
            }
            if let Some(Reverse((_, id))) = self.expiries.pop()
                && let Some(a) = self.remove(id)
            {
                out.push((id, a));
            }
        }
    }
}

/// Whether `bytes` more fit the allocation's and the total rate; a datagram
/// that does not is counted as dropped over the rate.
fn admit(a: &mut Allocation, total: &mut Option<Bucket>, counts: &mut Counts, bytes: usize, now_ms: u64) -> bool {
    let ok = a.admit(total, bytes, now_ms);
    if !ok {
        counts.dropped_over_rate += 1;
    }
    ok
}

/// A STUN request by its header (class bits C1 C0 = 00).
fn is_request(raw: &[u8]) -> bool {
    raw.get(..2).is_some_and(|t| t[0] & 0x01 == 0 && t[1] & 0x10 == 0) && raw.len() >= netserv_stun_wire::HEADER_LEN
}

fn is_send_indication(raw: &[u8]) -> bool {
    // Type 0x0016: method Send (0x006), class indication.
    raw.get(..2) == Some(&[0x00, 0x16][..])
}

fn transaction_id(state: u64) -> [u8; 12] {
    let mut z = state;
    let mut mix = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    let (a, b) = (mix().to_be_bytes(), mix().to_be_bytes());
    let mut tx = [0u8; 12];
    tx[..8].copy_from_slice(&a);
    tx[8..].copy_from_slice(&b[..4]);
    tx
}

#[cfg(test)]
mod tests;

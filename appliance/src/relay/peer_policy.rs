//! Which peers a tenant's relay may reach (DESIGN.md §4.3). The host checks
//! every peer address a guest names — on CreatePermission, ChannelBind, Send
//! indications and TCP Connect alike — here, and only here, so a module can
//! never open a path the operator did not.
//!
//! The order is the point; coturn's CVE-2020-26262 and CVE-2026-27624 and
//! its 6to4 / NAT64 fix are each a case of skipping one step:
//! 1. every embedded-IPv4 form becomes the IPv4 address it carries
//!    (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible, `64:ff9b::/96` NAT64,
//!    `2002::/16` 6to4), so a private address cannot hide in an IPv6 one;
//! 2. the tenant's allow list, which opens what the operator chose;
//! 3. deny by default: unspecified (`0.0.0.0/8`, `::`), loopback,
//!    link-local (with the cloud metadata address 169.254.169.254),
//!    RFC 1918, unique-local, multicast, the node's own addresses — and,
//!    beyond the design's list because they are never a phone's media peer
//!    on an eyeball ISP's edge: the shared CGNAT space (100.64.0.0/10, the
//!    ISP's own inside), limited broadcast and the reserved 240.0.0.0/4, and
//!    the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215), whose embedding
//!    depends on a prefix length we cannot know.
//!
//! Pure: no I/O; the node's addresses are given when the policy is made.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a peer was refused (the 403's reason, and a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denied {
    Unspecified,
    Loopback,
    LinkLocal,
    Private,
    SharedCgnat,
    UniqueLocal,
    Multicast,
    Broadcast,
    Reserved,
    LocalNat64,
    ThisNode,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Private => "private",
            Self::SharedCgnat => "shared_cgnat",
            Self::UniqueLocal => "unique_local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::LocalNat64 => "local_nat64",
            Self::ThisNode => "this_node",
        }
    }
}

/// One tenant's peer policy on one node.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// The node's own addresses (normalized), never a peer unless allowed.
    own: Vec<IpAddr>,
    /// Prefixes the operator opened for this tenant (normalized).
    allow: Vec<IpNet>,
}

impl PeerPolicy {
    pub fn new(own: impl IntoIterator<Item = IpAddr>, allow: impl IntoIterator<Item = IpNet>) -> Self {
        let allow = allow
            .into_iter()
            .map(|n| match n {
                // An allowed `::ffff:10.0.0.0/104` means the IPv4 prefix.
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match embedded_v4(v6.network()) {
                    Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(n).trunc(),
                    None => n.trunc(),
                },
                n => n.trunc(),
            })
            .collect();
        Self { own: own.into_iter().map(normalize).collect(), allow }
    }

    /// The address to send to (normalized), or why this tenant may not:
    /// [`PeerPolicy::check`] with the port carried along. (The one
    /// exception to "never the node's own addresses" — another allocation
    /// of the same relay — is the relay engine's to make: only it knows
    /// which relayed addresses are live.)
    pub fn check_addr(&self, peer: std::net::SocketAddr) -> Result<std::net::SocketAddr, Denied> {
        self.check(peer.ip()).map(|ip| std::net::SocketAddr::new(ip, peer.port()))
    }

    /// The address to relay to (normalized: the IPv4 address an embedded
    /// form carries), or why this tenant may not reach it.
    pub fn check(&self, peer: IpAddr) -> Result<IpAddr, Denied> {
        let ip = normalize(peer);
        // The node's own addresses first: an allow list that happens to
        // cover one (a management prefix) must not open the node itself.
        // (Loopback is named as such below.)
        if self.own.contains(&ip) && !ip.is_loopback() {
            return Err(Denied::ThisNode);
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return Ok(ip);
        }
        if let IpAddr::V6(v6) = peer {
            // `::` and `::1` are also IPv4-compatible forms (of 0.0.0.0 and
            // 0.0.0.1); name them for what they are.
            if v6.is_unspecified() {
                return Err(Denied::Unspecified);
            }
            if v6.is_loopback() {
                return Err(Denied::Loopback);
            }
            if in_v6(v6, LOCAL_NAT64, 48) {
                return Err(Denied::LocalNat64);
            }
        }
        if let Some(why) = denied_by_default(ip) {
            return Err(why);
        }
        if self.own.contains(&ip) {
            return Err(Denied::ThisNode);
        }
        Ok(ip)
    }
}

const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
const LOCAL_NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0);
const SIX_TO_FOUR: Ipv6Addr = Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0);

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address an IPv6 address embeds, for the forms that embed one
/// in their last 32 bits (mapped, compatible, NAT64) or in bits 16..48 (6to4).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low = Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
    if ip.to_ipv4_mapped().is_some() || in_v6(ip, Ipv6Addr::UNSPECIFIED, 96) || in_v6(ip, NAT64, 96) {
        return Some(low);
    }
    if in_v6(ip, SIX_TO_FOUR, 16) {
        return Some(Ipv4Addr::from(u32::try_from((bits >> 80) & 0xffff_ffff).unwrap_or(0)));
    }
    None
}

/// `peer` with any embedded IPv4 address taken out of its IPv6 form.
pub fn normalize(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(peer, IpAddr::V4),
        v4 => v4,
    }
}

fn denied_by_default(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(match o {
                [0, ..] => Denied::Unspecified,
                [127, ..] => Denied::Loopback,
                [169, 254, ..] => Denied::LinkLocal,
                [10, ..] | [192, 168, ..] => Denied::Private,
                [172, b, ..] if (16..32).contains(&b) => Denied::Private,
                [100, b, ..] if (64..128).contains(&b) => Denied::SharedCgnat,
                [255, 255, 255, 255] => Denied::Broadcast,
                [224..=239, ..] => Denied::Multicast,
                [240..=255, ..] => Denied::Reserved,
                _ => return None,
            })
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            Some(if v6.is_unspecified() {
                Denied::Unspecified
            } else if v6.is_loopback() {
                Denied::Loopback
            } else if first & 0xffc0 == 0xfe80 {
                Denied::LinkLocal
            } else if first & 0xfe00 == 0xfc00 {
                Denied::UniqueLocal
            } else if first & 0xff00 == 0xff00 {
                Denied::Multicast
            } else {
                return None;
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn policy() -> PeerPolicy {
        PeerPolicy::new([ip("198.18.1.1"), ip("2001:db8:e::1")], [])
    }

    #[test]
    fn an_allow_list_never_opens_the_node_itself() {
        let p = PeerPolicy::new([ip("10.0.0.5")], ["10.0.0.0/8".parse().expect("net")]);
        assert_eq!(p.check(ip("10.0.0.5")), Err(Denied::ThisNode));
        assert_eq!(p.check(ip("::ffff:10.0.0.5")), Err(Denied::ThisNode), "in any of its forms");
        assert_eq!(p.check(ip("10.0.0.6")), Ok(ip("10.0.0.6")), "the rest of the prefix is open");
        let to = std::net::SocketAddr::new(ip("10.0.0.6"), 5004);
        assert_eq!(p.check_addr(to), Ok(to));
    }

    #[test]
    fn public_peers_pass_as_they_are() {
        let p = policy();
        for a in ["198.18.2.20", "203.0.113.7", "8.8.8.8", "2001:db8::5", "2a00:1450::1"] {
            assert_eq!(p.check(ip(a)), Ok(ip(a)), "{a}");
        }
    }

    #[test]
    fn the_default_deny_list() {
        let p = policy();
        for (a, why) in [
            ("0.0.0.0", Denied::Unspecified),
            ("0.1.2.3", Denied::Unspecified),
            ("::", Denied::Unspecified),
            ("127.0.0.1", Denied::Loopback),
            ("127.255.255.254", Denied::Loopback),
            ("::1", Denied::Loopback),
            ("169.254.169.254", Denied::LinkLocal),
            ("169.254.1.1", Denied::LinkLocal),
            ("fe80::1", Denied::LinkLocal),
            ("febf::1", Denied::LinkLocal),
            ("10.0.0.1", Denied::Private),
            ("172.16.0.1", Denied::Private),
            ("172.31.255.255", Denied::Private),
            ("192.168.1.1", Denied::Private),
            ("100.64.0.1", Denied::SharedCgnat),
            ("100.127.255.255", Denied::SharedCgnat),
            ("fc00::1", Denied::UniqueLocal),
            ("fd12:3456::1", Denied::UniqueLocal),
            ("224.0.0.1", Denied::Multicast),
            ("239.255.255.250", Denied::Multicast),
            ("ff02::1", Denied::Multicast),
            ("255.255.255.255", Denied::Broadcast),
            ("240.0.0.1", Denied::Reserved),
            ("198.18.1.1", Denied::ThisNode),
            ("2001:db8:e::1", Denied::ThisNode),
        ] {
            assert_eq!(p.check(ip(a)), Err(why), "{a}");
        }
        // The edges of the ranges are not in them.
        for a in ["172.15.255.255", "172.32.0.0", "100.63.255.255", "100.128.0.0", "169.253.255.255", "fec0::1"] {
            assert!(p.check(ip(a)).is_ok(), "{a}");
        }
    }

    #[test]
    fn embedded_ipv4_is_checked_as_the_ipv4_it_carries() {
        let p = policy();
        for (a, v4) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("::127.0.0.1", "127.0.0.1"),
            ("::169.254.169.254", "169.254.169.254"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("2002:c0a8:0101::1", "192.168.1.1"),
            ("2002:7f00:0001:1234::5", "127.0.0.1"),
            ("2002:a9fe:a9fe::", "169.254.169.254"),
            ("::ffff:198.18.1.1", "198.18.1.1"),
        ] {
            let expected = policy().check(ip(v4)).expect_err("the IPv4 form is denied");
            assert_eq!(p.check(ip(a)), Err(expected), "{a} hides {v4}");
        }
        // A public IPv4 in any of the forms is relayed to as IPv4.
        for a in ["::ffff:203.0.113.7", "64:ff9b::203.0.113.7", "2002:cb00:7107::1", "::203.0.113.7"] {
            assert_eq!(p.check(ip(a)), Ok(ip("203.0.113.7")), "{a}");
        }
        // The local-use NAT64 prefix is refused whole.
        assert_eq!(p.check(ip("64:ff9b:1::a00:1")), Err(Denied::LocalNat64));
    }

    #[test]
    fn the_allow_list_opens_what_the_operator_chose_and_no_more() {
        let allow = ["10.20.0.0/16".parse().expect("net"), "::ffff:192.168.7.0/120".parse().expect("net")];
        let p = PeerPolicy::new([ip("198.18.1.1")], allow);
        assert_eq!(p.check(ip("10.20.3.4")), Ok(ip("10.20.3.4")));
        // Also in its embedded forms, relayed to as IPv4.
        assert_eq!(p.check(ip("::ffff:10.20.3.4")), Ok(ip("10.20.3.4")));
        assert_eq!(p.check(ip("2002:0a14:0304::1")), Ok(ip("10.20.3.4")));
        // An allow entry written in the mapped form means the IPv4 prefix.
        assert_eq!(p.check(ip("192.168.7.9")), Ok(ip("192.168.7.9")));
        // Next door stays closed.
        assert_eq!(p.check(ip("10.21.0.1")), Err(Denied::Private));
        assert_eq!(p.check(ip("192.168.8.1")), Err(Denied::Private));
        assert_eq!(p.check(ip("127.0.0.1")), Err(Denied::Loopback));
    }

    #[test]
    fn normalizing_leaves_other_ipv6_alone() {
        for a in ["2001:db8::1", "fe80::1", "2001::1", "64:ff9c::1"] {
            assert_eq!(normalize(ip(a)), ip(a), "{a}");
        }
    }

    proptest::proptest! {
        /// No IPv6 form of an IPv4 address is judged differently from the
        /// address itself, and an allowed one is relayed to as IPv4.
        #[test]
        fn every_embedding_is_judged_as_its_ipv4(v4 in proptest::prelude::any::<u32>(), host in proptest::prelude::any::<u64>()) {
            let p = PeerPolicy::new([ip("198.18.1.1")], ["10.9.0.0/16".parse().expect("net")]);
            let a = Ipv4Addr::from(v4);
            let plain = p.check(IpAddr::V4(a));
            let b = u128::from(v4);
            let forms = [
                u128::from(a.to_ipv6_mapped()),
                b,                                                   // ::a.b.c.d
                u128::from(NAT64) | b,                               // 64:ff9b::a.b.c.d
                u128::from(SIX_TO_FOUR) | (b << 80) | u128::from(host), // 2002:aabb:ccdd:...
            ];
            for f in forms {
                let v6 = Ipv6Addr::from(f);
                // `::` and `::1` carry 0.0.0.0 / 0.0.0.1, denied either way.
                let got = p.check(IpAddr::V6(v6));
                proptest::prop_assert_eq!(got.is_ok(), plain.is_ok(), "{} vs {}", v6, a);
                if let Ok(to) = got {
                    proptest::prop_assert_eq!(to, IpAddr::V4(a));
                }
            }
        }
    }
}

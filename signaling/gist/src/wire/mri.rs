//! Message-Routing-Information, path-coupled method (RFC 5971 §A.3.1.1).
//!
//! ```text
//! |     MRM-ID    |N|  Reserved   |IP-Ver |P|T|F|S|A|B|D|Reserved |
//! //                       Source Address                        //
//! //                      Destination Address                    //
//! | Source Prefix |  Dest Prefix  |   Protocol    | DS-field  |Rsv|
//! :       Reserved        |              Flow Label               :   F=1
//! :                              SPI                              :   S=1
//! :          Source Port          :       Destination Port        :   A|B
//! ```

use super::objects::object_type::MRI;
use super::reader::Reader;
use super::{DecodeError, ObjectValueError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// MRM-ID of the path-coupled method; the only one implemented (loose-end
/// and others answer "Value Not Supported").
const MRM_PATH_COUPLED: u8 = 0;

mod bit {
    pub const P: u8 = 0x08;
    pub const T: u8 = 0x04;
    pub const F: u8 = 0x02;
    pub const S: u8 = 0x01;
    pub const A: u8 = 0x80;
    pub const B: u8 = 0x40;
    pub const D: u8 = 0x20;
}

/// D-flag: which way along the flow the signalling travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// With the flow, towards its destination.
    Downstream,
    /// Against the flow, towards its source.
    Upstream,
}

/// A path-coupled flow description.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mri {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub source_prefix: u8,
    pub dest_prefix: u8,
    /// IP protocol number, when significant (P).
    pub protocol: Option<u8>,
    /// Diffserv codepoint (6 bits), when significant (T).
    pub ds_field: Option<u8>,
    /// IPv6 flow label (20 bits), when significant (F).
    pub flow_label: Option<u32>,
    /// IPsec SPI, when significant (S; needs a protocol).
    pub spi: Option<u32>,
    /// Ports, when significant (A / B; need a protocol).
    pub source_port: Option<u16>,
    pub dest_port: Option<u16>,
    pub direction: Direction,
}

impl Mri {
    /// The flow of all traffic from `source` to `destination` (host prefixes).
    pub fn between(source: IpAddr, destination: IpAddr) -> Self {
        let full = if destination.is_ipv4() { 32 } else { 128 };
        Self {
            source,
            destination,
            source_prefix: full,
            dest_prefix: full,
            protocol: None,
            ds_field: None,
            flow_label: None,
            spi: None,
            source_port: None,
            dest_port: None,
            direction: Direction::Downstream,
        }
    }

    /// The same flow described for signalling in the other direction.
    pub fn reversed_direction(&self) -> Self {
        let mut m = self.clone();
        m.direction = match self.direction {
            Direction::Downstream => Direction::Upstream,
            Direction::Upstream => Direction::Downstream,
        };
        m
    }

    /// Where a Q-mode Query for this MRI is addressed: the flow's destination
    /// downstream, its source upstream (RFC 5971 §5.8.1.2).
    pub fn query_target(&self) -> IpAddr {
        match self.direction {
            Direction::Downstream => self.destination,
            Direction::Upstream => self.source,
        }
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let len = DecodeError::length(MRI);
        let bad = DecodeError::value(MRI, ObjectValueError::InvalidFlagFieldCombination);
        let mut r = Reader::new(value);
        let mrm = r.u8(len)?;
        let _n_flag = r.u8(len)?;
        if mrm != MRM_PATH_COUPLED {
            return Err(DecodeError::value(MRI, ObjectValueError::ValueNotSupported));
        }
        let b2 = r.u8(len)?;
        let b3 = r.u8(len)?;
        let version = b2 >> 4;
        let (source, destination, full) = match version {
            4 => {
                let s: [u8; 4] = r.array(len)?;
                let d: [u8; 4] = r.array(len)?;
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)), 32)
            }
            6 => {
                let s: [u8; 16] = r.array(len)?;
                let d: [u8; 16] = r.array(len)?;
                (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), 128)
            }
            _ => return Err(DecodeError::value(MRI, ObjectValueError::ValueNotSupported)),
        };
        let source_prefix = r.u8(len)?;
        let dest_prefix = r.u8(len)?;
        let protocol = r.u8(len)?;
        let ds = r.u8(len)? >> 2;
        if source_prefix > full || dest_prefix > full {
            return Err(DecodeError::value(MRI, ObjectValueError::ValueNotSupported));
        }
        let (p, t, f, s) = (b2 & bit::P != 0, b2 & bit::T != 0, b2 & bit::F != 0, b2 & bit::S != 0);
        let (a, b) = (b3 & bit::A != 0, b3 & bit::B != 0);
        // §A.3.1.1: F only for IPv6; S, A and B only with P.
        if (f && version != 6) || (!p && (s || a || b)) {
            return Err(bad);
        }
        let flow_label = if f { Some(r.u32(len)? & 0x000f_ffff) } else { None };
        let spi = if s { Some(r.u32(len)?) } else { None };
        let (source_port, dest_port) = if a || b {
            let sp = r.u16(len)?;
            let dp = r.u16(len)?;
            (a.then_some(sp), b.then_some(dp))
        } else {
            (None, None)
        };
        if !r.is_empty() {
            return Err(len);
        }
        Ok(Self {
            source,
            destination,
            source_prefix,
            dest_prefix,
            protocol: p.then_some(protocol),
            ds_field: t.then_some(ds),
            flow_label,
            spi,
            source_port,
            dest_port,
            direction: if b3 & bit::D != 0 { Direction::Upstream } else { Direction::Downstream },
        })
    }

    /// The flow this MRI names, whichever way the signaling goes: its value
    /// as on the wire with the direction bit clear. A TRIGGER's signature
    /// covers these bytes (other requests cover [`Mri::to_bytes`], direction
    /// included), so it does not verify sent towards another flow, while its
    /// return leg (the same flow, upstream) does.
    /// `None` for fields that cannot go on the wire (mixed address families,
    /// ports without a protocol, ...).
    pub fn flow_bytes(&self) -> Option<Vec<u8>> {
        let mut flow = self.clone();
        flow.direction = Direction::Downstream;
        flow.to_bytes()
    }

    /// The MRI's value as on the wire, direction included.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(44);
        self.encode(&mut out)?;
        Some(out)
    }

    /// Appends the object value. `None` when the fields break the §A.3.1.1
    /// rules (mixed address families, ports without a protocol, ...).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        let v6 = match (self.source, self.destination) {
            (IpAddr::V4(_), IpAddr::V4(_)) => false,
            (IpAddr::V6(_), IpAddr::V6(_)) => true,
            _ => return None,
        };
        let needs_protocol = self.spi.is_some() || self.source_port.is_some() || self.dest_port.is_some();
        if (self.flow_label.is_some() && !v6) || (needs_protocol && self.protocol.is_none()) {
            return None;
        }
        let mut b2 = if v6 { 6 << 4 } else { 4 << 4 };
        let mut b3 = 0;
        let set = |v: &mut u8, on: bool, bit: u8| {
            if on {
                *v |= bit;
            }
        };
        set(&mut b2, self.protocol.is_some(), bit::P);
        set(&mut b2, self.ds_field.is_some(), bit::T);
        set(&mut b2, self.flow_label.is_some(), bit::F);
        set(&mut b2, self.spi.is_some(), bit::S);
        set(&mut b3, self.source_port.is_some(), bit::A);
        set(&mut b3, self.dest_port.is_some(), bit::B);
        set(&mut b3, self.direction == Direction::Upstream, bit::D);
        out.extend_from_slice(&[MRM_PATH_COUPLED, 0, b2, b3]);
        for ip in [self.source, self.destination] {
            match ip {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        out.extend_from_slice(&[
            self.source_prefix,
            self.dest_prefix,
            self.protocol.unwrap_or(0),
            self.ds_field.unwrap_or(0) << 2,
        ]);
        if let Some(fl) = self.flow_label {
            out.extend_from_slice(&(fl & 0x000f_ffff).to_be_bytes());
        }
        if let Some(spi) = self.spi {
            out.extend_from_slice(&spi.to_be_bytes());
        }
        if self.source_port.is_some() || self.dest_port.is_some() {
            out.extend_from_slice(&self.source_port.unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&self.dest_port.unwrap_or(0).to_be_bytes());
        }
        Some(())
    }
}

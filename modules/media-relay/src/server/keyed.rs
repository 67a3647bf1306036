//! The hash the relay's maps use. std's `RandomState` draws its keys from
//! the OS, which a guest cannot reach (the import traps); a fixed key would
//! let a client pick addresses and usernames that collide. So: SipHash-1-3
//! keyed from the instance's random key.

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher13;
use std::collections::HashMap;
use std::hash::BuildHasher;

#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    k0: u64,
    k1: u64,
}

impl Keyed {
    /// Hash keys derived from (not equal to) the instance key.
    pub fn from_instance_key(key: &[u8; 32]) -> Self {
        let d = Sha256::new_with_prefix(b"netserv media-relay map keys").chain_update(key).finalize();
        let word = |i: usize| u64::from_le_bytes(d.get(i..i + 8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]));
        Self { k0: word(0), k1: word(8) }
    }
}

impl BuildHasher for Keyed {
    type Hasher = SipHasher13;
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

pub type Map<K, V> = HashMap<K, V, Keyed>;

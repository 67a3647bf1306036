//! A bounded set of recent transactions (hashes): a ring of insertion order
//! and a set for lookups. The oldest goes when it is full.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher};

/// The std hasher with fixed keys: the default one draws its keys from WASI
/// randomness, which the sandbox does not offer (the keys are hashes already).
type Fixed = BuildHasherDefault<DefaultHasher>;

pub struct Recent {
    cap: usize,
    order: VecDeque<u64>,
    set: HashSet<u64, Fixed>,
}

impl Recent {
    pub fn new(cap: usize) -> Self {
        Self { cap, order: VecDeque::with_capacity(cap), set: HashSet::with_capacity_and_hasher(cap, Fixed::default()) }
    }

    pub fn insert(&mut self, t: u64) {
        if !self.set.insert(t) {
            return;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(t);
    }

    pub fn contains(&self, t: u64) -> bool {
        self.set.contains(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_goes_when_full() {
        let mut r = Recent::new(2);
        r.insert(1);
        r.insert(2);
        r.insert(2);
        r.insert(3);
        assert!(!r.contains(1) && r.contains(2) && r.contains(3));
    }
}

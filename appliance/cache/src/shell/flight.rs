//! Request coalescing: one origin fetch per key in flight, however many
//! clients miss at once (nginx's `proxy_cache_lock`, Varnish's waiting
//! list). The first client leads; the others wait for the fetch's head and
//! then read the same body as it fills.

use super::store::Variant;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Where an origin fetch stands.
#[derive(Debug, Clone)]
pub enum Landing {
    Pending,
    /// The origin answered. `shared`: storable, so a coalesced client whose
    /// `Vary` fields match may use it. `origin_error`: a 5xx, which a client
    /// holding a stale object inside stale-if-error answers with that instead.
    Answered {
        variant: Arc<Variant>,
        shared: bool,
        origin_error: bool,
    },
    /// No answer: connect, timeout.
    Failed(Arc<str>),
}

#[derive(Debug)]
pub struct Flight {
    tx: watch::Sender<Landing>,
}

impl Flight {
    pub fn land(&self, landing: Landing) {
        self.tx.send_replace(landing);
    }

    /// Waits for the fetch's head (or its failure).
    pub async fn landed(&self) -> Landing {
        let mut rx = self.tx.subscribe();
        match rx.wait_for(|l| !matches!(l, Landing::Pending)).await {
            Ok(l) => l.clone(),
            Err(_) => Landing::Failed("the origin fetch was dropped".into()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
}

impl Flights {
    /// The flight for `key`, and whether the caller leads it (must start the fetch).
    pub fn join(&self, key: &str) -> (Arc<Flight>, bool) {
        let mut map = self.map.lock();
        if let Some(f) = map.get(key) {
            return (Arc::clone(f), false);
        }
        let (tx, _) = watch::channel(Landing::Pending);
        let f = Arc::new(Flight { tx });
        map.insert(key.into(), Arc::clone(&f));
        (f, true)
    }

    /// Whether a fetch for `key` is under way (a background refresh needs no second).
    pub fn in_flight(&self, key: &str) -> bool {
        self.map.lock().contains_key(key)
    }

    /// The fetch landed: later clients find the store (or lead a new fetch).
    pub fn end(&self, key: &str, flight: &Arc<Flight>) {
        let mut map = self.map.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
    }
}

//! Per-tenant slots counted in a shared map: a module between its limit
//! check and its insertion, or a download in flight. Released on drop, so
//! that every early return of an install gives its slot back.

/// A tenant's module between its limit check and its insertion (counted
/// as installed until dropped), or one of its downloads in flight.
pub(super) struct Reservation<'a> {
    reserved: &'a parking_lot::Mutex<std::collections::HashMap<String, usize>>,
    tenant: String,
}

impl<'a> Reservation<'a> {
    pub(super) fn new(
        reserved: &'a parking_lot::Mutex<std::collections::HashMap<String, usize>>,
        tenant: &str,
    ) -> Self {
        *reserved.lock().entry(tenant.to_owned()).or_default() += 1;
        Self { reserved, tenant: tenant.to_owned() }
    }

    /// A slot when the tenant holds fewer than `cap`.
    pub(super) fn try_new(
        reserved: &'a parking_lot::Mutex<std::collections::HashMap<String, usize>>,
        tenant: &str,
        cap: usize,
    ) -> Option<Self> {
        let mut r = reserved.lock();
        let n = r.entry(tenant.to_owned()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        drop(r);
        Some(Self { reserved, tenant: tenant.to_owned() })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut r = self.reserved.lock();
        if let Some(n) = r.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                r.remove(&self.tenant);
            }
        }
    }
}

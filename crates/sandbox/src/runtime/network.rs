//! Pod addresses: one loopback address per pod, picked at random so that runtimes in parallel
//! processes (tests) rarely pick the same one, and never reused while a pod holds it.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use rand::RngExt;

/// The pod network and the addresses in use in it.
pub(crate) struct Addresses {
    first: u32,
    size: u32,
    in_use: Mutex<HashSet<Ipv4Addr>>,
}

impl Addresses {
    /// The range `base/prefix_len`, or `None` unless it is inside 127.0.0.0/8 with room.
    pub fn new(base: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if !(8..=30).contains(&prefix_len) || base.octets()[0] != 127 {
            return None;
        }
        let size = 1u32 << (32 - prefix_len);
        let first = u32::from(base) & !(size - 1);
        Some(Self {
            first,
            size,
            in_use: Mutex::new(HashSet::new()),
        })
    }

    /// Reserves `wanted` if it is in the range and free (a pod keeping its address across a
    /// runtime restart), else a random free address.
    pub fn reserve(&self, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wanted) = wanted
            && self.contains(wanted)
            && in_use.insert(wanted)
        {
            return Some(wanted);
        }
        let mut rng = rand::rng();
        // The network and broadcast addresses are left out, as on a real pod network.
        for _ in 0..1024 {
            let offset = rng.random_range(1..self.size - 1);
            let address = Ipv4Addr::from(self.first + offset);
            if in_use.insert(address) {
                return Some(address);
            }
        }
        None
    }

    /// Frees an address once its pod's processes are gone.
    pub fn release(&self, address: Ipv4Addr) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        in_use.remove(&address);
    }

    fn contains(&self, address: Ipv4Addr) -> bool {
        let value = u32::from(address);
        value > self.first && value < self.first + self.size - 1
    }
}

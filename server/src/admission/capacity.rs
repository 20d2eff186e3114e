//! How many connections this instance holds, in all and per client address.
//! A connection takes a [`Slot`] and gives it back when the slot is dropped,
//! wherever the connection ends.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Why there is no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `MAX_CONNECTIONS` are open.
    Instance,
    /// `MAX_CONNECTIONS_PER_IP` are open from this address.
    Address,
}

impl Full {
    /// What the refused client reads.
    pub fn reason(self) -> &'static str {
        match self {
            Full::Instance => "server full: too many connections, try again later",
            Full::Address => "too many connections from your address",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Full::Instance => "instance_full",
            Full::Address => "address_full",
        }
    }
}

pub struct Capacity {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Capacity {
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Capacity {
            max_total,
            max_per_address,
            open: Mutex::default(),
        })
    }

    /// A place for a connection from `ip`, within both limits.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        self.take(ip, true)
    }

    /// A place for a connection from `ip` within the total only: a trusted
    /// proxy carries many clients, each counted by its forwarded address.
    pub fn acquire_unlimited_address(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        self.take(ip, false)
    }

    fn take(self: &Arc<Self>, ip: IpAddr, limit_address: bool) -> Result<Slot, Full> {
        let address = crate::identity::address_block(ip);
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            return Err(Full::Instance);
        }
        let count = open.per_address.entry(address).or_default();
        if limit_address && *count >= self.max_per_address {
            return Err(Full::Address);
        }
        *count += 1;
        open.total += 1;
        Ok(Slot {
            capacity: self.clone(),
            address,
        })
    }

    fn release(&self, address: IpAddr) {
        let mut open = self.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_address.get_mut(&address) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&address);
            }
        }
    }
}

/// One open connection's place; dropping it frees the place.
pub struct Slot {
    capacity: Arc<Capacity>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.release(self.address);
    }
}

/// Files kept for everything but client connections: Redis links (one per
/// node and partition in a cluster), listeners, logs, the runtime.
const RESERVED_FILES: u64 = 256;

/// `max_total` connections, or fewer if the open-files limit (raised to its
/// hard ceiling first) cannot hold them: a connection past that limit would
/// make every accept fail, for everybody.
pub fn fit_open_files(max_total: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "cannot read the open-files limit");
            return max_total;
        }
    };
    let room = limit.saturating_sub(RESERVED_FILES).max(1);
    if max_total as u64 > room {
        tracing::warn!(
            max_connections = max_total,
            open_files_limit = limit,
            using = room,
            "MAX_CONNECTIONS is above what the open-files limit holds; \
             raise it (ulimit -n, LimitNOFILE=) to use more"
        );
        return room as usize;
    }
    max_total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_slots_come_back_when_dropped() {
        let capacity = Capacity::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = capacity.acquire(a).unwrap();
        let _a2 = capacity.acquire(a).unwrap();
        assert_eq!(capacity.acquire(a).err(), Some(Full::Address));
        let _b1 = capacity.acquire(b).unwrap();
        assert_eq!(capacity.acquire(b).err(), Some(Full::Instance));
        drop(a1);
        let _b2 = capacity.acquire(b).unwrap();
        assert_eq!(capacity.acquire(a).err(), Some(Full::Instance));
    }

    #[test]
    fn a_proxy_is_held_to_the_total_only() {
        let capacity = Capacity::new(2, 1);
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let _one = capacity.acquire_unlimited_address(proxy).unwrap();
        let _two = capacity.acquire_unlimited_address(proxy).unwrap();
        assert_eq!(
            capacity.acquire_unlimited_address(proxy).err(),
            Some(Full::Instance)
        );
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let capacity = Capacity::new(10, 1);
        let _one = capacity.acquire("2001:db8::1".parse().unwrap()).unwrap();
        let same_64 = capacity.acquire("2001:db8::ffff:1".parse().unwrap());
        assert_eq!(same_64.err(), Some(Full::Address));
        assert!(capacity.acquire("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}

//! The keepalive of every connection of one protocol, kept by one sweeper:
//! at each ping interval it asks each connection's writer for a ping and
//! closes a client silent for too long ([`Watched::tick`]), and at the
//! shutdown it closes them all. A timer per connection cost each idle
//! connection its timer (112 bytes) and the wait on the shutdown signal
//! (72 more, in its future); a place in this list costs it 16. The pings
//! of all connections now leave together, once per interval.

use crate::fanout::{Peer, Watched};
use parking_lot::Mutex;
use slab::Slab;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// One protocol's connections, as their keepalive holds them.
#[derive(Clone)]
pub struct Keepalive {
    watched: Arc<Mutex<List>>,
}

struct List {
    peers: Slab<Watched>,
    /// The shutdown came: a connection that comes later is closed at once.
    shut: bool,
}

impl Keepalive {
    /// Starts the sweeper: a ping every `interval`, every connection closed
    /// when `shutdown` fires. It stops when the last handle is dropped.
    pub fn start(interval: Duration, shutdown: CancellationToken) -> Self {
        let watched = Arc::new(Mutex::new(List {
            peers: Slab::new(),
            shut: false,
        }));
        tokio::spawn(sweep(Arc::downgrade(&watched), interval, shutdown));
        Keepalive { watched }
    }

    /// Keeps `peer` alive until the returned guard is dropped.
    pub fn watch(&self, peer: &Peer) -> Watching<'_> {
        let mut list = self.watched.lock();
        let watched = peer.watched();
        if list.shut {
            watched.shut();
        }
        let key = list.peers.insert(watched);
        Watching {
            keepalive: self,
            key,
        }
    }
}

/// A connection's place in its keepalive's list.
pub struct Watching<'a> {
    keepalive: &'a Keepalive,
    key: usize,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut list = self.keepalive.watched.lock();
        list.peers.remove(self.key);
        // A crowd that left gives its room back.
        if list.peers.is_empty() {
            list.peers = Slab::new();
        }
    }
}

async fn sweep(watched: Weak<Mutex<List>>, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let shut = tokio::select! {
            _ = ticks.tick() => false,
            () = shutdown.cancelled() => true,
        };
        let Some(watched) = watched.upgrade() else {
            return;
        };
        let mut list = watched.lock();
        if shut {
            list.shut = true;
            list.peers.iter().for_each(|(_, peer)| peer.shut());
            return;
        }
        list.peers.iter().for_each(|(_, peer)| peer.tick());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{close, Kind};

    #[tokio::test]
    async fn the_shutdown_closes_every_connection_and_any_that_comes_later() {
        let shutdown = CancellationToken::new();
        let keepalive = Keepalive::start(Duration::from_secs(60), shutdown.clone());
        let (before, _queue) = Peer::new(Kind::Relay, 8);
        let _watching = keepalive.watch(&before);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !before.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("closed by the shutdown");
        assert_eq!(before.close_reason(), close::SHUTDOWN);
        let (after, _queue) = Peer::new(Kind::Chat, 8);
        let _watching = keepalive.watch(&after);
        assert_eq!(after.close_reason(), close::SHUTDOWN);
    }

    #[tokio::test]
    async fn a_silent_client_is_pinged_then_closed_and_one_that_speaks_stays() {
        let every = Duration::from_millis(100);
        let keepalive = Keepalive::start(every, CancellationToken::new());
        let (silent, silent_queue) = Peer::new(Kind::Relay, 8);
        let (talking, talking_queue) = Peer::new(Kind::Relay, 8);
        let _watching = (keepalive.watch(&silent), keepalive.watch(&talking));
        let mut pinged = false;
        // The handshake counts as a word: a ping first, the close later.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !silent.is_closed() {
                pinged |= silent_queue.take_ping_due();
                talking.heard();
                tokio::time::sleep(every / 10).await;
            }
        })
        .await
        .expect("a silent client is closed");
        assert!(pinged, "pinged before it was closed");
        assert_eq!(silent.close_reason(), close::PING_TIMEOUT);
        assert!(!talking.is_closed());
        assert!(talking_queue.take_ping_due());
    }
}

//! The broker in this process's memory: the embedded default (one
//! instance), and several in-process instances sharing one [`Shared`] in
//! tests, which then see each other's frames, streams and presence exactly
//! as instances sharing a Redis do.

mod backup;
pub(crate) mod durable;
mod hooks;
mod log;
mod presence;
mod streams;
mod trim;
mod writer;

use super::retention::Retention;
use super::{
    BrokerError, Claimed, Directory, Envelope, Holder, Inbox, InstanceEntry, Link, LinkStatus,
    Mode, Presence, PubSub, Refreshed, RelayClient, RoomEntry, RoomIndex, Roster, Seat,
};
use crate::fanout::{ConnId, Topic};
use anyhow::Context;
use async_trait::async_trait;
use durable::Store;
use hooks::Hooks;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use presence::{Caller, Presence as Registry};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use streams::MemoryStreams;
use uuid::Uuid;
use writer::Writer;

/// What the instances of one process share. Cloning shares it.
#[derive(Clone, Default)]
pub struct Shared(Arc<Inner>);

#[derive(Default)]
struct Inner {
    streams: Arc<MemoryStreams>,
    /// Durable mode: the data file, and its writer.
    store: Option<Arc<Store>>,
    writer: Option<Writer>,
    presence: Mutex<Registry>,
    instances: RwLock<Vec<Arc<Joined>>>,
    /// The instances' lines ([`Broker::announce`]).
    lines: Mutex<HashMap<Uuid, InstanceEntry>>,
    hooks: Mutex<Hooks>,
}

/// One instance using the shared memory: where its frames go, and what it
/// follows.
struct Joined {
    id: Uuid,
    inbox: Arc<dyn Inbox>,
    topics: Mutex<HashMap<Topic, usize>>,
}

impl Joined {
    fn follows(&self, topic: &Topic) -> bool {
        self.topics.lock().contains_key(topic)
    }
}

impl Shared {
    /// Memory whose rooms are kept in the data file in `dir` (`DATA_DIR`);
    /// a process still holding it (the old one of a reload) is waited for
    /// up to `wait`.
    pub fn durable(
        dir: &Path,
        port: u16,
        wait: Duration,
        retention: Retention,
    ) -> anyhow::Result<Shared> {
        let store = Arc::new(Store::open(dir, port, wait)?);
        let hooks = store
            .hook_cursors()
            .with_context(|| format!("cannot read {}", store.path.display()))?;
        let streams = Arc::new(MemoryStreams::durable(store.clone()));
        let nudge = trim::start(&streams, Some(&store), retention);
        Ok(Shared(Arc::new(Inner {
            streams,
            writer: Some(Writer::start(store.clone(), nudge)),
            store: Some(store),
            hooks: Mutex::new(Hooks::restored(hooks)),
            ..Inner::default()
        })))
    }

    /// Memory alone (`DATA_DIR=memory`), its rooms trimmed to `retention`.
    pub fn in_memory(retention: Retention) -> Shared {
        let shared = Shared::default();
        trim::start(&shared.0.streams, None, retention);
        shared
    }

    /// The registered relay clients of an action, on every instance.
    pub fn relay_clients(&self, action: &str) -> Vec<ConnId> {
        self.0.presence.lock().clients(action)
    }

    /// How many instances use this memory now (a stopped one leaves).
    pub fn joined(&self) -> usize {
        self.instances().len()
    }

    fn instances(&self) -> RwLockReadGuard<'_, Vec<Arc<Joined>>> {
        self.0.instances.read()
    }

    /// Writes changes already made in memory to the data file, if there
    /// is one.
    async fn write(&self, changes: Vec<durable::Change>) -> Result<(), BrokerError> {
        match &self.0.writer {
            Some(writer) => writer.write(changes).await,
            None => Ok(()),
        }
    }

    /// Hands something to every other instance that `wants` it.
    fn each_other(&self, me: Uuid, wants: impl Fn(&Joined) -> bool, give: impl Fn(&dyn Inbox)) {
        let instances = self.instances();
        if instances.len() < 2 {
            return;
        }
        for joined in instances.iter() {
            if joined.id != me && wants(joined) {
                give(joined.inbox.as_ref());
            }
        }
    }
}

pub struct MemoryBroker {
    shared: Shared,
    me: Arc<Joined>,
    status: LinkStatus,
    /// How long this instance's presence lives without a refresh.
    ttl: Duration,
}

impl MemoryBroker {
    /// Joins the shared memory as `instance`; what the others publish goes
    /// to `inbox`.
    pub fn join(shared: &Shared, instance: Uuid, ttl: Duration, inbox: Arc<dyn Inbox>) -> Self {
        let me = Arc::new(Joined {
            id: instance,
            inbox,
            topics: Mutex::default(),
        });
        let mut instances = shared.0.instances.write();
        instances.push(me.clone());
        MemoryBroker {
            shared: shared.clone(),
            me,
            status: LinkStatus::in_memory(),
            ttl,
        }
    }

    fn caller(&self) -> Caller {
        let now = Instant::now();
        Caller {
            instance: self.me.id,
            now,
            until: now + self.ttl,
        }
    }

    fn presence(&self) -> MutexGuard<'_, Registry> {
        self.shared.0.presence.lock()
    }

    fn hooks(&self) -> MutexGuard<'_, Hooks> {
        self.shared.0.hooks.lock()
    }

    fn last_of(&self, last_here: bool) -> Option<Uuid> {
        last_here.then_some(self.me.id)
    }
}

/// A stopped instance gets nothing more; its presence stays until it
/// expires, as a crashed instance's does in Redis.
impl Drop for MemoryBroker {
    fn drop(&mut self) {
        let mut instances = self.shared.0.instances.write();
        instances.retain(|joined| !Arc::ptr_eq(joined, &self.me));
    }
}

#[async_trait]
impl Link for MemoryBroker {
    fn mode(&self) -> Mode {
        Mode::Memory
    }

    fn status(&self) -> &LinkStatus {
        &self.status
    }

    fn shared(&self) -> bool {
        self.shared.instances().len() > 1
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
impl PubSub for MemoryBroker {
    fn follow(&self, topic: &Topic) {
        *self.me.topics.lock().entry(topic.clone()).or_default() += 1;
    }

    /// Frames go to the followers as they are published: live at once.
    async fn live(&self, _topic: &Topic) {}

    fn unfollow(&self, topic: &Topic) {
        let mut topics = self.me.topics.lock();
        if let Some(count) = topics.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                topics.remove(topic);
            }
        }
    }

    async fn publish(&self, topic: &Topic, envelope: Envelope) -> Result<(), BrokerError> {
        let wants = |joined: &Joined| joined.follows(topic);
        self.shared
            .each_other(self.me.id, wants, |inbox| inbox.frame(topic, &envelope));
        Ok(())
    }

    async fn presence_changed(&self, room: &str) {
        self.shared
            .each_other(self.me.id, |_| true, |inbox| inbox.presence_changed(room));
    }
}

#[async_trait]
impl Presence for MemoryBroker {
    async fn holder(&self, room: &str, key: &str) -> Result<Option<Holder>, BrokerError> {
        Ok(self.presence().holder(room, key))
    }

    async fn claim(
        &self,
        seat: Seat<'_>,
        previous_key: Option<&str>,
    ) -> Result<Claimed, BrokerError> {
        let caller = self.caller();
        Ok(self.presence().claim(seat, previous_key, caller))
    }

    async fn leave(&self, seat: Seat<'_>, last_here: bool) -> Result<bool, BrokerError> {
        let last_of = self.last_of(last_here);
        Ok(self.presence().leave(seat, last_of))
    }

    async fn roster(&self, room: &str, shown: usize) -> Result<Roster, BrokerError> {
        Ok(self.presence().roster(room, shown, Instant::now()))
    }

    async fn refresh_room(&self, room: &str) -> Result<Refreshed, BrokerError> {
        let caller = self.caller();
        Ok(self.presence().refresh_room(room, caller))
    }

    async fn depart_room(&self, room: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self.presence().depart_room(room, self.me.id))
    }

    async fn register(&self, action: &str, id: ConnId, data: &str) -> Result<(), BrokerError> {
        let caller = self.caller();
        self.presence().register(action, id, data, caller);
        Ok(())
    }

    async fn unregister(&self, action: &str, id: ConnId, last: bool) -> Result<(), BrokerError> {
        let last_of = self.last_of(last);
        self.presence().unregister(action, id, last_of);
        Ok(())
    }

    async fn refresh_action(&self, action: &str) -> Result<Refreshed, BrokerError> {
        let caller = self.caller();
        Ok(self.presence().refresh_action(action, caller))
    }

    async fn relay_clients(&self, action: &str) -> Result<Vec<RelayClient>, BrokerError> {
        Ok(self.presence().registered(action))
    }

    async fn depart_action(&self, action: &str) -> Result<(), BrokerError> {
        self.presence().depart_action(action, self.me.id);
        Ok(())
    }
}

#[async_trait]
impl Directory for MemoryBroker {
    async fn index_room(&self, room: &str, entry: RoomEntry) -> Result<(), BrokerError> {
        self.presence().index_room(room, entry);
        Ok(())
    }

    async fn room_index(&self, now_ms: u64) -> Result<RoomIndex, BrokerError> {
        Ok(self.presence().room_index(now_ms))
    }

    async fn announce(&self, entry: &InstanceEntry) -> Result<(), BrokerError> {
        self.shared.0.lines.lock().insert(entry.id, entry.clone());
        Ok(())
    }

    async fn instances(&self, now_ms: u64) -> Result<Vec<InstanceEntry>, BrokerError> {
        let mut lines = self.shared.0.lines.lock();
        lines.retain(|_, line| line.is_fresh(now_ms));
        Ok(lines.values().cloned().collect())
    }
}

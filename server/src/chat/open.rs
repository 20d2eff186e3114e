//! What a new chat connection is sent first: the room's history from
//! where the client resumes, the count, the online list and the room list,
//! with nothing missed or sent twice in between.

use super::resume::{self, history_frames, Resume, Snapshot};
use super::{encode, Chat};
use crate::broker::{self, stamp, Subscription};
use crate::fanout::{ConnId, Peer, Topic};
use crate::ws::{self, Preamble};
use app::protocol::ServerEvent;

impl Chat {
    /// Listens to the room, then reads its stream: an event published in
    /// between is never missed, and the preamble's filter keeps it from
    /// being sent twice. Returns what the connection is sent first, and
    /// the instance's subscription to the room for this connection.
    pub(super) async fn open(
        &self,
        room: &str,
        id: ConnId,
        peer: &Peer,
        resume: &Resume,
    ) -> (Preamble, Subscription) {
        self.feeds.listen(room, id, peer.clone());
        let subscription = broker::subscribe(&self.broker, Topic::Room(room.into())).await;
        let snapshot = match self.broker.read(room).await {
            Ok(stored) => {
                let snapshot = resume::resume(stored, resume);
                let snapshot = self.catch_up(room, resume, snapshot).await;
                self.feeds.start(room, &snapshot);
                snapshot
            }
            Err(err) => {
                tracing::warn!(conn = %id, room, error = %err, "cannot read the room's history");
                self.feeds.repair(room);
                Snapshot::unavailable()
            }
        };
        let (online, rooms) = self.counts.snapshot(self, room).await;
        // Written before anything queued meanwhile, which follows in order
        // (minus the events the history already holds).
        let mut frames = history_frames(&snapshot);
        frames.extend([
            encode(&ServerEvent::Count {
                count: online.count,
            }),
            encode(&online.event()),
            encode(&ServerEvent::Rooms { rooms }),
        ]);
        let preamble = Preamble {
            frames,
            fresh: Some(after_history(snapshot.epoch, snapshot.offset)),
        };
        (preamble, subscription)
    }

    /// A client further behind than the history held in memory: the rest
    /// from the broker's longer store (the embedded default's data file),
    /// when it holds all of it.
    async fn catch_up(&self, room: &str, resume: &Resume, snapshot: Snapshot) -> Snapshot {
        let Resume::Since(from) = resume else {
            return snapshot;
        };
        if snapshot.recovered || from.epoch != snapshot.epoch || from.offset >= snapshot.offset {
            return snapshot;
        }
        match self.broker.since(room, from.offset, snapshot.offset).await {
            Ok(Some(events)) if events.len() as u64 == snapshot.offset - from.offset => Snapshot {
                events,
                recovered: true,
                ..snapshot
            },
            Ok(_) => snapshot,
            Err(err) => {
                tracing::warn!(room, error = %err, "cannot read the missed events");
                snapshot
            }
        }
    }
}

/// Drops the room events up to where a new connection's history ended:
/// events published while the history was read arrive live too, and a
/// reconnecting client gets each missed event once. Room events arrive in
/// offset order, so the first one past the history ends the check.
fn after_history(epoch: String, offset: u64) -> ws::Fresh {
    let mut covered = Some((epoch, offset));
    Box::new(move |frame: &str| {
        let Some((until_epoch, until)) = &covered else {
            return true;
        };
        match stamp::position(frame) {
            None => true,
            Some((epoch, at)) if epoch == until_epoch && at <= *until => false,
            Some(_) => {
                covered = None;
                true
            }
        }
    })
}

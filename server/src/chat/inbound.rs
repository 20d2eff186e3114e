//! An instance's inbox: where what the broker brings from the other
//! instances goes: room events
//! to the room feeds (which put them in order), other frames straight to
//! the local listeners (orders to one connection carried out), presence
//! changes to the counts.

use super::{Counts, Feeds};
use crate::broker::{Envelope, Inbox};
use crate::fanout::{Hub, Topic};
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;

pub struct Inbound {
    pub hub: Arc<Hub>,
    pub feeds: Arc<Feeds>,
    pub counts: Arc<Counts>,
}

impl Inbox for Inbound {
    fn room_event(&self, room: &str, frame: Utf8Bytes) {
        self.feeds.offer(room, frame);
    }

    fn frame(&self, topic: &Topic, envelope: &Envelope) {
        if super::control::carry_out(&self.hub, topic, &envelope.frame) {
            return;
        }
        self.hub.deliver(topic, &envelope.frame, envelope.except);
    }

    fn presence_changed(&self, room: &str) {
        self.counts.mark(room);
    }

    fn missed(&self, room: &str) {
        self.feeds.repair(room);
    }

    fn reconnected(&self) {
        self.counts.mark_all(&self.hub);
    }
}

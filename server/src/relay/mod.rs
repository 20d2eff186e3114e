//! The action relay, wire-compatible with the original Node `ws` server.
//!
//! The first frame registers: a JSON object with a non-empty string
//! `action`. The client gets an id, recorded under the action in the
//! broker, and from then on every JSON frame it sends is forwarded byte for
//! byte to every other client of the same action, on every instance
//! ([`session`]).

mod session;

use crate::admission::Guard;
use crate::auth;
use crate::broker::{Broker, BrokerError, Envelope};
use crate::fanout::{Hub, Kind, Topic};
use crate::presence::Presence;
use crate::webhook::Outbox;
use crate::ws;
use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// What the relay's connections share.
pub struct Relay {
    /// This instance's id, in what it publishes.
    pub instance: Uuid,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<Presence>,
    pub hub: Arc<Hub>,
    pub guard: Arc<Guard>,
    /// Relay access tokens, when `RELAY_AUTH=required`.
    pub auth: Option<auth::Verifier>,
    /// Frame size, keepalive, frame and byte rates of each connection.
    pub limits: ws::Limits,
    /// Frames queued for a connection before it counts as too slow.
    pub outbound_queue: usize,
    /// Cancelled on SIGTERM/SIGINT: every socket closes with 1012.
    pub shutdown: CancellationToken,
    /// Every connection's task, so that a drain can wait for them.
    pub tasks: TaskTracker,
    /// Records registrations for the webhook (`WEBHOOK_URL`).
    pub outbox: Option<Outbox>,
}

impl Relay {
    /// Hands a frame from the backend to every client of the action on
    /// every instance, as it is; fails when the other instances cannot be
    /// reached (this one's clients have it).
    pub async fn forward(&self, action: &str, frame: Utf8Bytes) -> Result<(), BrokerError> {
        let topic = Topic::Action(action.into());
        self.hub.deliver(&topic, &frame, None);
        let envelope = Envelope::new(self.instance, None, frame);
        self.broker.publish(&topic, envelope).await
    }
}

pub async fn upgrade(
    ws: ws::Upgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    State(relay): State<Arc<Relay>>,
) -> Response {
    let slot = match relay
        .guard
        .admit(Kind::Relay, &headers, peer, &relay.shutdown)
    {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let (max, tasks) = (relay.limits.max_message_bytes, relay.tasks.clone());
    ws::accept(ws, max, &tasks, slot, move |socket| {
        session::run(relay, socket, bearer)
    })
}

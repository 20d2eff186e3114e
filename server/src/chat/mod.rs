//! The chat protocol on `/ws`: a connection listens to one room from the
//! start (history, live events, counts), then joins with a nickname to
//! speak. Frames are defined in `app::protocol`.
//!
//! - [`upgrade`] admits the socket; [`session`] is one connection's rules;
//! - [`announce`] puts events into a room's stream (and so in front of
//!   everybody, in one order), and acts on presence events;
//! - [`feed`] follows each room's stream for this instance's listeners, in
//!   offset order ([`sequencer`]), and repairs gaps;
//! - [`resume`] serves a reconnecting client what it missed;
//! - [`counts`] pushes counts, online lists and the room list, coalesced;
//! - [`crowd`] groups the joins and leaves of big rooms;
//! - [`query`] answers the server API's reads and posts;
//! - [`moderation`] deletes and edits messages and sets slow mode,
//!   `sanctions` kicks, bans and mutes, and
//!   [`control`] carries orders to one connection on any instance.

mod announce;
pub mod control;
pub mod counts;
mod crowd;
pub mod feed;
mod inbound;
pub mod moderation;
mod open;
pub mod query;
mod resume;
pub mod sanctions;
mod senders;
mod sequencer;
mod session;

use crate::admission::Guard;
use crate::auth;
use crate::broker::Broker;
use crate::fanout::{Hub, Kind};
use crate::identity::{self, Person};
use crate::metrics;
use crate::presence::{self, Presence};
use crate::supervise::{self, Restarts};
use crate::webhook::Outbox;
use crate::ws;
use app::protocol::{valid_room, Position, Pseudo, ServerEvent, DEFAULT_ROOM};
use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
pub use counts::Counts;
use crowd::Crowds;
pub use feed::Feeds;
use governor::{DefaultKeyedRateLimiter, Quota};
pub use inbound::Inbound;
use resume::Resume;
pub use resume::Snapshot;
use senders::Senders;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Serializes a server event once; the bytes go to every recipient.
pub fn encode(event: &ServerEvent) -> Utf8Bytes {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_string(event)
        .expect("server events serialize")
        .into()
}

/// The chat's limits, as configured.
pub struct Limits {
    /// Frame size, keepalive and frame rate of each connection.
    pub socket: ws::Limits,
    /// Frames queued for a connection before it counts as too slow.
    pub outbound_queue: usize,
    /// Nickname changes, per person.
    pub renames: Quota,
    /// Join attempts, per person.
    pub joins: Quota,
    /// Rooms opened, per client address.
    pub new_rooms: Quota,
    /// Messages, edits, deletions, typing and moderation, per person
    /// (across their connections and reconnects).
    pub actions: Quota,
}

/// What the chat's connections and tasks share.
pub struct Chat {
    /// This instance's id, in what it publishes.
    instance: Uuid,
    broker: Arc<dyn Broker>,
    presence: Arc<Presence>,
    hub: Arc<Hub>,
    feeds: Arc<Feeds>,
    counts: Arc<Counts>,
    crowds: Crowds,
    guard: Arc<Guard>,
    /// Chat access tokens, when `CHAT_AUTH=required`.
    auth: Option<auth::Verifier>,
    limits: Limits,
    /// Rooms opened per client address block (`NEW_ROOMS_PER_MIN`).
    new_rooms: DefaultKeyedRateLimiter<IpAddr>,
    /// Rate limits that follow a person across connections.
    senders: Senders,
    /// Cancelled on SIGTERM/SIGINT: every socket closes with 1012.
    shutdown: CancellationToken,
    /// Every connection's task, so that a drain can wait for them.
    tasks: TaskTracker,
    /// Marks rooms for the webhook before each append (`WEBHOOK_URL`).
    outbox: Option<Outbox>,
}

/// What [`Chat::new`] is built from.
pub struct Parts {
    pub instance: Uuid,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<Presence>,
    pub hub: Arc<Hub>,
    pub feeds: Arc<Feeds>,
    pub counts: Arc<Counts>,
    pub guard: Arc<Guard>,
    pub auth: Option<auth::Verifier>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub outbox: Option<Outbox>,
}

/// How often the keyed limiters forget the addresses and people that
/// stopped.
const NEW_ROOMS_SWEEP: Duration = Duration::from_secs(5);

impl Chat {
    pub fn new(parts: Parts) -> Arc<Self> {
        Arc::new(Chat {
            new_rooms: governor::RateLimiter::keyed(parts.limits.new_rooms),
            senders: Senders::new(&parts.limits),
            instance: parts.instance,
            broker: parts.broker,
            presence: parts.presence,
            hub: parts.hub,
            feeds: parts.feeds,
            counts: parts.counts,
            crowds: Crowds::default(),
            guard: parts.guard,
            auth: parts.auth,
            limits: parts.limits,
            shutdown: parts.shutdown,
            tasks: parts.tasks,
            outbox: parts.outbox,
        })
    }

    /// Runs the chat's background work, supervised: the counts (which
    /// also act on presence `events`), the crowds' announcements and the
    /// new-rooms limiter's sweep.
    pub fn spawn_tasks(
        self: &Arc<Self>,
        events: mpsc::UnboundedReceiver<presence::Event>,
        restarts: &Arc<Restarts>,
    ) {
        let events = Arc::new(tokio::sync::Mutex::new(events));
        supervise::spawn("counts", restarts.clone(), self.shutdown.clone(), {
            let chat = self.clone();
            move || counts::run(chat.clone(), events.clone())
        });
        supervise::spawn("orders", restarts.clone(), self.shutdown.clone(), {
            let chat = self.clone();
            move || {
                let chat = chat.clone();
                async move { chat.follow_orders().await }
            }
        });
        supervise::spawn("crowds", restarts.clone(), self.shutdown.clone(), {
            let chat = self.clone();
            move || {
                let chat = chat.clone();
                async move {
                    let mut every = tokio::time::interval(crowd::EVERY);
                    loop {
                        tokio::select! {
                            _ = chat.shutdown.cancelled() => return,
                            _ = every.tick() => chat.announce_crowds().await,
                        }
                    }
                }
            }
        });
        supervise::spawn("new-rooms", restarts.clone(), self.shutdown.clone(), {
            let chat = self.clone();
            move || {
                let chat = chat.clone();
                async move {
                    let mut sweep = tokio::time::interval(NEW_ROOMS_SWEEP);
                    loop {
                        tokio::select! {
                            _ = chat.shutdown.cancelled() => return,
                            _ = sweep.tick() => chat.sweep_limiters(),
                        }
                    }
                }
            }
        });
    }
}

impl Chat {
    /// Forgets the limiters' keys that are back to a full allowance.
    fn sweep_limiters(&self) {
        self.new_rooms.retain_recent();
        self.new_rooms.shrink_to_fit();
        metrics::table_size("new_rooms", self.new_rooms.len());
        self.senders.sweep();
    }
}

#[derive(Deserialize)]
pub struct ChatQuery {
    room: Option<String>,
    /// `<epoch>:<offset>`: the stream position the client reached; only
    /// later events are replayed.
    since: Option<String>,
    /// The newest event the client already has (before `since` existed).
    last_seen: Option<Uuid>,
    /// An access token, with `CHAT_AUTH=required`.
    token: Option<String>,
}

impl ChatQuery {
    fn resume(&self) -> Result<Resume, &'static str> {
        match (&self.since, self.last_seen) {
            (Some(since), _) => Position::from_query(since)
                .map(Resume::Since)
                .ok_or("since must be <epoch>:<offset>, as the stream's events carry them"),
            (None, Some(id)) => Ok(Resume::LastSeen(id)),
            (None, None) => Ok(Resume::Latest),
        }
    }
}

/// Where a new connection starts, as its request says.
struct Opening {
    room: String,
    resume: Resume,
    /// The nickname an access token gives, when tokens are required.
    name: Option<Pseudo>,
    /// The access token's roles include `moderator`.
    moderator: bool,
    /// Who connects: the access token's subject, or an anonymous address.
    person: Person,
    /// The client's address block (`identity::address_block`).
    address: IpAddr,
}

pub async fn upgrade(
    ws: ws::Upgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ChatQuery>, axum::extract::rejection::QueryRejection>,
    State(chat): State<Arc<Chat>>,
) -> Response {
    let slot = match chat.guard.admit(Kind::Chat, &headers, peer, &chat.shutdown) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let Ok(Query(query)) = query else {
        return Refused::Query("last_seen must be a message id (uuid)").into_response();
    };
    let opening = match chat.opening(query, peer.ip(), &headers) {
        Ok(opening) => Box::new(opening),
        Err(refused) => return refused.into_response(),
    };
    let (max, tasks) = (chat.limits.socket.max_message_bytes, chat.tasks.clone());
    ws::accept(ws, max, &tasks, slot, move |socket| {
        session::run(chat, socket, opening)
    })
}

impl Chat {
    /// Checks the request's room, position and (when required) token.
    fn opening(
        &self,
        query: ChatQuery,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Opening, Refused> {
        let resume = query.resume().map_err(Refused::Query)?;
        let room = query
            .room
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOM.to_owned());
        if !valid_room(&room) {
            let reason = "room must be 1 to 64 letters, digits, '-' or '_'";
            return Err(Refused::Query(reason));
        }
        let address = identity::address_block(self.guard.client_address(peer, headers));
        let (name, moderator, person) = match self.token_name(&query, &room)? {
            Some(Granted {
                name,
                moderator,
                subject,
            }) => (Some(name), moderator, Person::Subject(subject)),
            None => (None, false, Person::anonymous(address)),
        };
        Ok(Opening {
            room,
            resume,
            name,
            moderator,
            person,
            address,
        })
    }

    /// With CHAT_AUTH=required, the token's name is the only nickname this
    /// socket may take (and its roles may make it a moderator); refused
    /// before the WebSocket exists.
    fn token_name(&self, query: &ChatQuery, room: &str) -> Result<Option<Granted>, Refused> {
        let Some(verifier) = &self.auth else {
            return Ok(None);
        };
        let granted = query
            .token
            .as_deref()
            .ok_or(auth::Refused::Missing)
            .and_then(|token| verifier.verify(token))
            .and_then(|grant| {
                if !grant.allows_room(room) {
                    return Err(auth::Refused::OutOfScope);
                }
                let moderator = grant.is_moderator();
                let name = grant.name.as_deref().ok_or(auth::Refused::NoName)?;
                let subject = grant.sub.filter(|sub| !sub.is_empty());
                Ok(Granted {
                    name: Pseudo::parse(name).map_err(|_| auth::Refused::NoName)?,
                    moderator,
                    subject: subject.ok_or(auth::Refused::NoSubject)?,
                })
            });
        granted.map(Some).map_err(|refused| {
            metrics::error("chat", refused.label());
            Refused::Token(refused)
        })
    }
}

/// What a valid chat token grants.
struct Granted {
    name: Pseudo,
    moderator: bool,
    subject: String,
}

/// Why a chat socket is refused before it opens.
enum Refused {
    /// The query is not what the protocol says (400).
    Query(&'static str),
    /// The access token is missing, invalid or out of scope (401, 403).
    Token(auth::Refused),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Query(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
            Refused::Token(refused) => {
                let status = match refused {
                    auth::Refused::OutOfScope => StatusCode::FORBIDDEN,
                    _ => StatusCode::UNAUTHORIZED,
                };
                (status, refused.to_string()).into_response()
            }
        }
    }
}

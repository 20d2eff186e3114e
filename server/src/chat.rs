//! The chat protocol on `/ws`: a connection listens to one room from the
//! start (history, live messages, counts), then joins with a nickname to
//! speak. Frames are defined in `app::protocol`.

use crate::hub::{close, ConnId, Kind, Peer, Topic};
use crate::socket::{self, Handler};
use crate::store::{Claim, Member};
use crate::stream::{history_frame, Resume, StreamError};
use crate::throttle::{Throttle, Verdict};
use crate::{auth, encode, metrics, now_ms, AppState};
use app::protocol::{
    valid_room, ChatMessage, ClientMessage, ErrorCode, MessageText, Position, Pseudo, ServerEvent,
    SystemKind, SystemMessage, DEFAULT_ROOM,
};
use axum::extract::ws::{Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Typing frames relayed per connection at most this often (clients send
/// one every `TYPING_EVERY_MS`).
const TYPING_GAP: Duration = Duration::from_millis(1_000);

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

pub async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ChatQuery>, axum::extract::rejection::QueryRejection>,
    State(app): State<Arc<AppState>>,
) -> Response {
    let slot = match app.guard.admit(Kind::Chat, &headers, peer, &app.shutdown) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let Ok(Query(query)) = query else {
        return (
            StatusCode::BAD_REQUEST,
            "last_seen must be a message id (uuid)",
        )
            .into_response();
    };
    let resume = match query.resume() {
        Ok(resume) => resume,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    if !valid_room(&room) {
        return (
            StatusCode::BAD_REQUEST,
            "room must be 1 to 64 letters, digits, '-' or '_'",
        )
            .into_response();
    }
    // With CHAT_AUTH=required, the token's name is the only nickname this
    // socket may take; refused before the WebSocket exists.
    let name = match &app.chat_auth {
        None => None,
        Some(verifier) => {
            let granted = query
                .token
                .as_deref()
                .ok_or(auth::Refused::Missing)
                .and_then(|token| verifier.verify(token))
                .and_then(|grant| {
                    if !grant.allows_room(&room) {
                        return Err(auth::Refused::OutOfScope);
                    }
                    grant.name.ok_or(auth::Refused::NoName)
                });
            match granted.and_then(|name| Pseudo::parse(&name).map_err(|_| auth::Refused::NoName)) {
                Ok(name) => Some(name),
                Err(refused) => {
                    metrics::error("chat", refused.label());
                    let status = match refused {
                        auth::Refused::OutOfScope => StatusCode::FORBIDDEN,
                        _ => StatusCode::UNAUTHORIZED,
                    };
                    return (status, refused.to_string()).into_response();
                }
            }
        }
    };
    let address = app.guard.client_address(peer.ip(), &headers);
    let tracked = app.clone();
    socket::configure(ws, &app.config).on_upgrade(move |socket| {
        tracked.tasks.clone().track_future(async move {
            // The connection counts as open until its session ends.
            let _slot = slot;
            session(tracked, socket, room, resume, name, address).await;
        })
    })
}

async fn session(
    app: Arc<AppState>,
    socket: WebSocket,
    room: String,
    resume: Resume,
    name: Option<Pseudo>,
    address: IpAddr,
) {
    let id = Uuid::new_v4();
    let opened = Instant::now();
    let (peer, queue) = Peer::new(Kind::Chat, app.config.outbound_queue as usize);
    let topic = Topic::Room(room.clone());
    metrics::connection_opened(Kind::Chat);
    tracing::info!(conn = %id, kind = "chat", room, "connection opened");

    // Listen first, then read the stream: an event published in between
    // is never missed, and `Replayed` keeps it from being sent twice.
    app.bus.subscribe(&room, id, peer.clone()).await;
    let snapshot = match app.streams.read(&room).await {
        Ok(stored) => {
            let snapshot = crate::stream::resume(stored, &resume);
            app.bus.feeds().start(&room, &snapshot);
            snapshot
        }
        Err(err) => {
            tracing::warn!(conn = %id, room, error = %err, "cannot read the room's history");
            app.bus.feeds().repair(&room);
            crate::stream::Snapshot::unavailable()
        }
    };
    let (online, rooms) = app.counts.snapshot(&app, &room).await;
    // Written before anything queued meanwhile, which follows in order
    // (minus the events the history already holds).
    let preamble = socket::Preamble {
        frames: vec![
            history_frame(&snapshot),
            encode(&ServerEvent::Count {
                count: online.count,
            }),
            encode(&online.event()),
            encode(&ServerEvent::Rooms { rooms }),
        ],
        replayed: Some(socket::Replayed {
            epoch: snapshot.epoch,
            offset: snapshot.offset,
        }),
    };

    let mut chat = ChatSession {
        app: app.clone(),
        id,
        room,
        topic,
        peer: peer.clone(),
        member: None,
        name,
        renames: Throttle::new(app.limits.renames),
        joins: Throttle::new(app.limits.joins),
        address,
        typed: None,
    };
    let reason = socket::drive(
        socket,
        peer,
        queue,
        preamble,
        &mut chat,
        &app.limits,
        &app.shutdown,
    )
    .await;
    let pseudo = chat.member.as_ref().map(|m| m.pseudo.to_string());
    chat.leave().await;
    metrics::connection_closed(Kind::Chat);
    tracing::info!(
        conn = %id,
        kind = "chat",
        room = chat.room,
        pseudo,
        duration_ms = opened.elapsed().as_millis() as u64,
        reason,
        "connection closed"
    );
}

/// Chat actions with a bucket of their own (`JOIN_LIMIT_PER_MIN`,
/// `RENAME_LIMIT_PER_MIN`): each writes to Redis and a rename is announced
/// to the whole room, so they are held far below the frame rate.
#[derive(Clone, Copy)]
enum Limited {
    Join,
    Rename,
}

impl Limited {
    /// The `errors_total` label.
    fn label(self) -> &'static str {
        match self {
            Limited::Join => "join_limited",
            Limited::Rename => "rename_limited",
        }
    }

    /// The error message's start, and the close reason.
    fn reason(self) -> &'static str {
        match self {
            Limited::Join => "too many join attempts",
            Limited::Rename => "too many nickname changes",
        }
    }
}

struct ChatSession {
    app: Arc<AppState>,
    id: ConnId,
    room: String,
    topic: Topic,
    peer: Peer,
    member: Option<Member>,
    /// The nickname an access token gives, when tokens are required.
    name: Option<Pseudo>,
    renames: Throttle,
    joins: Throttle,
    /// The client's address, for `NEW_ROOMS_PER_MIN`.
    address: IpAddr,
    /// When this connection's last typing frame went out.
    typed: Option<Instant>,
}

impl Handler for ChatSession {
    const KIND: Kind = Kind::Chat;

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<(u16, &'static str)> {
        match ClientMessage::decode(&text) {
            Err(err) => self.refuse(err.code, err.message),
            Ok(ClientMessage::Join { pseudo, session }) => match self.joins.check() {
                Verdict::Allowed => self.join(&pseudo, session).await,
                verdict => return self.throttled(verdict, Limited::Join),
            },
            Ok(ClientMessage::Rename { pseudo }) => match self.renames.check() {
                Verdict::Allowed => self.rename(&pseudo).await,
                verdict => return self.throttled(verdict, Limited::Rename),
            },
            Ok(ClientMessage::Say { text }) => self.say(&text).await,
            Ok(ClientMessage::Typing) => self.typing().await,
        }
        None
    }

    fn error_frame(&self, code: ErrorCode, message: &str) -> Utf8Bytes {
        encode(&ServerEvent::Error {
            code,
            message: message.to_owned(),
        })
    }
}

impl ChatSession {
    /// Answers a join or rename over its limit; a client that keeps trying
    /// regardless is closed with 1008.
    fn throttled(&self, verdict: Verdict, limited: Limited) -> Option<(u16, &'static str)> {
        metrics::error("chat", limited.label());
        let message = match verdict {
            Verdict::Refused(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                format!("{}: try again in {} s", limited.reason(), secs.max(1))
            }
            Verdict::Allowed | Verdict::Abuse => format!("{}: closing", limited.reason()),
        };
        self.peer.send(encode(&ServerEvent::Error {
            code: ErrorCode::RateLimited,
            message,
        }));
        (verdict == Verdict::Abuse).then_some((close::POLICY, limited.reason()))
    }

    fn refuse(&self, code: ErrorCode, message: String) {
        metrics::error("chat", code.as_str());
        self.peer
            .send(encode(&ServerEvent::Error { code, message }));
    }

    fn confirm(&self, member: &Member) {
        self.peer.send(encode(&ServerEvent::Joined {
            pseudo: member.pseudo.to_string(),
            session: member.session,
            room: self.room.clone(),
        }));
    }

    async fn join(&mut self, raw: &str, session: Option<Uuid>) {
        if let Some(member) = &self.member {
            let message = format!(
                "already joined as {}: send rename to change nickname",
                member.pseudo
            );
            return self.refuse(ErrorCode::AlreadyJoined, message);
        }
        let pseudo = match (&self.name, Pseudo::parse(raw)) {
            // Whatever was asked for: nobody speaks as somebody else.
            (Some(name), _) => name.clone(),
            (None, Ok(pseudo)) => pseudo,
            (None, Err(err)) => return self.refuse(ErrorCode::InvalidPseudo, err.to_string()),
        };
        let member = Member {
            pseudo,
            session: session.unwrap_or_else(Uuid::new_v4),
        };
        // Recorded before any await, so that a connection cut short from
        // here on still releases the nickname when it closes (releasing one
        // it never got is harmless).
        self.member = Some(member.clone());
        let claim = self
            .app
            .store
            .claim(&self.room, self.id, &member, None)
            .await;
        if claim == Claim::Taken {
            self.member = None;
            let message = format!("the nickname {} is taken in this room", member.pseudo);
            return self.refuse(ErrorCode::PseudoTaken, message);
        }
        // Only the join that found the room empty opened it (decided by the
        // claim, so that a crowd arriving at once counts once), and it is
        // undone over the limit.
        if claim == Claim::Opened
            && self.room != DEFAULT_ROOM
            && self.app.new_rooms.check_key(&self.address).is_err()
        {
            self.member = None;
            self.app.store.leave(&self.room, self.id, &member).await;
            self.app.presence_changed(&self.room).await;
            let message = "too many new rooms from your address: try again in a minute";
            return self.refuse(ErrorCode::TooManyRooms, message.into());
        }
        self.confirm(&member);
        tracing::info!(conn = %self.id, room = self.room, pseudo = %member.pseudo, ?claim, "joined");
        // A reclaim is the same person back on a new connection: not news.
        if matches!(claim, Claim::Joined | Claim::Opened) {
            announce(
                &self.app,
                &self.room,
                SystemKind::Joined,
                &member.pseudo,
                None,
            )
            .await;
        }
        self.app.presence_changed(&self.room).await;
    }

    async fn rename(&mut self, raw: &str) {
        let Some(current) = self.member.clone() else {
            return self.refuse(ErrorCode::NotJoined, "join before renaming".into());
        };
        if self.name.is_some() {
            let message = "the nickname comes from your access token".into();
            return self.refuse(ErrorCode::InvalidPseudo, message);
        }
        let pseudo = match Pseudo::parse(raw) {
            Ok(pseudo) => pseudo,
            Err(err) => return self.refuse(ErrorCode::InvalidPseudo, err.to_string()),
        };
        if pseudo == current.pseudo {
            return self.confirm(&current);
        }
        let member = Member {
            pseudo,
            session: current.session,
        };
        let claim = self
            .app
            .store
            .claim(&self.room, self.id, &member, Some(&current.pseudo))
            .await;
        if claim == Claim::Taken {
            let message = format!("the nickname {} is taken in this room", member.pseudo);
            return self.refuse(ErrorCode::PseudoTaken, message);
        }
        self.member = Some(member.clone());
        self.confirm(&member);
        announce(
            &self.app,
            &self.room,
            SystemKind::Renamed,
            &member.pseudo,
            Some(current.pseudo.to_string()),
        )
        .await;
    }

    async fn say(&mut self, raw: &str) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before sending messages".into());
        };
        let text = match MessageText::parse(raw) {
            Ok(text) => text,
            Err(err) => return self.refuse(ErrorCode::InvalidText, err.to_string()),
        };
        let message = ChatMessage {
            epoch: String::new(),
            offset: 0,
            id: Uuid::new_v4(),
            author: member.pseudo.to_string(),
            text: text.into_string(),
            ts: now_ms(),
        };
        // The message ends this bout of typing: the next one is news.
        self.typed = None;
        // Acknowledged (echoed back) only once it is in the stream, so no
        // crash can lose a message its sender saw as sent.
        if let Err(err) = publish(&self.app, &self.room, &ServerEvent::Message(message)).await {
            tracing::warn!(conn = %self.id, room = self.room, error = %err, "message not sent");
            // A reply that timed out may follow an append that went through.
            let message = if err.0.is_timeout() {
                "the chat could not confirm that your message was stored: it may not have been sent; check the conversation before sending it again"
            } else {
                "the chat cannot store messages right now: yours was not sent; try again in a moment"
            };
            self.refuse(ErrorCode::Unavailable, message.into());
        }
    }

    /// Tells the others in the room that this participant is typing, at
    /// most once per [`TYPING_GAP`]; not stored in the room's stream.
    async fn typing(&mut self) {
        let Some(member) = &self.member else {
            return self.refuse(ErrorCode::NotJoined, "join before typing".into());
        };
        if self.typed.is_some_and(|at| at.elapsed() < TYPING_GAP) {
            return;
        }
        self.typed = Some(Instant::now());
        let frame = encode(&ServerEvent::Typing {
            pseudo: member.pseudo.to_string(),
        });
        self.app
            .bus
            .broadcast(&self.topic, frame, Some(self.id))
            .await;
    }

    async fn leave(&mut self) {
        self.app.bus.unsubscribe(&self.topic, self.id);
        // On shutdown the instance's entries are removed all at once after
        // a short wait, so that people who reconnect elsewhere meanwhile
        // reclaim their nickname instead of "leaving" and "joining".
        if self.app.shutdown.is_cancelled() {
            return;
        }
        if let Some(member) = self.member.take() {
            if self.app.store.leave(&self.room, self.id, &member).await {
                announce_departure(&self.app, &self.room, member.pseudo.as_str()).await;
            }
        }
    }
}

/// A member took a nickname while Redis was away that a member of another
/// instance held: that one keeps it. This one is told why, then closed;
/// its client reconnects and must choose another nickname, so two people
/// never speak under one name.
pub fn lost_nickname(app: &AppState, room: &str, conn: ConnId, pseudo: &str) {
    let message = format!(
        "the nickname {pseudo} was also taken on another server while the chat was partly offline; it stays with them: choose another one"
    );
    app.bus.hub().close_one(
        &Topic::Room(room.to_owned()),
        conn,
        encode(&ServerEvent::Error {
            code: ErrorCode::PseudoTaken,
            message,
        }),
        (
            close::NICKNAME_CONFLICT,
            "nickname taken on another instance",
        ),
    );
}

/// Tells the room that somebody left and that its count changed.
pub async fn announce_departure(app: &AppState, room: &str, pseudo: &str) {
    let event = ServerEvent::System(SystemMessage {
        epoch: String::new(),
        offset: 0,
        id: Uuid::new_v4(),
        kind: SystemKind::Left,
        pseudo: pseudo.to_owned(),
        previous: None,
        ts: now_ms(),
    });
    announce_event(app, room, &event).await;
    app.presence_changed(room).await;
}

async fn announce(
    app: &AppState,
    room: &str,
    kind: SystemKind,
    pseudo: &Pseudo,
    previous: Option<String>,
) {
    let event = ServerEvent::System(SystemMessage {
        epoch: String::new(),
        offset: 0,
        id: Uuid::new_v4(),
        kind,
        pseudo: pseudo.to_string(),
        previous,
        ts: now_ms(),
    });
    announce_event(app, room, &event).await;
}

/// A system event nobody waits for: while the stream is unavailable it is
/// not recorded (the count still tells the room who is there).
async fn announce_event(app: &AppState, room: &str, event: &ServerEvent) {
    if let Err(err) = publish(app, room, event).await {
        tracing::warn!(room, error = %err, "system message not recorded");
    }
}

/// Encodes once and appends to the room's stream, which gives the event its
/// position and publishes it to every instance; this instance's connections
/// get it through the room's feed, in order.
async fn publish(app: &AppState, room: &str, event: &ServerEvent) -> Result<(), StreamError> {
    let stamped = app.streams.append(room, &encode(event)).await?;
    app.bus.feeds().offer(room, stamped);
    Ok(())
}

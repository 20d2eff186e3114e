//! The chat protocol on `/ws`: a connection listens to one room from the
//! start (history, live messages, counts), then joins with a nickname to
//! speak. Frames are defined in `app::protocol`.

use crate::hub::{close, ConnId, Kind, Peer, Topic};
use crate::socket::{self, Handler};
use crate::store::{Claim, Member};
use crate::throttle::{Throttle, Verdict};
use crate::{encode, metrics, now_ms, AppState};
use app::protocol::{
    valid_room, ChatMessage, ClientMessage, ErrorCode, MessageText, Pseudo, ServerEvent,
    SystemKind, SystemMessage, DEFAULT_ROOM,
};
use axum::extract::ws::{Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

#[derive(Deserialize)]
pub struct ChatQuery {
    room: Option<String>,
    /// The newest event the client already has: only later ones are replayed.
    last_seen: Option<Uuid>,
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
    let room = query.room.unwrap_or_else(|| DEFAULT_ROOM.to_owned());
    if !valid_room(&room) {
        return (
            StatusCode::BAD_REQUEST,
            "room must be 1 to 64 letters, digits, '-' or '_'",
        )
            .into_response();
    }
    let tracked = app.clone();
    socket::configure(ws, &app.config).on_upgrade(move |socket| {
        tracked.tasks.clone().track_future(async move {
            // The connection counts as open until its session ends.
            let _slot = slot;
            session(tracked, socket, room, query.last_seen).await;
        })
    })
}

async fn session(app: Arc<AppState>, socket: WebSocket, room: String, last_seen: Option<Uuid>) {
    let id = Uuid::new_v4();
    let opened = Instant::now();
    let (peer, queue) = Peer::new(Kind::Chat, app.config.outbound_queue as usize);
    let topic = Topic::Room(room.clone());
    metrics::connection_opened(Kind::Chat);
    tracing::info!(conn = %id, kind = "chat", room, "connection opened");

    // Listen first, then read the history: an event published in between
    // is never missed, and `Replayed` keeps it from being sent twice.
    app.bus.subscribe(&topic, id, peer.clone()).await;
    let history = app.store.history(&room, last_seen).await;
    let count = app.store.count(&room).await;
    // Written before anything queued meanwhile, which follows in order
    // (minus the events the history already holds).
    let preamble = socket::Preamble {
        replayed: socket::Replayed::new(&history),
        frames: vec![
            history_frame(&history),
            encode(&ServerEvent::Count { count }),
        ],
    };

    let mut chat = ChatSession {
        app: app.clone(),
        id,
        room,
        topic,
        peer: peer.clone(),
        member: None,
        renames: Throttle::new(app.limits.renames),
        joins: Throttle::new(app.limits.joins),
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

/// `{"type":"history","events":[...]}` from stored frames, without parsing
/// them again.
fn history_frame(events: &[Utf8Bytes]) -> Utf8Bytes {
    let mut frame = String::with_capacity(40 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    frame.push_str(r#"{"type":"history","events":["#);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(event);
    }
    frame.push_str("]}");
    frame.into()
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
    renames: Throttle,
    joins: Throttle,
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
        let pseudo = match Pseudo::parse(raw) {
            Ok(pseudo) => pseudo,
            Err(err) => return self.refuse(ErrorCode::InvalidPseudo, err.to_string()),
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
        self.confirm(&member);
        tracing::info!(conn = %self.id, room = self.room, pseudo = %member.pseudo, ?claim, "joined");
        // A reclaim is the same person back on a new connection: not news.
        if claim == Claim::Joined {
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
            id: Uuid::new_v4(),
            author: member.pseudo.to_string(),
            text: text.into_string(),
            ts: now_ms(),
        };
        publish(&self.app, &self.room, &ServerEvent::Message(message)).await;
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

/// Tells the room that somebody left and that its count changed.
pub async fn announce_departure(app: &AppState, room: &str, pseudo: &str) {
    let event = ServerEvent::System(SystemMessage {
        id: Uuid::new_v4(),
        kind: SystemKind::Left,
        pseudo: pseudo.to_owned(),
        previous: None,
        ts: now_ms(),
    });
    publish(app, room, &event).await;
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
        id: Uuid::new_v4(),
        kind,
        pseudo: pseudo.to_string(),
        previous,
        ts: now_ms(),
    });
    publish(app, room, &event).await;
}

/// Encodes once, keeps it in the room's history, delivers it everywhere.
async fn publish(app: &AppState, room: &str, event: &ServerEvent) {
    let frame = encode(event);
    app.store.append_history(room, &frame).await;
    app.bus
        .broadcast(&Topic::Room(room.to_owned()), frame, None)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_frame_is_the_protocol_history_event() {
        let events = [
            ServerEvent::Message(ChatMessage {
                id: Uuid::new_v4(),
                author: "a".into(),
                text: "x".into(),
                ts: 1,
            }),
            ServerEvent::Count { count: 1 },
        ];
        let frames: Vec<Utf8Bytes> = events.iter().map(encode).collect();
        let parsed: ServerEvent = serde_json::from_str(&history_frame(&frames)).unwrap();
        assert_eq!(
            parsed,
            ServerEvent::History {
                events: events.to_vec()
            }
        );
        let empty: ServerEvent = serde_json::from_str(&history_frame(&[])).unwrap();
        assert_eq!(empty, ServerEvent::History { events: vec![] });
    }
}

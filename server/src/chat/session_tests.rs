//! The chat's rules, driven over a channel socket on an in-memory broker.

use super::*;
use crate::broker::memory::Shared;
use crate::chat::resume::Resume;
use crate::chat::{Counts, Feeds, Inbound};
use crate::fanout::Hub;
use crate::supervise::Restarts;
use crate::testing::{self, Remote};
use app::protocol::Position;
use governor::Quota;
use std::num::NonZeroU32;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn chat(shared: &Shared) -> Arc<Chat> {
    let hub = Arc::new(Hub::default());
    let (feeds, counts) = (Feeds::new(hub.clone()), Arc::new(Counts::default()));
    let inbox = Arc::new(Inbound {
        hub: hub.clone(),
        feeds: feeds.clone(),
        counts: counts.clone(),
    });
    let parts = testing::parts(shared, hub, inbox);
    let per = |n| NonZeroU32::new(n).unwrap();
    let shutdown = CancellationToken::new();
    let chat = Chat::new(super::super::Parts {
        instance: parts.instance,
        broker: parts.broker,
        presence: parts.presence,
        hub: parts.hub,
        feeds: feeds.clone(),
        counts,
        guard: parts.guard,
        auth: None,
        limits: super::super::Limits {
            socket: ws::Limits {
                max_message_bytes: 1024,
                keepalive: ws::Keepalive::start(Duration::from_secs(20), shutdown.clone()),
                coalesce: Duration::ZERO,
                frames: Quota::per_second(per(20)).allow_burst(per(40)),
                bytes: None,
            },
            outbound_queue: 64,
            renames: Quota::per_minute(per(2)),
            joins: Quota::per_minute(per(5)),
            new_rooms: Quota::per_minute(per(5)),
            actions: Quota::per_second(per(20)).allow_burst(per(40)),
        },
        shutdown,
        tasks: TaskTracker::new(),
        outbox: None,
    });
    let restarts = Arc::new(Restarts::default());
    chat.spawn_tasks(parts.events, &restarts);
    let broker = chat.broker.clone();
    tokio::spawn(feeds.repair_loop(broker, CancellationToken::new()));
    chat
}

async fn event(client: &mut Remote) -> ServerEvent {
    let text = client.next().await.expect("a frame");
    serde_json::from_str(&text).expect("a server event")
}

/// Opens a connection and reads its first four frames; returns the
/// history's events and position.
async fn open(chat: &Arc<Chat>, resume: Resume) -> (Remote, Vec<ServerEvent>, Position) {
    let (socket, mut client) = testing::socket();
    let opening = Opening {
        room: "r".into(),
        resume,
        name: None,
        moderator: false,
        person: crate::identity::Person::anonymous("127.0.0.1".parse().unwrap()),
        address: "127.0.0.1".parse().unwrap(),
    };
    tokio::spawn(run(chat.clone(), socket, Box::new(opening)));
    let ServerEvent::History {
        events,
        epoch,
        offset,
        ..
    } = event(&mut client).await
    else {
        panic!("history first");
    };
    for _ in 0..3 {
        event(&mut client).await; // count, online list, room list
    }
    (client, events, Position { epoch, offset })
}

async fn until(client: &mut Remote, wanted: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
    loop {
        let event = event(client).await;
        if wanted(&event) {
            return event;
        }
    }
}

fn send(client: &Remote, message: &ClientMessage) {
    client.text(&serde_json::to_string(message).unwrap());
}

fn error_code(event: &ServerEvent) -> Option<ErrorCode> {
    match event {
        ServerEvent::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn speaking_takes_a_nickname_and_nicknames_are_unique_across_instances() {
    let shared = Shared::default();
    let (here, there) = (chat(&shared), chat(&shared));
    let (mut alice, _, _) = open(&here, Resume::Latest).await;
    send(
        &alice,
        &ClientMessage::Say {
            text: "hi".into(),
            id: None,
        },
    );
    let refused = until(&mut alice, |e| error_code(e).is_some()).await;
    assert_eq!(error_code(&refused), Some(ErrorCode::NotJoined));
    let join = |pseudo: &str| ClientMessage::Join {
        pseudo: pseudo.into(),
        session: None,
    };
    send(&alice, &join(" "));
    let refused = until(&mut alice, |e| error_code(e).is_some()).await;
    assert_eq!(error_code(&refused), Some(ErrorCode::InvalidPseudo));
    send(&alice, &join("Alice"));
    until(&mut alice, |e| matches!(e, ServerEvent::Joined { .. })).await;
    let (mut other, _, _) = open(&there, Resume::Latest).await;
    send(&other, &join("alice"));
    let refused = until(&mut other, |e| error_code(e).is_some()).await;
    assert_eq!(error_code(&refused), Some(ErrorCode::PseudoTaken));
    // Said on one instance, heard on the other in the stream's order.
    send(
        &alice,
        &ClientMessage::Say {
            text: "hi".into(),
            id: None,
        },
    );
    let heard = until(&mut other, |e| matches!(e, ServerEvent::Message(_))).await;
    let ServerEvent::Message(message) = heard else {
        unreachable!()
    };
    assert_eq!(
        (message.author.as_str(), message.text.as_str()),
        ("Alice", "hi")
    );
    assert_eq!(message.offset, 2, "after the join's system message");
}

#[tokio::test]
async fn a_reconnect_gets_exactly_what_it_missed() {
    let shared = Shared::default();
    let (here, there) = (chat(&shared), chat(&shared));
    let (mut speaker, _, _) = open(&here, Resume::Latest).await;
    send(
        &speaker,
        &ClientMessage::Join {
            pseudo: "bo".into(),
            session: None,
        },
    );
    until(&mut speaker, |e| matches!(e, ServerEvent::Joined { .. })).await;
    let (_, _, seen) = open(&there, Resume::Latest).await;
    for text in ["one", "two"] {
        send(
            &speaker,
            &ClientMessage::Say {
                text: text.into(),
                id: None,
            },
        );
        until(&mut speaker, |e| matches!(e, ServerEvent::Message(_))).await;
    }
    let (_, history, _) = open(&there, Resume::Since(seen)).await;
    let texts: Vec<&str> = history
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Message(m) => Some(m.text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

/// Guards what an idle connection costs: its task holds the session's
/// future at its largest, for the connection's whole life (the opening and
/// the leaving are boxed; the connection's future, with the session in
/// it, is awaited in place), and the connection is passed to it boxed (a
/// `Conn` by value would leave a dead copy in each layer).
#[test]
fn a_connection_task_stays_small() {
    let task = testing::output_size(run::<Box<ws::Conn>>);
    assert!(task <= TASK, "task: {task} bytes");
    let session = std::mem::size_of::<ChatSession>();
    assert!(session <= SESSION, "session: {session} bytes");
    let conn = std::mem::size_of::<ws::Conn>();
    assert!(conn <= CONN, "connection: {conn} bytes");
}

/// Measured in a debug build (704, 248 and 192 bytes: the task's future
/// with the connection's in it; the connection holds its decoder's state,
/// not tungstenite's; the session, its member shared with presence), with
/// some room. The task's future was 1,104 bytes, beside a boxed connection
/// future of 1,064, when the session and its opening's state were kept in
/// it, and the session 392 with its member inline. With the upgrade's
/// state, tokio rounds the task to 896 bytes: 64 more and it takes 1,024.
const TASK: usize = 736;
const SESSION: usize = 256;
const CONN: usize = 256;

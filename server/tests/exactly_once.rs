//! Sends that happen exactly once: a `say` with an id is appended once
//! while that id is in the room's history, however often and wherever it
//! is repeated, and every repeat is acknowledged with the first position.

mod common;

use app::protocol::{ClientMessage, ServerEvent};
use common::{Chat, Endpoint, Instance, Redis, Server};
use uuid::Uuid;

fn say(text: &str, id: Uuid) -> ClientMessage {
    ClientMessage::Say {
        text: text.into(),
        id: Some(id),
    }
}

/// The position an ack gives for `id`.
async fn ack(chat: &mut Chat, id: Uuid) -> (String, u64) {
    match chat
        .expect(|e| matches!(e, ServerEvent::Ack { id: acked, .. } if *acked == id))
        .await
    {
        ServerEvent::Ack { epoch, offset, .. } => (epoch, offset),
        _ => unreachable!(),
    }
}

/// How many times a fresh reader of the room finds the message `id`.
async fn stored(server: &impl Endpoint, id: Uuid) -> usize {
    let (_, history, _) = Chat::open(server, "").await;
    history
        .iter()
        .filter(|e| matches!(e, ServerEvent::Message(m) if m.id == id))
        .count()
}

async fn a_repeat_is_acknowledged_at_the_first_position_and_shown_once(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let mut alice = Chat::join(&a, "alice").await;
    let mut reader = Chat::join(&b, "reader").await;
    let id = Uuid::new_v4();
    alice.send(&say("once", id)).await;
    let first = ack(&mut alice, id).await;
    alice.send(&say("once", id)).await;
    assert_eq!(ack(&mut alice, id).await, first, "the repeat's ack");
    alice.say("fence").await;
    let got = reader.messages(2).await;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["once", "fence"], "the repeat was not delivered");
    assert_eq!((got[0].id, got[0].offset), (id, first.1));
    assert_eq!(stored(&b, id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_shown_once_embedded() {
    a_repeat_is_acknowledged_at_the_first_position_and_shown_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_shown_once_on_redis() {
    let redis = Redis::start();
    a_repeat_is_acknowledged_at_the_first_position_and_shown_once(Some(&redis)).await;
}

/// Ten connections of one person (one session: tabs, reconnects) on two
/// instances send the same id three times each, all at once (as many as a
/// person may send at once on default settings): one event, and every ack
/// names its position. (Somebody else's id is not a repeat:
/// `authorship.rs`.)
async fn concurrent_repeats_make_one_event(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let id = Uuid::new_v4();
    let session = Uuid::new_v4();
    let mut senders = Vec::new();
    for i in 0..10 {
        let server: &Instance = if i % 2 == 0 { &a } else { &b };
        senders.push(Chat::join_session(server, &format!("s{i}"), session).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        tasks.spawn(async move {
            for _ in 0..3 {
                sender.send(&say("the same", id)).await;
            }
            let mut positions = Vec::new();
            for _ in 0..3 {
                positions.push(ack(&mut sender, id).await);
            }
            positions
        });
    }
    let mut positions = Vec::new();
    while let Some(acks) = tasks.join_next().await {
        positions.extend(acks.unwrap());
    }
    assert_eq!(positions.len(), 30);
    assert!(positions.windows(2).all(|w| w[0] == w[1]), "{positions:?}");
    assert_eq!(stored(&a, id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_make_one_event_embedded() {
    concurrent_repeats_make_one_event(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_make_one_event_on_redis() {
    let redis = Redis::start();
    concurrent_repeats_make_one_event(Some(&redis)).await;
}

/// A message sent, then the connection cut before any answer (dropped, or
/// its instance killed), then sent again through the other instance: the
/// room has it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_again_after_a_cut_is_stored_once() {
    let redis = Redis::start();
    let mut a = Server::start(Some(&redis), &[]);
    let b = Server::start(Some(&redis), &[]);

    // The connection drops right after sending.
    let id = Uuid::new_v4();
    let mut cut = Chat::join(&a, "alice").await;
    cut.send(&say("dropped", id)).await;
    cut.client.close().await;
    // The page keeps its session: the resend is the same person's.
    let mut again = Chat::join_session(&b, "alice2", cut.session).await;
    again.send(&say("dropped", id)).await;
    ack(&mut again, id).await;
    assert_eq!(stored(&b, id).await, 1);

    // The instance dies right after the send.
    let id = Uuid::new_v4();
    let mut doomed = Chat::join(&a, "bob").await;
    doomed.send(&say("killed", id)).await;
    a.kill9();
    let mut again = Chat::join_session(&b, "bob2", doomed.session).await;
    again.send(&say("killed", id)).await;
    ack(&mut again, id).await;
    assert_eq!(stored(&b, id).await, 1);
}

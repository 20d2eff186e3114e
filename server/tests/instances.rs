//! Several instances in one process, sharing one in-memory broker as
//! instances share a Redis: what crosses instances (relay frames, the one
//! order of a room's events, catch-up, presence totals, a clean stop),
//! checked in milliseconds. The same promises are checked against a real
//! Redis and a Redis Cluster by the other suites.

mod common;

use app::protocol::{ChatMessage, ClientMessage, ServerEvent, SystemKind};
use app::relay::{Registration, RelayReply};
use common::{eventually, Chat, Client, Endpoint, Instance, Received, WAIT};
use server::broker::memory::Shared;
use std::collections::BTreeSet;
use uuid::Uuid;

async fn register(url: &str, action: &str) -> (Client, Uuid) {
    let mut client = Client::connect(url).await;
    let registration = Registration {
        action,
        token: None,
    };
    client.send_text(&registration.encode()).await;
    let Received::Text(reply) = client.receive().await else {
        panic!("closed instead of registering");
    };
    match RelayReply::decode(&reply) {
        Some(RelayReply::Registered { id, action: got }) if got == action => (client, id),
        other => panic!("expected registered, got {other:?}"),
    }
}

async fn text(client: &mut Client) -> String {
    match client.receive().await {
        Received::Text(text) => text,
        Received::Close(code) => panic!("closed ({code:?}) while waiting for a frame"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_frames_reach_every_other_client_of_the_action_on_every_instance_once() {
    let shared = Shared::default();
    let instances = Instance::several(&shared, 2).await;
    let mut clients = Vec::new();
    for instance in &instances {
        for _ in 0..2 {
            clients.push(register(&instance.relay_url(), "lights").await);
        }
    }
    // The relay's own port speaks the same protocol.
    clients.push(register(&instances[1].relay_port_url(), "lights").await);
    let (mut other_action, _) = register(&instances[0].relay_url(), "other").await;

    let mut ids: Vec<Uuid> = clients.iter().map(|(_, id)| *id).collect();
    ids.sort();
    let mut listed = shared.relay_clients("lights");
    listed.sort();
    assert_eq!(listed, ids, "every client is registered under its action");

    // Everybody sends at once; each frame goes byte for byte to the others.
    let frames: Vec<String> = (0..clients.len())
        .map(|i| format!(r#"{{ "from" : {i}, "x": [1, 2.50] }}"#))
        .collect();
    for ((client, _), frame) in clients.iter_mut().zip(&frames) {
        client.send_text(frame).await;
    }
    for (i, (client, _)) in clients.iter_mut().enumerate() {
        let mut got = BTreeSet::new();
        for _ in 1..frames.len() {
            got.insert(text(client).await);
        }
        let expected: BTreeSet<String> = frames
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(got, expected, "client {i}");
    }
    // A fence: had any frame been delivered twice (or back to its sender),
    // it would come before this one.
    let fence = r#"{"fence":true}"#;
    clients[0].0.send_text(fence).await;
    for (client, _) in clients.iter_mut().skip(1) {
        assert_eq!(text(client).await, fence);
    }
    // Another action's frame, then a second fence: the fence comes first.
    other_action.send_text(r#"{"elsewhere":true}"#).await;
    let fence = r#"{"fence":2}"#;
    clients[0].0.send_text(fence).await;
    for (client, _) in clients.iter_mut().skip(1) {
        assert_eq!(
            text(client).await,
            fence,
            "another action's frame crossed over"
        );
    }

    // A client that goes away leaves the registry, wherever it was.
    let (gone, gone_id) = clients.remove(3);
    gone.close().await;
    eventually("the closed client leaves the registry", WAIT, || async {
        !shared.relay_clients("lights").contains(&gone_id)
    })
    .await;
}

/// The messages among events, with their positions.
fn messages(events: &[ServerEvent]) -> Vec<ChatMessage> {
    events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::Message(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_two_instances_give_everybody_one_order_and_exact_catch_up() {
    const SENDERS_PER_INSTANCE: usize = 3;
    const EACH: usize = 10;
    let shared = Shared::default();
    let instances = Instance::several(&shared, 2).await;
    let mut readers = Vec::new();
    for instance in &instances {
        readers.push(Chat::open(instance, "?room=r").await.0);
    }
    let mut senders = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for s in 0..SENDERS_PER_INSTANCE {
            senders.push(Chat::join_room(instance, "r", &format!("s{i}{s}")).await);
        }
    }
    // Everybody talks at once, while people come and go on both instances.
    let talking = senders.into_iter().enumerate().map(|(n, mut sender)| {
        tokio::spawn(async move {
            for k in 0..EACH {
                sender.say(&format!("{n}-{k}")).await;
            }
            sender
        })
    });
    let talking: Vec<_> = talking.collect();
    let urls: Vec<String> = instances.iter().map(|i| i.chat_url("?room=r")).collect();
    let coming_and_going = tokio::spawn(async move {
        for round in 0..6 {
            let (mut visitor, _, _) = Chat::try_open(&urls[round % 2]).await.expect("opens");
            visitor
                .send(&ClientMessage::Join {
                    pseudo: format!("visitor{round}"),
                    session: None,
                })
                .await;
            visitor
                .expect(|e| matches!(e, ServerEvent::Joined { .. }))
                .await;
            visitor.client.close().await;
        }
    });
    let total = 2 * SENDERS_PER_INSTANCE * EACH;
    let mut seen = Vec::new();
    for reader in &mut readers {
        seen.push(reader.messages(total).await);
    }
    for task in talking {
        task.await.expect("a sender");
    }
    coming_and_going.await.expect("the visitors");
    let ids = |messages: &[ChatMessage]| messages.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(ids(&seen[0]), ids(&seen[1]), "one order on both instances");
    assert!(seen[0].windows(2).all(|w| w[0].offset < w[1].offset));
    // Each sender's messages in the order it sent them.
    for n in 0..2 * SENDERS_PER_INSTANCE {
        let mine: Vec<String> = seen[0]
            .iter()
            .filter(|m| m.text.starts_with(&format!("{n}-")))
            .map(|m| m.text.clone())
            .collect();
        let sent: Vec<String> = (0..EACH).map(|k| format!("{n}-{k}")).collect();
        assert_eq!(mine, sent);
    }
    // A reader that left after any message, back on either instance,
    // gets exactly the messages after it.
    for (k, message) in seen[0].iter().enumerate() {
        let since = format!("?room=r&since={}:{}", message.epoch, message.offset);
        let (chat, history, _) = Chat::open(&instances[k % 2], &since).await;
        assert!(chat.recovered, "position {k}");
        assert_eq!(
            ids(&messages(&history)),
            ids(&seen[0][k + 1..]),
            "after {k}"
        );
        chat.client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_totals_across_instances_and_a_clean_stop_says_who_left() {
    let shared = Shared::default();
    let mut instances = Instance::several(&shared, 2).await;
    let mut alice = Chat::join_room(&instances[0], "r", "alice").await;
    let mut bob = Chat::join_room(&instances[1], "r", "bob").await;
    alice.expect_count(2).await;
    bob.expect_count(2).await;
    let carol = Chat::join_room(&instances[1], "r", "carol").await;
    alice.expect_count(3).await;
    // One nickname per room across instances.
    let (mut mallory, _, _) = Chat::open(&instances[0], "?room=r").await;
    mallory
        .send(&ClientMessage::Join {
            pseudo: "Carol".into(),
            session: None,
        })
        .await;
    assert_eq!(
        mallory.expect_error().await,
        app::protocol::ErrorCode::PseudoTaken
    );
    // The second instance stops: its people are gone for the others, told
    // in the room's stream.
    let second = instances.pop().expect("two instances");
    second.stop().await;
    let mut left = BTreeSet::new();
    while left.len() < 2 {
        if let ServerEvent::System(system) = alice
            .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Left))
            .await
        {
            left.insert(system.pseudo);
        }
    }
    assert_eq!(left, BTreeSet::from(["bob".to_owned(), "carol".to_owned()]));
    alice.expect_count(1).await;
    // Nothing of the stopped instance lives on to be handed frames.
    eventually("the stopped instance leaves the memory", WAIT, || async {
        shared.joined() == 1
    })
    .await;
    drop((bob, carol));
    for instance in instances {
        instance.stop().await;
    }
}

//! Several server processes against one private redis-server.

mod common;

use app::protocol::{ClientMessage, ErrorCode, ServerEvent, SystemKind};
use common::{eventually, keys, texts, Chat, Instance, Redis, Server};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_every_message_to_every_member_once_in_order() {
    let redis = Redis::start();
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Instance::configured(Some(&redis), &[]).await);
    }
    let mut chats = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        chats.push(Chat::join(server, &format!("user{i}")).await);
    }
    for chat in &mut chats {
        chat.expect_count(3).await;
    }
    const EACH: usize = 20;
    for round in 0..EACH {
        for (i, chat) in chats.iter_mut().enumerate() {
            chat.say(&format!("{i}:{round}")).await;
        }
    }
    for chat in &mut chats {
        let got = chat.messages(3 * EACH).await;
        let mut per_sender: HashMap<String, Vec<usize>> = HashMap::new();
        for m in got {
            let (sender, round) = m.text.split_once(':').unwrap();
            assert_eq!(m.author, format!("user{sender}"));
            per_sender
                .entry(m.author)
                .or_default()
                .push(round.parse().unwrap());
        }
        for rounds in per_sender.values() {
            assert_eq!(
                *rounds,
                (0..EACH).collect::<Vec<_>>(),
                "once each, in order"
            );
        }
        assert_eq!(per_sender.len(), 3);
    }
    // Nothing more (no repeat) came: the next messages each member gets
    // are the ones said after, one per instance.
    for (i, chat) in chats.iter_mut().enumerate() {
        chat.say(&format!("end {i}")).await;
    }
    for chat in &mut chats {
        let mut ends: Vec<String> = chat.messages(3).await.into_iter().map(|m| m.text).collect();
        ends.sort();
        assert_eq!(ends, ["end 0", "end 1", "end 2"], "nothing before the ends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_renames_leaves_and_nicknames_span_instances() {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let mut alice = Chat::join(&a, "alice").await;
    let mut bob = Chat::join(&b, "bob").await;
    alice.expect_count(2).await;
    bob.expect_count(2).await;

    let (mut thief, _, _) = Chat::open(&b, "").await;
    thief
        .send(&ClientMessage::Join {
            pseudo: "Alice".into(),
            session: None,
        })
        .await;
    assert_eq!(thief.expect_error().await, ErrorCode::PseudoTaken);

    bob.send(&ClientMessage::Rename {
        pseudo: "robert".into(),
    })
    .await;
    let renamed = alice
        .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Renamed))
        .await;
    assert!(
        matches!(renamed, ServerEvent::System(s) if s.pseudo == "robert" && s.previous.as_deref() == Some("bob"))
    );

    bob.client.close().await;
    alice
        .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Left && s.pseudo == "robert"))
        .await;
    alice.expect_count(1).await;
    // The nickname is free again, from the other instance.
    thief
        .send(&ClientMessage::Join {
            pseudo: "robert".into(),
            session: None,
        })
        .await;
    thief
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    alice.expect_count(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_catch_up_work_whatever_instance_is_reached() {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let mut alice = Chat::join(&a, "alice").await;
    alice.say("first").await;
    let first = alice.expect_message().await;
    alice.say("second").await;
    alice.say("third").await;
    alice.messages(2).await;

    let (_, history, count) = Chat::open(&b, "").await;
    assert_eq!(texts(&history), ["first", "second", "third"]);
    assert_eq!(count, 1);

    let (_, missed, _) = Chat::open(&b, &format!("?last_seen={}", first.id)).await;
    assert_eq!(texts(&missed), ["second", "third"]);
}

#[tokio::test]
async fn killing_an_instance_heals_the_counts_of_the_others() {
    let redis = Redis::start();
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let a = Server::start(Some(&redis), &fast);
    let mut doomed = Server::start(Some(&redis), &fast);
    let mut alice = Chat::join(&a, "alice").await;
    let _bob = Chat::join(&doomed, "bob").await;
    let _carol = Chat::join(&doomed, "carol").await;
    alice.expect_count(3).await;

    doomed.kill9();
    let started = std::time::Instant::now();
    let mut left = Vec::new();
    let mut count = 3;
    while count != 1 || left.len() < 2 {
        match alice.event().await {
            ServerEvent::Count { count: c } => count = c,
            ServerEvent::System(s) if s.kind == SystemKind::Left => left.push(s.pseudo),
            _ => {}
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "healed within 15 s"
    );
    left.sort();
    assert_eq!(left, ["bob", "carol"]);
    // The nicknames of the dead instance are free again.
    let _bob_again = Chat::join(&a, "bob").await;
    assert!(redis
        .keys("chat:instance:*")
        .iter()
        .all(|k| !k.contains(&doomed.instance_id())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_refuses_messages_meanwhile_then_resumes_cross_instance() {
    let mut redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[("HEARTBEAT_TTL_SECS", "3")]).await;
    let b = Instance::configured(Some(&redis), &[("HEARTBEAT_TTL_SECS", "3")]).await;
    let mut a1 = Chat::join(&a, "a1").await;
    let mut a2 = Chat::join(&a, "a2").await;
    let mut b1 = Chat::join(&b, "b1").await;
    b1.expect_count(3).await;

    redis.stop();
    eventually(
        "instance A reports Redis degraded",
        Duration::from_secs(15),
        || async { a.health().await["redis"] == "degraded" },
    )
    .await;
    assert_eq!(a.get("/healthz").await.0, 200, "degraded still serves");
    // Without its stream a message cannot be given a place in the room's
    // order: the sender is told it was not sent, nobody gets half of it.
    for i in 0..3 {
        a1.say(&format!("during outage {i}")).await;
        assert_eq!(a1.expect_error().await, ErrorCode::Unavailable);
    }

    redis.restart();
    eventually(
        "both instances report Redis ok",
        Duration::from_secs(20),
        || async { a.health().await["redis"] == "ok" && b.health().await["redis"] == "ok" },
    )
    .await;
    // Presence was registered again in the empty Redis: counts are totals.
    eventually(
        "counts are totals again",
        Duration::from_secs(10),
        || async { Chat::open(&b, "").await.2 == 3 },
    )
    .await;
    a1.say("after outage").await;
    let m = b1.expect_message().await;
    assert_eq!(m.text, "after outage");
    // Nobody on A got the refused messages either: the next message a2
    // gets is the one said after the outage.
    assert_eq!(a2.expect_message().await.text, "after outage");
    b1.say("back to a").await;
    a2.expect(|e| matches!(e, ServerEvent::Message(m) if m.text == "back to a"))
        .await;
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_retried_until_it_comes() {
    let mut redis = Redis::stopped();
    let server = Server::start(Some(&redis), &[]);
    assert_eq!(server.health().await["redis"], "degraded");
    let mut solo = Chat::join(&server, "solo").await;
    solo.say("needs its stream").await;
    assert_eq!(solo.expect_error().await, ErrorCode::Unavailable);
    assert!(server
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("WARN") && l.contains(&format!("127.0.0.1:{}", redis.port))));

    assert!(redis.spawn());
    eventually("Redis ok", Duration::from_secs(20), || async {
        server.health().await["redis"] == "ok"
    })
    .await;
    eventually(
        "the member is registered in Redis",
        Duration::from_secs(10),
        || async { redis.hkeys(&keys().members("general")).len() == 1 },
    )
    .await;
    solo.say("with redis").await;
    assert_eq!(solo.expect_message().await.text, "with redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_costs_each_client_a_few_count_frames() {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let mut observer = Chat::join(&a, "observer").await;
    observer.expect_count(1).await;
    const JOINS: u64 = 100;
    let mut crowd = Vec::new();
    for i in 0..JOINS {
        let server = if i % 2 == 0 { &a } else { &b };
        crowd.push(Chat::join(server, &format!("p{i}")).await);
    }
    let mut count_frames = 0;
    loop {
        if let ServerEvent::Count { count } = observer.event().await {
            count_frames += 1;
            if count == JOINS + 1 {
                break;
            }
        }
    }
    assert!(
        count_frames < JOINS / 4,
        "{count_frames} count frames for {JOINS} joins"
    );
}

#[tokio::test]
async fn changes_made_while_redis_stalled_are_written_back() {
    let redis = Redis::start();
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let a = Server::start(Some(&redis), &fast);
    let b = Server::start(Some(&redis), &fast);
    let alice = Chat::join(&a, "alice").await;
    let mut bob = Chat::join(&b, "bob").await;
    bob.expect_count(2).await;

    // Redis stops answering for a while; alice leaves meanwhile, so A can
    // only record it locally.
    let paused: Vec<()> =
        redis.on_every_node(redis::cmd("CLIENT").arg("PAUSE").arg(4000).arg("ALL"));
    assert!(!paused.is_empty());
    alice.client.close().await;

    // Once Redis answers again, A writes its view back: bob is told, and
    // the count and the nickname are right again.
    bob.expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Left && s.pseudo == "alice"))
        .await;
    bob.expect_count(1).await;
    let _alice_again = Chat::join(&b, "alice").await;
}

/// Watches a member's connection for a while: whether it was told its
/// nickname is taken, and the close code if it was closed.
async fn watch(mut chat: Chat, for_: Duration) -> (bool, Option<u16>, Chat) {
    let deadline = tokio::time::Instant::now() + for_;
    let mut told = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match chat.client.receive_within(left).await {
            None => return (told, None, chat),
            Some(common::Received::Close(code)) => return (told, code, chat),
            Some(common::Received::Text(text)) => {
                told |= matches!(
                    serde_json::from_str(&text),
                    Ok(ServerEvent::Error {
                        code: ErrorCode::PseudoTaken,
                        ..
                    })
                );
            }
        }
    }
}

#[tokio::test]
async fn a_nickname_taken_on_two_instances_during_an_outage_stays_with_one() {
    let mut redis = Redis::start();
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let a = Server::start(Some(&redis), &fast);
    let b = Server::start(Some(&redis), &fast);
    let carol_a = Chat::join(&a, "carol").await;

    redis.stop();
    eventually("B knows Redis is away", Duration::from_secs(15), || async {
        b.health().await["redis"] == "degraded"
    })
    .await;
    // Decided by B alone, as it must while Redis is away.
    let carol_b = Chat::join(&b, "Carol").await;
    redis.restart();

    let ((told_a, closed_a, _a), (told_b, closed_b, _b)) = tokio::join!(
        watch(carol_a, Duration::from_secs(8)),
        watch(carol_b, Duration::from_secs(8))
    );
    let loser = match (closed_a, closed_b) {
        (Some(4409), None) => told_a,
        (None, Some(4409)) => told_b,
        other => panic!("exactly one gives the nickname up, got closes {other:?}"),
    };
    assert!(loser, "the one who gives it up is told why");
    eventually("one carol in the room", Duration::from_secs(10), || async {
        Chat::open(&a, "").await.2 == 1 && Chat::open(&b, "").await.2 == 1
    })
    .await;
}

//! Rooms as streams: one order for everybody, exact catch-up from any
//! position, and an explicit notice whenever events cannot be recovered.
//! Each scenario runs on the embedded default and through Redis.

mod common;

use app::protocol::{ClientMessage, ErrorCode, Position, ServerEvent, HISTORY_LEN};
use common::{Chat, Endpoint, Instance, Received, Redis, Server};
use server::fanout::Topic;
use std::time::Duration;
use uuid::Uuid;

/// One event of a room's stream as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    epoch: String,
    offset: u64,
    id: Uuid,
}

fn seen(event: &ServerEvent) -> Option<Seen> {
    let position = event.position()?;
    let id = match event {
        ServerEvent::Message(m) => m.id,
        ServerEvent::System(s) => s.id,
        _ => return None,
    };
    Some(Seen {
        epoch: position.epoch,
        offset: position.offset,
        id,
    })
}

fn since(event: &Seen) -> String {
    format!("?since={}:{}", event.epoch, event.offset)
}

/// Reads a connection's room events until `done` says it has enough;
/// fails on a `recovered: false` notice (nothing is lost in these runs).
async fn read_until(chat: &mut Chat, got: &mut Vec<Seen>, done: impl Fn(&[Seen]) -> bool) {
    while !done(got) {
        let event = chat.event().await;
        if let ServerEvent::History { recovered, .. } = &event {
            assert!(recovered, "no event may be lost here");
        }
        got.extend(seen(&event));
    }
}

/// The instances a scenario runs on: the embedded server alone, or two
/// servers sharing a private Redis.
struct Setup {
    servers: Vec<Instance>,
    _redis: Option<Redis>,
}

impl Setup {
    async fn embedded() -> Setup {
        Setup {
            servers: vec![Instance::configured(None, &[]).await],
            _redis: None,
        }
    }

    async fn redis() -> Setup {
        Setup::redis_with(&[]).await
    }

    async fn redis_with(env: &[(&str, &str)]) -> Setup {
        let redis = Redis::start();
        let mut servers = Vec::new();
        for _ in 0..2 {
            servers.push(Instance::configured(Some(&redis), env).await);
        }
        Setup {
            servers,
            _redis: Some(redis),
        }
    }

    /// The n-th instance, round robin (always the same one when embedded).
    fn at(&self, n: usize) -> &Instance {
        &self.servers[n % self.servers.len()]
    }
}

const SENDERS: usize = 4;
const EACH: usize = 20;
const CHURN: usize = 3;

/// Several senders on every instance talk at once while others join and
/// leave; readers on each instance, and one that keeps reconnecting from
/// its position on alternating instances, must all see the same sequence.
/// Then a client resumes from every position seen and must get exactly
/// the rest.
async fn one_order_and_exact_catch_up(setup: Setup) {
    let room = "?room=streams";
    let mut readers = Vec::new();
    for i in 0..2 {
        readers.push(Chat::open(setup.at(i), room).await.0);
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let (mut chat, _, _) = Chat::open(setup.at(i), room).await;
        chat.send(&ClientMessage::Join {
            pseudo: format!("sender{i}"),
            session: None,
        })
        .await;
        chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
            .await;
        senders.push(chat);
    }

    // The reconnecting reader starts after the senders' joins.
    let mut sequences = vec![Vec::new(), Vec::new()];
    read_until(&mut readers[0], &mut sequences[0], |g| g.len() >= SENDERS).await;
    let start = sequences[0].last().map(|s| Position {
        epoch: s.epoch.clone(),
        offset: s.offset,
    });
    let start = start.expect("the joins");
    let hopper_urls: Vec<String> = (0..2).map(|i| setup.at(i).chat_url(room)).collect();
    let hopper = tokio::spawn(async move {
        let mut got: Vec<Seen> = Vec::new();
        let mut position = start;
        let mut hop = 0;
        // Every join, message and leave of the traffic below.
        let total = SENDERS * EACH + 2 * CHURN;
        while got.len() < total {
            let url = format!(
                "{}&since={}:{}",
                hopper_urls[hop % 2],
                position.epoch,
                position.offset
            );
            let (mut chat, history, _) = Chat::try_open(&url).await.expect("reconnects");
            assert!(chat.recovered, "resuming from {position:?}");
            got.extend(history.iter().filter_map(seen));
            // A few live events on this connection, then away again.
            let keep = got.len() + 1 + hop % 4;
            read_until(&mut chat, &mut got, |g| g.len() >= keep.min(total)).await;
            let last = got.last().expect("events");
            position = Position {
                epoch: last.epoch.clone(),
                offset: last.offset,
            };
            chat.client.close().await;
            hop += 1;
        }
        got
    });

    let mut tasks = Vec::new();
    for (i, mut chat) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                chat.say(&format!("{i}:{n}")).await;
                // Pacing: the traffic spreads over the hopper's reconnects.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            // Its own messages come back in the order sent.
            let mine: Vec<String> = chat
                .messages(SENDERS * EACH)
                .await
                .into_iter()
                .filter(|m| m.author == format!("sender{i}"))
                .map(|m| m.text)
                .collect();
            let sent: Vec<String> = (0..EACH).map(|n| format!("{i}:{n}")).collect();
            assert_eq!(mine, sent);
            chat
        }));
    }
    for i in 0..CHURN {
        let (mut chat, _, _) = Chat::open(setup.at(i + 1), room).await;
        chat.send(&ClientMessage::Join {
            pseudo: format!("churn{i}"),
            session: None,
        })
        .await;
        chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
            .await;
        // Pacing: each churner stays a moment, amid the traffic.
        tokio::time::sleep(Duration::from_millis(20)).await;
        chat.client.close().await;
    }
    let mut held = Vec::new();
    for task in tasks {
        held.push(task.await.expect("sender"));
    }

    let total = SENDERS * EACH + 2 * CHURN;
    for (reader, got) in readers.iter_mut().zip(&mut sequences) {
        // The senders' joins came before the traffic; count from there.
        read_until(reader, got, |g| g.len() >= SENDERS + total).await;
    }
    let hopped = hopper.await.expect("hopper");

    let reference = &sequences[0];
    for (i, sequence) in sequences.iter().enumerate() {
        assert_eq!(sequence, reference, "reader {i} saw another order");
    }
    for pair in reference.windows(2) {
        assert_eq!(pair[0].epoch, pair[1].epoch);
        assert_eq!(pair[1].offset, pair[0].offset + 1, "consecutive offsets");
    }
    assert_eq!(
        hopped[..],
        reference[SENDERS..],
        "the reconnecting reader got every event once, in the same order"
    );

    // The history holds the same order.
    let (_, history, _) = Chat::open(setup.at(1), room).await;
    let stored: Vec<Seen> = history.iter().filter_map(seen).collect();
    assert!(stored.len() <= HISTORY_LEN);
    assert_eq!(stored[..], reference[reference.len() - stored.len()..]);

    // Resuming from any position gives exactly what follows it.
    for (i, event) in reference.iter().enumerate() {
        let (chat, history, _) =
            Chat::open(setup.at(i), &format!("{room}&{}", &since(event)[1..])).await;
        let resumed: Vec<Seen> = history.iter().filter_map(seen).collect();
        assert!(chat.recovered, "position {i} is within the history");
        assert_eq!(resumed[..], reference[i + 1..], "resumed after event {i}");
        assert_eq!(chat.position.offset, reference.last().unwrap().offset);
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_one_order_and_exact_catch_up_under_concurrent_senders() {
    one_order_and_exact_catch_up(Setup::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_order_and_exact_catch_up_under_concurrent_senders() {
    one_order_and_exact_catch_up(Setup::redis().await).await;
}

/// A client further behind than the history reaches, or from another
/// epoch, gets the whole history with `recovered: false`.
async fn too_far_behind_is_said(setup: Setup) {
    let mut talkers = Vec::new();
    for i in 0..3 {
        talkers.push(Chat::join(setup.at(i), &format!("talker{i}")).await);
    }
    let first = talkers[0].expect(|e| seen(e).is_some()).await;
    let first = seen(&first).unwrap();
    // More events than the history holds, within each sender's burst.
    let per_talker = HISTORY_LEN / 3 + 2;
    for n in 0..per_talker {
        for talker in &mut talkers {
            talker.say(&format!("m{n}")).await;
        }
    }
    // Until they are all stored. Not until every talker has them all: a
    // burst past what the room retains is lost for good to an instance
    // whose pub/sub lags by more than about a second (on a busy machine),
    // which is said, not what this test is about.
    let target = first.offset + 3 * per_talker as u64;
    let stored = || async {
        let (_, body) = common::http_get(setup.at(0).running.admin, "/api/rooms/general").await;
        let room: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        room["offset"].as_u64().unwrap_or(0) >= target
    };
    common::eventually("the burst is stored", common::WAIT, stored).await;
    let (chat, history, _) = Chat::open(setup.at(1), &since(&first)).await;
    assert!(!chat.recovered, "the first event fell out of the history");
    assert_eq!(history.len(), HISTORY_LEN, "the whole history instead");

    let (chat, _, _) = Chat::open(setup.at(0), "?since=another-epoch:3").await;
    assert!(!chat.recovered, "a position of another epoch");
    let (chat, history, _) =
        Chat::open(setup.at(0), &format!("?since={}", chat.position.to_query())).await;
    assert!(chat.recovered && history.is_empty(), "up to date");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_client_too_far_behind_is_told() {
    too_far_behind_is_said(Setup::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_client_too_far_behind_is_told() {
    // Retention cut to the history's length (Redis keeps 1,000 by default).
    let retention = [("HISTORY_MAX_EVENTS", "100")];
    too_far_behind_is_said(Setup::redis_with(&retention).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_since_is_refused_with_400() {
    let server = Instance::configured(None, &[]).await;
    for bad in ["?since=nope", "?since=e:x", "?since=e:-1"] {
        assert_eq!(
            common::refused_status(&server.chat_url(bad)).await,
            400,
            "{bad}"
        );
    }
}

/// Kills the pub/sub connections of the node that carries the default
/// room's channel (the only node on one Redis); returns how many.
///
/// Only that node's: an instance holds one pub/sub connection per node it
/// follows channels on (the subject orders' channel may be on another),
/// and when one of them dies it replaces its whole link. A kill on a second
/// node would then count the old or the new connections there, whichever
/// the race left.
async fn kill_subscriptions(ports: Vec<u16>) -> i64 {
    let channel = common::keys().channel(&Topic::Room("general".into()));
    let mut killed = 0;
    for port in ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let numsub = if common::cluster_mode() {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        };
        let (_, subscribers): (String, i64) = redis::cmd("PUBSUB")
            .arg(numsub)
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        if subscribers == 0 {
            continue;
        }
        killed += redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    }
    killed
}

/// How many pub/sub connections two instances following one room hold on
/// the node of the room's channel: one each.
const SUBSCRIPTIONS_OF_TWO_INSTANCES: i64 = 2;

/// A talker on one instance sends `n` messages while the subscriptions
/// are killed `kill_after` into the traffic; a reader on the other
/// instance must get every one once, in order, with no notice.
async fn talk_across_a_lost_subscription(n: usize, kill_after: Duration, pace: Duration) {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let (mut reader, _, _) = Chat::open(&b, "").await;
    let mut talker = Chat::join(&a, "talker").await;
    let mut got = Vec::new();
    // Its join.
    read_until(&mut reader, &mut got, |g| !g.is_empty()).await;

    let kill = tokio::spawn({
        let ports = redis.ports();
        async move {
            // The scenario: the subscriptions die this far into the traffic.
            tokio::time::sleep(kill_after).await;
            kill_subscriptions(ports).await
        }
    });
    let expected = SUBSCRIPTIONS_OF_TWO_INSTANCES;
    let mut kill = Some(kill);
    if kill_after.is_zero() {
        let killed = kill.take().unwrap().await.unwrap();
        assert_eq!(killed, expected, "both instances' subscriptions");
    }
    for i in 0..n {
        talker.say(&format!("m{i}")).await;
        // Pacing: the traffic lasts across the kill.
        tokio::time::sleep(pace).await;
    }
    if let Some(kill) = kill {
        assert_eq!(
            kill.await.unwrap(),
            expected,
            "both instances' subscriptions"
        );
    }
    let sent = talker.messages(n).await;
    read_until(&mut reader, &mut got, |g| g.len() > n).await;
    let ids: Vec<Uuid> = got[1..].iter().map(|s| s.id).collect();
    let wanted: Vec<Uuid> = sent.iter().map(|m| m.id).collect();
    assert_eq!(ids, wanted, "every message once, in order");
}

/// Events published while an instance's pub/sub connection is down reach
/// its clients from the stream once it is back, in order, with no notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_is_repaired_from_the_stream() {
    talk_across_a_lost_subscription(30, Duration::from_millis(30), Duration::from_millis(5)).await;
}

/// Events published just after an instance lost its subscription, with
/// nothing after them to reveal the gap, still reach its clients once the
/// subscription is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_published_during_a_lost_subscription_is_delivered() {
    talk_across_a_lost_subscription(10, Duration::ZERO, Duration::ZERO).await;
}

/// A message its sender saw echoed is in the stream: killing the sender's
/// instance at once loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() {
    let redis = Redis::start();
    let mut a = Server::start(Some(&redis), &[]);
    let b = Server::start(Some(&redis), &[]);
    let mut sender = Chat::join(&a, "sender").await;
    let (mut reader, _, _) = Chat::open(&b, "").await;
    for n in 0..30 {
        sender.say(&format!("m{n}")).await;
    }
    // Kill as soon as some are acknowledged, while others are in flight.
    let mut acknowledged = sender.messages(10).await;
    a.kill9();
    // Whatever A sent before it died, up to the end of its socket.
    while let Received::Text(text) = sender.client.receive().await {
        if let Ok(ServerEvent::Message(m)) = serde_json::from_str(&text) {
            acknowledged.push(m);
        }
    }
    let mut got = Vec::new();
    read_until(&mut reader, &mut got, |g| {
        acknowledged.iter().all(|m| g.iter().any(|s| s.id == m.id))
    })
    .await;
    let (_, history, _) = Chat::open(&b, "").await;
    let stored: Vec<Seen> = history.iter().filter_map(seen).collect();
    for m in &acknowledged {
        assert!(
            stored.iter().any(|s| s.id == m.id),
            "{} is in the history",
            m.text
        );
    }
    // The sender reconnects to the surviving instance from the last event
    // it got: exactly the rest of the stream.
    let last = acknowledged.last().expect("acknowledged messages");
    let position = since(&Seen {
        epoch: last.epoch.clone(),
        offset: last.offset,
        id: last.id,
    });
    let (chat, missed, _) = Chat::open(&b, &position).await;
    assert!(chat.recovered);
    let missed: Vec<Seen> = missed.iter().filter_map(seen).collect();
    let after = stored.iter().position(|s| s.id == last.id).unwrap() + 1;
    assert_eq!(missed[..], stored[after..]);
}

/// While Redis is away nothing can be appended: a sender is told its
/// message was not sent; once Redis is back (empty: a new epoch), every
/// client is told events may be missing, and talk resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_refuses_sends_meanwhile_and_announces_the_new_epoch() {
    let mut redis = Redis::start();
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let a = Instance::configured(Some(&redis), &fast).await;
    let b = Instance::configured(Some(&redis), &fast).await;
    let mut alice = Chat::join(&a, "alice").await;
    let (mut reader, _, _) = Chat::open(&b, "").await;
    alice.say("before").await;
    let before = reader.expect_message().await;

    redis.stop();
    alice.say("during").await;
    assert_eq!(alice.expect_error().await, ErrorCode::Unavailable);

    redis.restart();
    let restarted = std::time::Instant::now();
    let after = loop {
        alice.say("after").await;
        match alice
            .expect(|e| matches!(e, ServerEvent::Message(_) | ServerEvent::Error { .. }))
            .await
        {
            ServerEvent::Message(m) => break m,
            // Refused while the servers reconnect: try again shortly.
            _ => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(30),
                    "sends are accepted again"
                );
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    };
    println!(
        "sends accepted again {:?} after Redis restarted",
        restarted.elapsed()
    );
    assert_ne!(after.epoch, before.epoch, "a new epoch");
    // The reader on the other instance: the notice, then the new event.
    let mut noticed = false;
    loop {
        match reader.event().await {
            ServerEvent::History { recovered, .. } => noticed |= !recovered,
            ServerEvent::Message(m) if m.text == "after" => break,
            _ => {}
        }
    }
    assert!(noticed, "told that events may be missing");
    let (chat, _, _) = Chat::open(&b, &format!("?since={}:{}", before.epoch, before.offset)).await;
    assert!(
        !chat.recovered,
        "positions of the lost epoch are not served"
    );
}

//! Redis Cluster: found by itself, rooms spread over the slots and cross
//! instances from every master, a master that restarts or fails over is
//! followed, and clients end with every event or the explicit notice. (The rest of the suite runs against
//! a cluster too, with `TEST_REDIS=cluster`.)

mod common;

use app::protocol::ServerEvent;
use common::{eventually, keys, Chat, Client, Endpoint, Redis, Server, WAIT};
use serde_json::json;
use server::broker::redis::keys::partition;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use uuid::Uuid;

/// These tests open many rooms from one address, beyond the default
/// `NEW_ROOMS_PER_MIN`, which is not what they are about.
const MANY_ROOMS: (&str, &str) = ("NEW_ROOMS_PER_MIN", "1000");

/// The masters of every cluster these tests start.
const MASTERS: usize = 3;

/// Room names, `per_master` of them on each master, every one in a
/// partition of its own; listed master by master in turn.
fn rooms_on_every_master(redis: &Redis, per_master: usize) -> Vec<String> {
    let mut by_master: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut partitions = HashSet::new();
    for i in 0.. {
        let room = format!("room{i}");
        if !partitions.insert(partition(&room)) {
            continue;
        }
        let on = by_master
            .entry(redis.master_of(&keys().stream_meta(&room)))
            .or_default();
        if on.len() < per_master {
            on.push(room);
        }
        let full = by_master.values().filter(|r| r.len() == per_master).count();
        if full == MASTERS {
            break;
        }
        assert!(
            i < 100_000,
            "no {per_master} rooms on each master: {by_master:?}"
        );
    }
    (0..per_master)
        .flat_map(|i| by_master.values().map(move |rooms| rooms[i].clone()))
        .collect()
}

/// Says `text` until the server accepts it (a master may be away);
/// returns the message as stored (with its position).
async fn say_until_sent(chat: &mut Chat, text: &str) -> app::protocol::ChatMessage {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = None;
    while Instant::now() < deadline {
        chat.say(text).await;
        loop {
            match timeout(WAIT, chat.event()).await.expect("an answer") {
                ServerEvent::Message(m) if m.text == text => return m,
                error @ ServerEvent::Error { .. } => {
                    refused = Some(error);
                    break;
                }
                _ => {}
            }
        }
        // Refused while a master is away: try again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{text:?} was never accepted; last refusal: {refused:?}");
}

/// Reads until a message with `text` arrives.
async fn expect_text(chat: &mut Chat, text: &str) {
    chat.expect(|e| matches!(e, ServerEvent::Message(m) if m.text == text))
        .await;
}

#[tokio::test]
async fn one_node_is_enough_to_find_the_cluster_and_rooms_of_every_master_cross_instances() {
    let redis = Redis::cluster(MASTERS, 0);
    let first_node = format!("redis://127.0.0.1:{}", redis.port);
    let a = Server::start(None, &[("REDIS_URL", &first_node), MANY_ROOMS]);
    assert!(
        a.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("using a Redis Cluster")),
        "the cluster is found from one node"
    );
    let b = Server::start(Some(&redis), &[MANY_ROOMS]);

    let rooms = rooms_on_every_master(&redis, 3);
    let mut readers = Vec::new();
    for room in &rooms {
        readers.push(Chat::open(&b, &format!("?room={room}")).await.0);
    }
    for (room, reader) in rooms.iter().zip(&mut readers) {
        let mut talker = Chat::join_room(&a, room, "talker").await;
        say_until_sent(&mut talker, &format!("hello {room}")).await;
        expect_text(reader, &format!("hello {room}")).await;
    }

    // The relay too, in its own partitions.
    for action in ["lights", "sensors.kitchen", "jobs"] {
        let mut on_a = Client::connect(&a.relay_url()).await;
        on_a.send_json(json!({"action": action})).await;
        assert_eq!(on_a.json().await["type"], "registered");
        let mut on_b = Client::connect(&b.relay_url()).await;
        on_b.send_json(json!({"action": action})).await;
        assert_eq!(on_b.json().await["type"], "registered");
        assert_eq!(redis.hkeys(&keys().relay_clients(action)).len(), 2);
        on_a.send_json(json!({"to": action})).await;
        assert_eq!(on_b.json().await, json!({"to": action}));
    }
}

/// The trap of a client that subscribes again to all of a node's sharded
/// channels in one command: with channels of two slots on the restarted
/// node, Redis refuses it (CROSSSLOT) and both rooms go silent.
#[tokio::test]
async fn a_master_that_restarts_gets_every_room_of_its_slots_back() {
    let mut redis = Redis::cluster(MASTERS, 0);
    let a = Server::start(Some(&redis), &[MANY_ROOMS]);
    let b = Server::start(Some(&redis), &[MANY_ROOMS]);

    // Two rooms in different partitions (so different slots) of one master.
    let rooms = rooms_on_every_master(&redis, 2);
    let (first, second) = (rooms[0].clone(), rooms[MASTERS].clone());
    let port = redis.master_of(&keys().stream_meta(&first));
    assert_eq!(port, redis.master_of(&keys().stream_meta(&second)));

    let mut talkers = Vec::new();
    let mut readers = Vec::new();
    for room in [&first, &second] {
        readers.push(Chat::open(&b, &format!("?room={room}")).await.0);
        talkers.push(Chat::join_room(&a, room, "talker").await);
    }
    for (talker, reader) in talkers.iter_mut().zip(&mut readers) {
        say_until_sent(talker, "before").await;
        expect_text(reader, "before").await;
    }

    let node = redis.node_index(port);
    let both_report = |status: &'static str| {
        let (a, b) = (&a, &b);
        move || async move { a.health().await["redis"] == status && b.health().await["redis"] == status }
    };
    eventually("both instances report Redis ok", WAIT, both_report("ok")).await;
    redis.kill_node(node);
    // The master is away until both instances have noticed.
    eventually(
        "both instances see the master gone",
        WAIT,
        both_report("degraded"),
    )
    .await;
    redis.restart_node(node);

    for (talker, reader) in talkers.iter_mut().zip(&mut readers) {
        say_until_sent(talker, "after").await;
        expect_text(reader, "after").await;
    }
}

/// What one reader saw of a room.
#[derive(Default)]
struct Sight {
    last_epoch: String,
    ids: Vec<Uuid>,
    positions: Vec<String>,
    notices: usize,
}

/// The last message a talker says, after all its others.
fn last_words(room: &str, talker: usize) -> String {
    format!("{room} {talker} end")
}

/// Reads a room until the last message of each of its two talkers came:
/// everything they said before is in the stream before it.
async fn read_room(mut chat: Chat, history: Vec<ServerEvent>, room: String) -> Sight {
    let mut sight = Sight::default();
    let mut last: Option<(String, u64)> = None;
    let mut history = history.into_iter();
    let mut awaited: HashSet<String> = (0..2).map(|i| last_words(&room, i)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !awaited.is_empty() {
        let event = match history.next() {
            Some(event) => event,
            None => match chat
                .client
                .receive_within(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Some(common::Received::Text(text)) => serde_json::from_str(&text).unwrap(),
                Some(common::Received::Close(code)) => panic!("reader closed: {code:?}"),
                None => panic!(
                    "{room}: still waiting for {awaited:?}; saw {:?}",
                    sight.positions
                ),
            },
        };
        match event {
            ServerEvent::History {
                recovered: false,
                events,
                ..
            } => {
                sight.notices += 1;
                sight.positions.push("NOTICE".into());
                for event in events {
                    if let ServerEvent::Message(m) = event {
                        awaited.remove(&m.text);
                    }
                }
            }
            ServerEvent::Message(m) => {
                if let Some((epoch, offset)) = &last {
                    assert!(
                        *epoch != m.epoch || *offset < m.offset,
                        "offsets go up within an epoch"
                    );
                }
                last = Some((m.epoch.clone(), m.offset));
                sight.last_epoch = m.epoch.clone();
                sight
                    .positions
                    .push(format!("{} {}:{}", m.text, m.epoch, m.offset));
                sight.ids.push(m.id);
                awaited.remove(&m.text);
            }
            _ => {}
        }
    }
    sight
}

/// Three masters with a replica each; one master is killed while two
/// people talk in each of several rooms on two instances. The cluster
/// fails over, the servers carry on, and every reader ends with every
/// message acknowledged to its sender, once, or with the explicit notice.
#[tokio::test]
async fn a_failover_while_people_talk_leaves_every_reader_whole_or_told() {
    let mut redis = Redis::cluster(MASTERS, 1);
    let servers = [
        Server::start(Some(&redis), &[MANY_ROOMS]),
        Server::start(Some(&redis), &[MANY_ROOMS]),
    ];
    let rooms = rooms_on_every_master(&redis, 2);
    let doomed = redis.master_of(&keys().stream_meta(&rooms[0]));
    for room in &rooms {
        let port = redis.master_of(&keys().stream_meta(room));
        eprintln!(
            "{room}: master {port}{}",
            if port == doomed { " (killed)" } else { "" }
        );
    }

    const EACH: usize = 30;
    let acknowledged_so_far = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    let mut talks = Vec::new();
    for room in &rooms {
        for (i, server) in servers.iter().enumerate() {
            let (reader, history, _) = Chat::open(server, &format!("?room={room}")).await;
            let read = read_room(reader, history, room.clone());
            readers.push((room.clone(), tokio::spawn(read)));
            let mut talker = Chat::join_room(server, room, &format!("talker{i}")).await;
            let room = room.clone();
            let acknowledged_so_far = acknowledged_so_far.clone();
            talks.push(tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..EACH {
                    let text = format!("{room} {i} {n}");
                    let m = say_until_sent(&mut talker, &text).await;
                    sent.push((m.id, (m.epoch.clone(), format!("{} {}", m.text, m.offset))));
                    acknowledged_so_far.fetch_add(1, Ordering::Relaxed);
                    // Pacing: the talk lasts through the failover.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                say_until_sent(&mut talker, &last_words(&room, i)).await;
                (room, sent)
            }));
        }
    }
    // The master dies once the talk is under way (a few messages each).
    eventually("the talk is under way", WAIT, || async {
        acknowledged_so_far.load(Ordering::Relaxed) >= 3 * talks.len()
    })
    .await;
    redis.kill_node(redis.node_index(doomed));
    redis.wait_serving();

    let mut acknowledged: BTreeMap<String, BTreeMap<Uuid, (String, String)>> = BTreeMap::new();
    for talk in talks {
        let (room, sent) = talk.await.unwrap();
        acknowledged.entry(room).or_default().extend(sent);
    }
    let mut told = 0;
    for (room, reader) in readers {
        let sight = reader.await.unwrap();
        let unique: HashSet<Uuid> = sight.ids.iter().copied().collect();
        assert_eq!(unique.len(), sight.ids.len(), "{room}: no duplicates");
        let missing: Vec<&(String, String)> = acknowledged[&room]
            .iter()
            .filter(|(id, _)| !unique.contains(id))
            .map(|(_, what)| what)
            .collect();
        assert!(
            missing.is_empty() || sight.notices > 0,
            "{room}: acknowledged messages missing, and no notice: {missing:?}; saw {:?}",
            sight.positions
        );
        // A notice covers what came before it, never the stream since.
        let last_epoch = &sight.last_epoch;
        assert!(
            missing.iter().all(|(epoch, _)| epoch != last_epoch),
            "{room}: missing in the current epoch: {missing:?}"
        );
        told += usize::from(sight.notices > 0);
    }
    eprintln!("readers told of a loss: {told} of {}", rooms.len() * 2);
}

/// Rooms spread over the slots and the masters, and each instance holds
/// one subscription connection per master it follows rooms on, however
/// many rooms: not one per room, nor one per partition and master.
#[tokio::test]
async fn rooms_spread_over_the_slots_and_subscriptions_stay_one_per_node() {
    let redis = Redis::cluster(MASTERS, 0);
    let rooms: Vec<String> = (0..300).map(|i| format!("spread-{i}")).collect();
    let mut slots = HashSet::new();
    let mut per_master: BTreeMap<u16, usize> = BTreeMap::new();
    let first_node = format!("redis://127.0.0.1:{}", redis.port);
    let mut conn = redis::Client::open(first_node)
        .unwrap()
        .get_connection()
        .unwrap();
    for room in &rooms {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(keys().stream_meta(room))
            .query(&mut conn)
            .unwrap();
        slots.insert(slot);
        *per_master
            .entry(redis.master_of(&keys().stream_meta(room)))
            .or_default() += 1;
    }
    assert!(slots.len() >= 150, "300 rooms on {} slots", slots.len());
    // Each master within 25% of its fair share (hashing 300 names cannot
    // promise better).
    let fair = rooms.len() / MASTERS;
    assert_eq!(per_master.len(), MASTERS, "{per_master:?}");
    assert!(
        per_master
            .values()
            .all(|n| n * 4 >= fair * 3 && n * 4 <= fair * 5),
        "rooms per master: {per_master:?}"
    );

    // One instance follows 30 of those rooms (a reader in each).
    let server = Server::start(Some(&redis), &[MANY_ROOMS]);
    let mut readers = Vec::new();
    for room in rooms.iter().take(30) {
        readers.push(Chat::open(&server, &format!("?room={room}")).await.0);
    }
    let pubsub_connections = || {
        redis
            .on_every_node::<String>(redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub"))
            .iter()
            .map(|list| list.lines().count())
            .sum::<usize>()
    };
    eventually("the instance subscribed", WAIT, || async {
        pubsub_connections() > 0
    })
    .await;
    let held = pubsub_connections();
    assert!(
        (1..=MASTERS).contains(&held),
        "{held} subscription connections for 30 rooms on {MASTERS} masters"
    );
    // And every one of those rooms is live across instances.
    let other = Server::start(Some(&redis), &[MANY_ROOMS]);
    for (room, reader) in rooms.iter().zip(&mut readers).take(30) {
        let mut talker = Chat::join_room(&other, room, "talker").await;
        say_until_sent(&mut talker, &format!("hi {room}")).await;
        expect_text(reader, &format!("hi {room}")).await;
    }
}

/// A whole cluster down, then back, again and again: each time both
/// instances write to it again. redis-rs can lose its way when the nodes
/// go down one after the other during one of its slot refreshes: it keeps
/// an empty map of the nodes and refreshes from it in a busy loop, never
/// asking the nodes it was given again. An instance then replaces its
/// connection; before, it stayed away from the cluster for good. (Without
/// that, this test failed in about one run in three, the nickname test of
/// `scale.rs` in one in ten with `TEST_REDIS=cluster`.)
#[tokio::test]
async fn a_cluster_down_and_back_again_and_again_is_found_each_time() {
    const OUTAGES: usize = 10;
    let mut redis = Redis::cluster(MASTERS, 0);
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let instances = [
        Server::start(Some(&redis), &fast),
        Server::start(Some(&redis), &fast),
    ];
    let members = keys().members("general");
    let all_report = |status: &'static str| {
        let instances = &instances;
        move || async move {
            for instance in instances {
                if instance.health().await["redis"] != status {
                    return false;
                }
            }
            true
        }
    };
    let mut joined = Vec::new();
    for outage in 1..=OUTAGES {
        // Their joins' writes are in flight when the nodes go down.
        for (i, instance) in instances.iter().enumerate() {
            joined.push(Chat::join(instance, &format!("member{outage}-{i}")).await);
        }
        redis.stop();
        eventually("both see the cluster gone", WAIT, all_report("degraded")).await;
        redis.restart();
        eventually(
            &format!("outage {outage}: both write to the cluster again"),
            WAIT,
            || async { all_report("ok")().await && redis.hkeys(&members).len() == joined.len() },
        )
        .await;
    }
}

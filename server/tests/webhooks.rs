//! Webhooks through a real local HTTP receiver: every event of a busy
//! two-instance room arrives, in order, signed, while the backend answers
//! 500 for 10 s, while the delivering instance is killed with kill -9, and
//! while Redis restarts; events gone from the history before delivery come
//! as a `gap` (embedded, one Redis, and the cluster with
//! `TEST_REDIS=cluster`).

mod common;

use common::{
    assert_contiguous, delivered_up_to, Chat, Client, Endpoint, Instance, Receiver, Redis, Server,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Enough for a lease to expire (10 s) and a presence to expire (10 s).
const DELIVERY: Duration = Duration::from_secs(40);

/// The room's position, as the server API gives it.
async fn position(admin: SocketAddr, room: &str) -> (String, u64) {
    let (status, body) = common::http_get(admin, &format!("/api/rooms/{room}")).await;
    assert_eq!(status, 200, "{body}");
    let room: Value = serde_json::from_str(&body).unwrap();
    (
        room["epoch"].as_str().unwrap().to_owned(),
        room["offset"].as_u64().unwrap(),
    )
}

fn texts(events: &[Value]) -> Vec<String> {
    let messages = events.iter().filter(|e| e["type"] == "message");
    messages
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

fn left(events: &[Value]) -> Vec<String> {
    let leaves = events
        .iter()
        .filter(|e| e["type"] == "system" && e["kind"] == "left");
    leaves
        .map(|e| e["pseudo"].as_str().unwrap().to_owned())
        .collect()
}

/// Sends with an id until the server acknowledges it, as the page does
/// (a repeat of the id is stored once).
async fn say_until_acked(chat: &mut Chat, text: &str) {
    use app::protocol::{ClientMessage, ServerEvent};
    let id = uuid::Uuid::new_v4();
    let deadline = Instant::now() + DELIVERY;
    while Instant::now() < deadline {
        let say = ClientMessage::Say {
            text: text.into(),
            id: Some(id),
        };
        chat.send(&say).await;
        let answer = Instant::now() + Duration::from_secs(2);
        while let Some(common::Received::Text(frame)) = chat
            .client
            .receive_within(answer.saturating_duration_since(Instant::now()))
            .await
        {
            match serde_json::from_str::<ServerEvent>(&frame) {
                Ok(ServerEvent::Ack { id: acked, .. }) if acked == id => return,
                Ok(ServerEvent::Error { .. }) => break,
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{text:?} never acknowledged");
}

/// Talkers on both instances at once, each `count` messages `every` apart.
async fn talk(talkers: Vec<(Chat, String)>, count: usize, every: Duration) -> Vec<String> {
    let mut tasks = Vec::new();
    for (mut chat, name) in talkers {
        tasks.push(tokio::spawn(async move {
            let mut said = Vec::new();
            for i in 0..count {
                let text = format!("{name} {i}");
                chat.say(&text).await;
                said.push(text);
                tokio::time::sleep(every).await;
            }
            // Each talker's own echo of its last message: all were stored.
            let last = said.last().cloned().unwrap();
            chat.expect(
                |e| matches!(e, app::protocol::ServerEvent::Message(m) if m.text.as_str() == last),
            )
            .await;
            (chat, said)
        }));
    }
    let mut said = Vec::new();
    for task in tasks {
        let (chat, mine) = task.await.unwrap();
        chat.client.close().await;
        said.extend(mine);
    }
    said
}

async fn busy_room_while_the_backend_fails(redis: Option<&Redis>) {
    let receiver = Receiver::start().await;
    let (a, b) = Instance::pair(redis, &receiver.env()).await;
    receiver.fail_for(Duration::from_secs(10));
    let started = Instant::now();
    let mut talkers = Vec::new();
    for (i, server) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let name = format!("talker{i}");
        talkers.push((Chat::join_room(server, "busy", &name).await, name));
    }
    // Relay clients come and go meanwhile, on both instances.
    let mut r1 = Client::connect(&a.relay_url()).await;
    r1.send_text(r#"{"action":"game","who":"r1"}"#).await;
    let r1_id = r1.json().await["id"].clone();
    let mut r2 = Client::connect(&b.relay_url()).await;
    r2.send_text(r#"{"action":"game","who":"r2"}"#).await;
    let r2_id = r2.json().await["id"].clone();
    let said = talk(talkers, 12, Duration::from_millis(60)).await;
    r1.close().await;

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the traffic outlasted the failure"
    );

    let (_, last) = position(a.running.admin, "busy").await;
    delivered_up_to(&receiver, "busy", last, DELIVERY).await;
    let events = receiver.room_events("busy");
    assert_contiguous(&events, 1, last);
    let mut got = texts(&events);
    let mut said = said;
    got.sort();
    said.sort();
    assert_eq!(got, said, "every message once");
    assert!(
        receiver.refused() >= 2,
        "the backend refused, and was retried"
    );

    let relay_done = || async { receiver.relay_events("game").len() >= 3 };
    common::eventually("relay registrations delivered", DELIVERY, relay_done).await;
    let relay = receiver.relay_events("game");
    let of = |id: &Value| -> Vec<String> {
        relay
            .iter()
            .filter(|e| &e["id"] == id)
            .map(|e| e["key"].as_str().unwrap().to_owned())
            .collect()
    };
    let r1_key = |what: &str| format!("relay:{}:{what}", r1_id.as_str().unwrap());
    assert_eq!(of(&r1_id), [r1_key("registered"), r1_key("unregistered")]);
    assert_eq!(of(&r2_id).len(), 1);
    let registered = relay.iter().find(|e| e["id"] == r2_id).unwrap();
    assert_eq!(registered["data"], json!({"action": "game", "who": "r2"}));
    r2.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_every_event_arrives_in_order_while_the_backend_fails_for_10_s() {
    busy_room_while_the_backend_fails(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_every_event_arrives_in_order_while_the_backend_fails_for_10_s() {
    let redis = Redis::start();
    busy_room_while_the_backend_fails(Some(&redis)).await;
}

/// What the backend is owed shows in /metrics (a process of its own: the
/// metrics are the process's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_and_its_age_are_metrics() {
    let receiver = Receiver::start().await;
    let server = Server::start(None, &receiver.env());
    receiver.fail_for(Duration::from_secs(60));
    for i in 0..5 {
        let body = json!({"author": "bot", "text": format!("n{i}")}).to_string();
        let posted =
            common::http_request(server.admin, "POST", "/api/rooms/owed/messages", &[], &body);
        assert_eq!(posted.await.0, 201);
    }
    let metric = |metrics: &str, name: &str| {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
    };
    let owed = || async {
        let (_, metrics) = server.admin_get("/metrics").await;
        metric(&metrics, "webhook_backlog_events") == Some(5.0)
            && metric(&metrics, "webhook_oldest_undelivered_seconds").is_some_and(|s| s >= 1.0)
            && metrics.contains("webhook_requests_total{what=\"event\",result=\"failed\"}")
    };
    common::eventually("5 events owed for a second", DELIVERY, owed).await;
    receiver.fail_for(Duration::ZERO);
    let paid = || async {
        let (_, metrics) = server.admin_get("/metrics").await;
        metric(&metrics, "webhook_backlog_events") == Some(0.0)
    };
    common::eventually("nothing owed", DELIVERY, paid).await;
    assert_eq!(receiver.room_events("owed").len(), 5);
}

/// A backend down while more events than the history holds were appended
/// hears of the lost ones as a gap, then gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_gone_from_the_history_before_delivery_are_a_gap() {
    let receiver = Receiver::start().await;
    let server = Instance::configured(None, &receiver.env()).await;
    receiver.fail_for(Duration::from_secs(4));
    let post = |i: usize| {
        let body = json!({"author": "bot", "text": format!("n{i}")}).to_string();
        async move {
            let admin = server.running.admin;
            let (status, _) =
                common::http_request(admin, "POST", "/api/rooms/gaps/messages", &[], &body).await;
            assert_eq!(status, 201);
        }
    };
    post(0).await;
    // The deliverer is stuck on the first event...
    common::eventually("a refusal", Duration::from_secs(5), || async {
        receiver.refused() > 0
    })
    .await;
    // ...while more than the history's length follows.
    for i in 1..=130 {
        post(i).await;
    }
    delivered_up_to(&receiver, "gaps", 131, DELIVERY).await;
    let events = receiver.room_events("gaps");
    let gap = events
        .iter()
        .position(|e| e["type"] == "gap")
        .expect("a gap");
    assert_contiguous(&events[..gap], 1, 1);
    assert_eq!(events[gap]["after"]["offset"], 1);
    assert_eq!(events[gap]["resume"]["offset"], 32);
    assert_contiguous(&events[gap + 1..], 32, 131);
}

/// kill -9 of the instance delivering a room: another takes the room over
/// from the cursor within the lease (10 s), nothing is missing, and the
/// dead instance's members are announced as having left, also in a room
/// where no other instance had members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_killed_delivering_instance_is_taken_over_and_its_members_leave() {
    let redis = Redis::start();
    let receiver = Receiver::start().await;
    let mut servers = [
        Server::start(Some(&redis), &receiver.env()),
        Server::start(Some(&redis), &receiver.env()),
    ];
    let mut talkers = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let name = format!("talker{i}");
        talkers.push((Chat::join(server, &name).await, name));
    }
    let stays: Vec<Chat> = vec![
        Chat::join(&servers[0], "stays0").await,
        Chat::join(&servers[1], "stays1").await,
        // Rooms with members on one instance only.
        Chat::join_room(&servers[0], "lonely0", "alone0").await,
        Chat::join_room(&servers[1], "lonely1", "alone1").await,
    ];
    // Talk on both; the talkers of the instance that dies are cut short.
    let mut tasks = Vec::new();
    for (mut chat, name) in talkers {
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                if !chat
                    .client
                    .try_send_text(
                        &json!({"type": "say", "text": format!("{name} {i}")}).to_string(),
                    )
                    .await
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // The instance delivering the room now dies.
    let lease = common::keys().hook_lease("general");
    let mut holder = None;
    let found = Instant::now();
    while holder.is_none() && found.elapsed() < Duration::from_secs(10) {
        holder = redis.query::<Option<String>>(redis::cmd("GET").arg(&lease));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let holder = holder.expect("an instance delivers the room");
    let dead = servers
        .iter()
        .position(|s| s.instance_id() == holder)
        .expect("one of ours");
    tokio::time::sleep(Duration::from_millis(500)).await;
    servers[dead].kill9();
    for task in tasks {
        task.await.unwrap();
    }
    let alive = 1 - dead;
    // Its members leave within the presence expiry, and the backend hears it.
    let gone = [format!("talker{dead}"), format!("stays{dead}")];
    let leaves = || async {
        let left = left(&receiver.room_events("general"));
        gone.iter().all(|name| left.contains(name))
    };
    common::eventually("the dead instance's members left", DELIVERY, leaves).await;
    // Also where no other instance had members.
    let lonely = format!("lonely{dead}");
    let alone = || async { left(&receiver.room_events(&lonely)) == [format!("alone{dead}")] };
    common::eventually("a lonely room's member left", DELIVERY, alone).await;
    let (_, last) = position(servers[alive].admin, "general").await;
    delivered_up_to(&receiver, "general", last, DELIVERY).await;
    let events = receiver.room_events("general");
    assert_contiguous(&events, 1, last);
    let survivor = format!("talker{alive}");
    let spoken = texts(&events)
        .into_iter()
        .filter(|t| t.starts_with(&survivor))
        .count();
    assert_eq!(spoken, 60, "every message of the survivor's talker");
    drop(stays);
}

/// Redis restarts (empty) during traffic: the events of the new epoch all
/// arrive, after a gap that says where the old epoch's deliveries stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_gives_a_gap_then_every_event_of_the_new_epoch() {
    let mut redis = Redis::start();
    let receiver = Receiver::start().await;
    let (a, b) = Instance::pair(Some(&redis), &receiver.env()).await;
    let mut alice = Chat::join(&a, "alice").await;
    let mut bob = Chat::join(&b, "bob").await;
    for i in 0..10 {
        alice.say(&format!("before {i}")).await;
    }
    bob.expect(
        |e| matches!(e, app::protocol::ServerEvent::Message(m) if m.text.as_str() == "before 9"),
    )
    .await;
    let (old_epoch, old_last) = position(a.running.admin, "general").await;
    delivered_up_to(&receiver, "general", old_last, DELIVERY).await;

    redis.restart();
    // Both instances find Redis again; what is said now is a new epoch.
    let ready = || async {
        let up = |i: &Instance| {
            let i = i.running.admin;
            async move {
                common::http_get(i, "/healthz")
                    .await
                    .1
                    .contains("\"redis\":\"ok\"")
            }
        };
        up(&a).await && up(&b).await
    };
    common::eventually("Redis is back for both", DELIVERY, ready).await;
    let mut said = Vec::new();
    for i in 0..10 {
        let (speaker, text) = if i % 2 == 0 {
            (&mut alice, format!("after {i}"))
        } else {
            (&mut bob, format!("after {i}"))
        };
        say_until_acked(speaker, &text).await;
        said.push(text);
    }
    let (new_epoch, new_last) = position(a.running.admin, "general").await;
    assert_ne!(new_epoch, old_epoch);
    let done = || async {
        let events = receiver.room_events("general");
        events.last().is_some_and(|e| {
            e["epoch"] == new_epoch.as_str() && e["offset"].as_u64() >= Some(new_last)
        })
    };
    common::eventually("the new epoch delivered", DELIVERY, done).await;
    let events = receiver.room_events("general");
    let gap = events
        .iter()
        .position(|e| e["type"] == "gap")
        .expect("a gap");
    assert_contiguous(&events[..gap], 1, old_last);
    // Where the old epoch's deliveries stopped, as far as the instance that
    // tells knows it (null: it appended there but did not deliver).
    let after = &events[gap]["after"];
    assert!(
        after.is_null()
            || (after["epoch"] == old_epoch.as_str() && after["offset"].as_u64() <= Some(old_last)),
        "{after}"
    );
    assert_eq!(
        events[gap]["resume"],
        json!({"epoch": new_epoch, "offset": 1})
    );
    let new: Vec<Value> = events[gap + 1..].to_vec();
    assert_contiguous(&new, 1, new_last);
    let got: HashMap<String, usize> = texts(&new).into_iter().map(|t| (t, 1)).collect();
    for text in said {
        assert!(got.contains_key(&text), "{text} delivered");
    }
}

/// A stopping instance (SIGTERM, a reload) gives its rooms' leases back:
/// the other instance delivers them at once, not once the lease expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_stopping_instance_hands_its_rooms_over_at_once() {
    let redis = Redis::start();
    let receiver = Receiver::start().await;
    let (a, b) = Instance::pair(Some(&redis), &receiver.env()).await;
    receiver.fail_for(Duration::from_secs(3600));
    let post = |admin: SocketAddr, text: &str| {
        let body = json!({"author": "bot", "text": text}).to_string();
        async move {
            let posted =
                common::http_request(admin, "POST", "/api/rooms/handover/messages", &[], &body);
            assert_eq!(posted.await.0, 201);
        }
    };
    post(a.running.admin, "first").await;
    // Some instance delivers the room, and is stuck on a failing backend.
    let lease = common::keys().hook_lease("handover");
    let holder = || redis.query::<Option<String>>(redis::cmd("GET").arg(&lease));
    let held = || async { holder().is_some() && receiver.refused() > 0 };
    common::eventually("the room is being delivered", DELIVERY, held).await;
    let (stopping, staying) = if holder() == Some(a.running.instance.to_string()) {
        (a, b)
    } else {
        (b, a)
    };
    let stopped = stopping.running.instance.to_string();
    stopping.stop().await;
    // Given back (and maybe taken by the other instance already).
    assert_ne!(holder(), Some(stopped), "the lease was given back");
    receiver.fail_for(Duration::ZERO);
    post(staying.running.admin, "second").await;
    // Well within the 10 s a lease left to expire would take.
    let started = Instant::now();
    delivered_up_to(&receiver, "handover", 2, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        texts(&receiver.room_events("handover")),
        ["first", "second"]
    );
}

/// A relay client that registers while Redis is away is announced once it
/// is back: the event waits in the instance, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_registration_while_redis_is_away_is_announced_when_it_is_back() {
    let mut redis = Redis::start();
    let receiver = Receiver::start().await;
    let server = Instance::configured(Some(&redis), &receiver.env()).await;
    redis.stop();
    let down = || async { server.health().await["redis"] != "ok" };
    common::eventually("Redis is seen down", DELIVERY, down).await;
    let mut client = Client::connect(&server.relay_url()).await;
    client.send_text(r#"{"action":"away","who":"r"}"#).await;
    let id = client.json().await["id"].clone();
    assert!(id.is_string(), "registered while Redis is away");
    redis.restart();
    let announced = || async { !receiver.relay_events("away").is_empty() };
    common::eventually("the registration announced", DELIVERY, announced).await;
    let events = receiver.relay_events("away");
    assert_eq!(
        events[0]["key"],
        format!("relay:{}:registered", id.as_str().unwrap())
    );
    assert_eq!(events[0]["data"], json!({"action": "away", "who": "r"}));
    client.close().await;
}

/// Webhook settings that cannot work stop the server at start, naming
/// what is wrong.
#[test]
fn a_webhook_needs_a_usable_address_and_a_secret() {
    use clap::Parser;
    let check = |extra: &[&str]| {
        let mut args = vec!["server"];
        args.extend_from_slice(extra);
        server::config::Config::try_parse_from(args)
            .unwrap()
            .validate()
            .map_err(|err| err.to_string())
    };
    let url = "http://127.0.0.1:9/hook";
    let secret = common::WEBHOOK_SECRET;
    let refused = check(&["--webhook-url", url]).unwrap_err();
    assert!(refused.contains("WEBHOOK_SECRET"), "{refused}");
    assert!(check(&["--webhook-url", url, "--webhook-secret", "short"]).is_err());
    let refused = check(&["--webhook-url", "ftp://h/x", "--webhook-secret", secret]).unwrap_err();
    assert!(refused.contains("WEBHOOK_URL"), "{refused}");
    assert!(check(&["--webhook-url", "http://", "--webhook-secret", secret]).is_err());
    assert!(check(&["--webhook-url", url, "--webhook-secret", secret]).is_ok());
    assert!(check(&[]).is_ok(), "no webhook: nothing to check");
}

/// The docs' code for checking a request (docs/api.md), in Python and in Node, run
/// on a real delivery: it accepts it, and refuses it replayed six minutes
/// later (the time is signed: moving it breaks the signature; keeping it
/// is past the tolerance) or with its body changed. Every try carries the
/// same `X-Webhook-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_check_a_request_in_python_and_in_node() {
    let receiver = Receiver::start().await;
    let server = Instance::configured(None, &receiver.env()).await;
    receiver.fail_for(Duration::from_millis(1_500));
    let body = json!({"author": "bot", "text": "checked"}).to_string();
    let posted = common::http_request(
        server.running.admin,
        "POST",
        "/api/rooms/checked/messages",
        &[],
        &body,
    );
    assert_eq!(posted.await.0, 201);
    delivered_up_to(&receiver, "checked", 1, DELIVERY).await;
    let delivery = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.body["event"]["text"] == "checked")
        .unwrap();
    assert!(delivery.signed, "{delivery:?}");
    assert_eq!(delivery.id.len(), 32, "{delivery:?}");
    assert!(receiver.refused() > 0, "it was retried");

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    let section = &readme[readme
        .find("Checking a request, in Python")
        .expect("the section")..];
    let block = |fence: &str| {
        let start = section
            .find(&format!("```{fence}\n"))
            .expect("a code block")
            + fence.len()
            + 4;
        let end = start + section[start..].find("```").expect("its end");
        section[start..end].to_owned()
    };
    let dir = std::env::temp_dir().join(format!("webhook-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body_file = dir.join("body.json");
    let python = dir.join("check.py");
    std::fs::write(
        &python,
        block("python")
            + "\nimport sys\nprint(verified(open(sys.argv[1], 'rb').read(), sys.argv[2], sys.argv[3]))\n",
    )
    .unwrap();
    let node = dir.join("check.js");
    std::fs::write(
        &node,
        block("js")
            + "\nconst [file, header, secret] = process.argv.slice(2);\nconsole.log(verified(require('node:fs').readFileSync(file), header, secret) ? 'True' : 'False');\n",
    )
    .unwrap();
    let check = |program: &str, script: &std::path::Path, body: &str, header: &str| {
        std::fs::write(&body_file, body).unwrap();
        let out = std::process::Command::new(program)
            .arg(script)
            .arg(&body_file)
            .arg(header)
            .arg(common::WEBHOOK_SECRET)
            .output()
            .unwrap_or_else(|err| panic!("{program}: {err}"));
        assert!(out.status.success(), "{program}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    // The same request six minutes later: signed again with the old time
    // it verifies but is too old; with a new time it does not verify.
    let t: u64 = delivery.signature[2..delivery.signature.find(',').unwrap()]
        .parse()
        .unwrap();
    let v1 = &delivery.signature[delivery.signature.find("v1=").unwrap()..];
    let moved = format!("t={},{v1}", t + 360);
    let tampered = delivery.raw.replace("checked", "chocked");
    for (program, script) in [("python3", &python), ("node", &node)] {
        let run = |body: &str, header: &str| check(program, script, body, header);
        assert_eq!(run(&delivery.raw, &delivery.signature), "True", "{program}");
        assert_eq!(run(&delivery.raw, &moved), "False", "{program}: moved time");
        assert_eq!(
            run(&tampered, &delivery.signature),
            "False",
            "{program}: body"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    let ids: std::collections::HashSet<String> = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.key == delivery.key)
        .map(|d| d.id)
        .collect();
    assert_eq!(ids.len(), 1, "one id for every try of one event");
}

/// More busy rooms than an instance delivers at once (32) do not starve a
/// quiet room: its one event arrives while they keep talking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_rooms_do_not_starve_a_quiet_one() {
    let receiver = Receiver::start().await;
    let server = Instance::configured(None, &receiver.env()).await;
    let admin = server.running.admin;
    let post = move |room: String, text: String| async move {
        let body = json!({"author": "bot", "text": text}).to_string();
        let path = format!("/api/rooms/{room}/messages");
        let posted = common::http_request(admin, "POST", &path, &[], &body).await;
        assert_eq!(posted.0, 201);
    };
    let busy_until = Instant::now() + Duration::from_secs(12);
    let mut busy = tokio::task::JoinSet::new();
    for room in 0..40 {
        busy.spawn(async move {
            let mut n = 0;
            while Instant::now() < busy_until {
                post(format!("busy{room}"), format!("{n}")).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        });
    }
    // Every busy room is being delivered (or waits for a slot).
    tokio::time::sleep(Duration::from_secs(3)).await;
    post("quiet".into(), "hello".into()).await;
    let started = Instant::now();
    delivered_up_to(&receiver, "quiet", 1, Duration::from_secs(8)).await;
    let took = started.elapsed();
    assert!(
        Instant::now() < busy_until,
        "delivered in {took:?}, before the busy rooms fell silent"
    );
    while busy.join_next().await.is_some() {}
}

/// 10,000 relay registrations with webhooks on, each with a 2 KB first
/// message and closed at once, leave nothing behind: no stream per action,
/// and the server's memory returns within 10% of where it was once they
/// are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_relay_registrations_leave_no_memory_behind() {
    let receiver = Receiver::start().await;
    let server = Server::start(None, &receiver.env());
    let relay = server.relay_url();
    let padding = "x".repeat(2_000);
    let register = |batch: usize| {
        let (relay, padding) = (relay.clone(), padding.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..100 {
                let (relay, padding) = (relay.clone(), padding.clone());
                tasks.spawn(async move {
                    let mut client = Client::connect(&relay).await;
                    let registration = json!({"action": format!("a{batch}-{i}"), "pad": padding});
                    client.send_json(registration).await;
                    assert_eq!(client.json().await["type"], "registered");
                    client.close().await;
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
        }
    };
    let quiet = || async {
        let before = receiver.deliveries().len();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        receiver.deliveries().len() == before
    };
    // Warm up (pools, buffers and tables at their working size), then
    // measure from there.
    for batch in 0..10 {
        register(batch).await;
    }
    common::eventually("the webhooks delivered", DELIVERY, quiet).await;
    let before = common::resident_kib(server.pid());
    for batch in 10..110 {
        register(batch).await;
    }
    common::eventually("the webhooks delivered", DELIVERY, quiet).await;
    let after = common::resident_kib(server.pid());
    eprintln!("10,000 registrations: RSS {before} KiB -> {after} KiB");
    assert!(
        after * 10 <= before * 11,
        "RSS {before} KiB -> {after} KiB after 10,000 registrations came and went"
    );
    assert_eq!(server.health().await["connections"]["relay"], 0);
}

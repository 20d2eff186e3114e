//! The embedded default keeps its rooms on disk (`DATA_DIR`): a message is
//! acknowledged only once it is in the file; after `kill -9` or a clean
//! stop the same epoch goes on with every acknowledged event at its offset;
//! a reload hands the file from the old process to the new one; a second
//! server on the same file does not serve it meanwhile.

mod common;

use app::protocol::{ClientMessage, ServerEvent};
use common::tempdir::Dir;
use common::{Chat, Received, Server};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The room's stored messages and system events: (epoch, offset, id).
async fn stored(server: &Server, query: &str) -> (bool, Vec<(String, u64, Uuid)>) {
    let (chat, history, _) = Chat::open(server, query).await;
    let events = history
        .iter()
        .filter_map(|event| {
            let position = event.position()?;
            let id = match event {
                ServerEvent::Message(m) => m.id,
                ServerEvent::System(s) => s.id,
                _ => return None,
            };
            Some((position.epoch, position.offset, id))
        })
        .collect();
    (chat.recovered, events)
}

/// Ten talkers send at once, each message with an id; the server is
/// killed (-9) once some are acknowledged and others are in flight. Started
/// again on its file: every acknowledged message is there once, at the
/// offset its ack gave, in the same epoch, offsets without a hole; a client
/// resuming from the middle gets exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let env = [("DATA_DIR", data.as_str())];
    let mut first = Server::start(None, &env);
    let (acks, mut acked) = mpsc::unbounded_channel();
    let mut talkers = Vec::new();
    for t in 0..10 {
        let mut chat = Chat::join(&first, &format!("t{t}")).await;
        let acks = acks.clone();
        talkers.push(tokio::spawn(async move {
            for n in 0..6 {
                let say = ClientMessage::Say {
                    text: format!("t{t} m{n}"),
                    id: Some(Uuid::new_v4()),
                };
                chat.send(&say).await;
            }
            // Every ack until the server dies.
            while let Some(Received::Text(text)) =
                chat.client.receive_within(Duration::from_secs(20)).await
            {
                if let Ok(ServerEvent::Ack { id, epoch, offset }) = serde_json::from_str(&text) {
                    let _ = acks.send((id, epoch, offset));
                }
            }
        }));
    }
    drop(acks);
    let mut got = HashMap::new();
    while got.len() < 20 {
        let (id, epoch, offset) = acked.recv().await.expect("acks");
        got.insert(id, (epoch, offset));
    }
    first.kill9();
    while let Some((id, epoch, offset)) = acked.recv().await {
        got.insert(id, (epoch, offset));
    }
    for talker in talkers {
        talker.await.unwrap();
    }

    let second = Server::start(None, &env);
    let (_, events) = stored(&second, "").await;
    let epoch = &events[0].0;
    for (n, (e, offset, _)) in events.iter().enumerate() {
        assert_eq!((e, *offset), (epoch, n as u64 + 1), "one epoch, no hole");
    }
    for (id, (e, offset)) in &got {
        let found: Vec<_> = events.iter().filter(|(_, _, i)| i == id).collect();
        assert_eq!(found.len(), 1, "{id} is stored once");
        assert_eq!(
            (&found[0].0, found[0].1),
            (e, *offset),
            "at its ack's place"
        );
    }
    let middle = &events[events.len() / 2];
    let (recovered, rest) = stored(&second, &format!("?since={}:{}", middle.0, middle.1)).await;
    assert!(recovered, "the same epoch goes on");
    assert_eq!(rest[..], events[events.len() / 2 + 1..]);
    // And it goes on from there.
    let mut late = Chat::join(&second, "late").await;
    late.say("after the crash").await;
    let message = late.expect_message().await;
    assert_eq!(
        (&message.epoch, message.offset),
        (epoch, events.len() as u64 + 2)
    );
}

/// A reload: the new process starts on the file while the old one holds it,
/// waits, and takes it over once the old one stopped: the same rooms, the
/// same epoch. It did not serve the file while the other held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_hands_the_data_file_over() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let old = Server::start(None, &[("DATA_DIR", data.as_str())]);
    let mut alice = Chat::join(&old, "alice").await;
    for n in 0..3 {
        alice.say(&format!("before {n}")).await;
        alice.expect_message().await;
    }
    let (_, before) = stored(&old, "").await;

    let (ready, started) = std::sync::mpsc::channel();
    let spawning = {
        let data = data.clone();
        std::thread::spawn(move || {
            let new = Server::start(None, &[("DATA_DIR", data.as_str())]);
            let _ = ready.send(());
            new
        })
    };
    // The new one waits while the old one holds the file.
    assert!(started.recv_timeout(Duration::from_secs(2)).is_err());
    old.signal("TERM");
    let new = spawning.join().expect("the new process starts");
    assert!(
        new.log_lines("the data file is held by another process (a reload?): waiting for it")
            .len()
            == 1,
        "it said why it waited"
    );
    let (_, after) = stored(&new, "").await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "the same rooms, the same epoch"
    );
}

/// Pages back from the newest with `older`, page sizes cycling through
/// `sizes`; returns every event's offset, oldest first, and how many pages
/// it took.
async fn page_back(chat: &mut Chat, newest: u64, sizes: &[u32]) -> (Vec<u64>, usize) {
    let mut before = newest + 1;
    let mut offsets = Vec::new();
    for (pages, size) in sizes.iter().cycle().enumerate() {
        chat.send(&ClientMessage::Older {
            before,
            limit: *size,
        })
        .await;
        let (events, oldest) = match chat.expect(|e| matches!(e, ServerEvent::Page { .. })).await {
            ServerEvent::Page { events, oldest, .. } => (events, oldest),
            _ => unreachable!(),
        };
        assert!(events.len() <= *size as usize);
        let page: Vec<u64> = events
            .iter()
            .map(|e| e.position().unwrap().offset)
            .collect();
        if let Some(first) = page.first() {
            before = *first;
        }
        offsets.splice(0..0, page);
        if oldest {
            return (offsets, pages + 1);
        }
    }
    unreachable!()
}

/// Scroll-back through 1,000 stored events with odd page sizes gives
/// exactly the stream, also after a restart; the server API's `before=`
/// gives the same pages; bad offsets and limits are refused with a typed
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_back_through_a_thousand_events_gives_exactly_the_stream() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let env = [("DATA_DIR", data.as_str())];
    let first = Server::start(None, &env);
    common::post_messages(first.admin, "long", 0, 1_000).await;
    drop(first);

    let server = Server::start(None, &env);
    let (mut reader, history, _) = Chat::open(&server, "?room=long").await;
    assert_eq!(history.len(), 100, "the history frame holds the last 100");
    let (offsets, pages) = page_back(&mut reader, 1_000, &[7, 13, 200, 1, 99]).await;
    assert_eq!(offsets, (1..=1_000).collect::<Vec<u64>>());
    assert!(pages > 5, "{pages} pages");

    let (status, body) =
        common::http_get(server.admin, "/api/rooms/long/history?before=11&limit=4").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let at: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        (at, &page["oldest"]),
        (vec![7, 8, 9, 10], &serde_json::json!(false))
    );
    let (_, body) =
        common::http_get(server.admin, "/api/rooms/long/history?before=3&limit=200").await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (page["events"].as_array().unwrap().len(), &page["oldest"]),
        (2, &serde_json::json!(true))
    );

    for (before, limit) in [(0, 10), (5, 0), (5, 201)] {
        reader.send(&ClientMessage::Older { before, limit }).await;
        assert_eq!(
            reader.expect_error().await,
            app::protocol::ErrorCode::InvalidMessage
        );
        let path = format!("/api/rooms/long/history?before={before}&limit={limit}");
        assert_eq!(common::http_get(server.admin, &path).await.0, 400);
    }
}

/// Without a data file scroll-back reaches as far as memory holds (the
/// last 100), and with Redis as far as it retains (1,000 by default), then
/// says it is the oldest.
async fn paging_back_reaches_what_is_retained(redis: Option<&common::Redis>, first: u64) {
    let server = common::Instance::configured(redis, &[]).await;
    common::post_messages(server.running.admin, "window", 0, 150).await;
    let (mut reader, _, _) = Chat::open(&server, "?room=window").await;
    let (offsets, _) = page_back(&mut reader, 150, &[30]).await;
    assert_eq!(offsets, (first..=150).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_back_reaches_the_history_window_in_memory() {
    paging_back_reaches_what_is_retained(None, 51).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_back_reaches_what_redis_retains() {
    let redis = common::Redis::start();
    paging_back_reaches_what_is_retained(Some(&redis), 1).await;
}

/// A client away for 5,000 events (far more than the history in memory)
/// resumes from its position: every missed event, in pages of at most 200,
/// `recovered`, then the live events with nothing lost or doubled.
async fn away_for_5000_events(server: &Server) {
    common::post_messages(server.admin, "busy", 0, 10).await;
    let (away, before, _) = Chat::open(server, "?room=busy").await;
    let left_at = away.position.clone();
    assert_eq!(before.len(), 10);
    drop(away);
    common::post_messages(server.admin, "busy", 10, 5_000).await;

    let query = format!("?room=busy&since={}:{}", left_at.epoch, left_at.offset);
    let (mut back, missed, _) = Chat::open(server, &query).await;
    assert!(back.recovered, "everything missed is still stored");
    let offsets: Vec<u64> = missed
        .iter()
        .map(|e| e.position().unwrap().offset)
        .collect();
    assert_eq!(offsets, (11..=5_010).collect::<Vec<u64>>());
    // Live from there: the next events, once each.
    common::post_messages(server.admin, "busy", 5_010, 3).await;
    let live = back.messages(3).await;
    let live: Vec<u64> = live.iter().map(|m| m.offset).collect();
    assert_eq!(live, [5_011, 5_012, 5_013]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_for_5000_events_catches_up_in_pages_then_goes_live() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    away_for_5000_events(&Server::start(None, &[("DATA_DIR", data.as_str())])).await;
}

/// The same with Redis (one, or a cluster), told to retain 10,000 events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_client_away_for_5000_events_catches_up_in_pages_then_goes_live() {
    let redis = common::Redis::start();
    let retained = [("HISTORY_MAX_EVENTS", "10000")];
    away_for_5000_events(&Server::start(Some(&redis), &retained)).await;
}

/// A moderator (here the server API) deletes a message far older than
/// memory holds, as a reader scrolled back to it: it becomes a tombstone
/// at its offset, in the data file too (after a restart), and the deletion
/// is appended to the stream; deleting it again is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_message_is_deleted_where_it_is_stored() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let env = [("DATA_DIR", data.as_str())];
    let server = Server::start(None, &env);
    let mut old_id = String::new();
    for n in 0..300 {
        let body = serde_json::json!({"author": "bot", "text": format!("m{n}")}).to_string();
        let path = "/api/rooms/old/messages";
        let (status, answer) = common::http_request(server.admin, "POST", path, &[], &body).await;
        assert_eq!(status, 201, "{answer}");
        if n == 4 {
            let stored: serde_json::Value = serde_json::from_str(&answer).unwrap();
            old_id = stored["id"].as_str().unwrap().to_owned();
        }
    }
    let path = format!("/api/rooms/old/messages/{old_id}");
    let (status, body) = common::http_request(server.admin, "DELETE", &path, &[], "").await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = common::http_request(server.admin, "DELETE", &path, &[], "").await;
    assert_eq!(status, 404, "already deleted");

    let tombstone = |server: &Server| {
        let admin = server.admin;
        async move {
            let (_, body) =
                common::http_get(admin, "/api/rooms/old/history?before=6&limit=1").await;
            let page: serde_json::Value = serde_json::from_str(&body).unwrap();
            page["events"][0].clone()
        }
    };
    let deleted = tombstone(&server).await;
    assert_eq!(
        (
            &deleted["offset"],
            &deleted["id"],
            &deleted["deleted"],
            &deleted["text"]
        ),
        (
            &serde_json::json!(5),
            &serde_json::json!(old_id),
            &serde_json::json!(true),
            &serde_json::json!("")
        ),
        "{deleted}"
    );
    let (_, body) =
        common::http_get(server.admin, "/api/rooms/old/history?before=302&limit=1").await;
    let newest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(newest["events"][0]["type"], "deleted", "{newest}");
    assert_eq!(newest["events"][0]["target"], serde_json::json!(old_id));
    drop(server);

    let server = Server::start(None, &env);
    assert_eq!(tombstone(&server).await, deleted, "as stored");
}

/// One sender's burst on the data file: its messages share commits, yet
/// every frame is answered in the order it was sent, the acks at
/// consecutive offsets, a malformed frame's error after the acks of the
/// messages before it, a page after the acks of those before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_sender_is_answered_in_the_order_sent() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(None, &[("DATA_DIR", data.as_str())]);
    let mut chat = Chat::join(&server, "burst").await;
    let mut sent = Vec::new();
    for n in 0..34 {
        if n == 24 {
            chat.client.send_text("{").await;
        }
        let id = Uuid::new_v4();
        sent.push(id);
        let text = format!("m{n}");
        chat.send(&ClientMessage::Say { text, id: Some(id) }).await;
    }
    chat.send(&ClientMessage::Older {
        before: 1_000,
        limit: 5,
    })
    .await;
    // The answers to this sender, in the order they came.
    let mut answers = Vec::new();
    while answers.len() < 36 {
        match chat.event().await {
            ServerEvent::Ack { id, offset, .. } => answers.push(format!("ack {id} {offset}")),
            ServerEvent::Error { .. } => answers.push("error".to_owned()),
            ServerEvent::Page { .. } => answers.push("page".to_owned()),
            _ => {}
        }
    }
    let first = answers[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let mut expected: Vec<String> = sent
        .iter()
        .enumerate()
        .map(|(n, id)| format!("ack {id} {}", first + n as u64))
        .collect();
    expected.insert(24, "error".to_owned());
    expected.push("page".to_owned());
    assert_eq!(answers, expected);
}

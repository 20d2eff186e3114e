//! The action relay, wire-compatible with the original Node server.

mod common;

use common::{
    eventually, free_port, keys, Client, Endpoint, Instance, Received, Redis, Server, WAIT,
};
use serde_json::{json, Value};
use std::time::Duration;

async fn register(url: &str, action: &str) -> (Client, String) {
    let mut client = Client::connect(url).await;
    client
        .send_json(json!({"action": action, "name": "test"}))
        .await;
    let reply = client.json().await;
    assert_eq!(reply["type"], "registered");
    assert_eq!(reply["action"], action);
    let id = reply["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    (client, id)
}

/// The next frame `client` gets is `frame`: a fence, sent after whatever
/// it must not have got, so nothing unwanted came before it.
async fn next_is(client: &mut Client, frame: &str) {
    match client.receive().await {
        Received::Text(text) => assert_eq!(text, frame, "the fence comes next"),
        other => panic!("expected {frame}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_message_gets_an_error_and_close_1008() {
    let server = Instance::configured(None, &[]).await;
    for first in [
        "not json".to_owned(),
        "[1,2]".to_owned(),
        "42".to_owned(),
        json!({"name": "no action"}).to_string(),
        json!({"action": ""}).to_string(),
        json!({"action": 7}).to_string(),
    ] {
        let mut client = Client::connect(&server.relay_url()).await;
        client.send_text(&first).await;
        let error = client.json().await;
        assert_eq!(error["type"], "error", "for {first}");
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(client.closed().await, Some(1008), "for {first}");
    }
    let mut binary = Client::connect(&server.relay_url()).await;
    binary.send_binary(br#"{"action":"a"}"#.to_vec()).await;
    assert_eq!(binary.json().await["type"], "error");
    assert_eq!(binary.closed().await, Some(1008), "a binary first frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_every_other_client_of_the_action_only() {
    let server = Instance::configured(None, &[]).await;
    let url = server.relay_url();
    let (mut sender, _) = register(&url, "lights").await;
    let (mut peer1, _) = register(&url, "lights").await;
    let (mut peer2, _) = register(&url, "lights").await;
    let (mut other, _) = register(&url, "music").await;

    let frames = [r#"{"on": true,  "level":3}"#, "[1, 2]", "\"text\"", "null"];
    for frame in frames {
        sender.send_text(frame).await;
    }
    for peer in [&mut peer1, &mut peer2] {
        for frame in frames {
            match peer.receive().await {
                Received::Text(text) => assert_eq!(text, frame, "byte for byte"),
                other => panic!("{other:?}"),
            }
        }
    }
    // The sender got none of its own frames, the other action none of
    // them: a frame sent after is the next thing each of them gets.
    peer1.send_text("{\"fence\":1}").await;
    next_is(&mut sender, "{\"fence\":1}").await;
    let (mut music, _) = register(&url, "music").await;
    music.send_text("{\"fence\":2}").await;
    next_is(&mut other, "{\"fence\":2}").await;

    // A frame that is not JSON is refused, not forwarded; the client stays:
    // the next frame peer1 gets is the one sent after it.
    sender.send_text("{oops").await;
    let error = sender.json().await;
    assert_eq!(error["type"], "error");
    sender.send_text("{\"still\":\"open\"}").await;
    assert!(matches!(peer1.receive().await, Received::Text(t) if t == "{\"still\":\"open\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_oversize_and_floods_are_answered() {
    let server = Instance::configured(
        None,
        &[
            ("MAX_MESSAGE_BYTES", "2048"),
            ("RELAY_RATE_LIMIT_PER_SEC", "5"),
            ("RELAY_RATE_LIMIT_BURST", "5"),
        ],
    )
    .await;
    let url = server.relay_url();
    let (mut client, _) = register(&url, "a").await;
    client.send_binary(vec![0, 1, 2]).await;
    let error = client.json().await;
    assert_eq!(error["type"], "error");
    assert!(error["error"].as_str().unwrap().contains("binary"));

    let (mut big, _) = register(&url, "a").await;
    big.send_text(&format!("\"{}\"", "x".repeat(4096))).await;
    assert_eq!(big.closed().await, Some(1009));

    let (mut flood, _) = register(&url, "a").await;
    let mut rate_errors = 0;
    let code = loop {
        if !flood.try_send_text("{}").await {
            break flood.closed().await;
        }
        match flood.receive_within(Duration::from_millis(100)).await {
            Some(Received::Text(t)) if t.contains("too many") => rate_errors += 1,
            Some(Received::Close(code)) => break code,
            _ => {}
        }
    };
    assert!(rate_errors > 0);
    assert_eq!(code, Some(1008));
}

#[tokio::test]
async fn the_dedicated_relay_port_accepts_any_path() {
    let port = free_port();
    let server = Server::start(None, &[("RELAY_PORT", &port.to_string())]);
    assert_eq!(server.relay.unwrap().port(), port);
    let url = format!("ws://127.0.0.1:{port}/any/path");
    let (mut a, _) = register(&url, "x").await;
    let (mut b, _) = register(&format!("ws://127.0.0.1:{port}"), "x").await;
    a.send_text("{\"hello\":1}").await;
    assert!(matches!(b.receive().await, Received::Text(t) if t == "{\"hello\":1}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_crosses_instances_and_redis_holds_exactly_the_connected_ids() {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let (mut on_a, id_a) = register(&a.relay_url(), "sync").await;
    let (mut on_b, id_b) = register(&b.relay_url(), "sync").await;
    let (mut other, id_other) = register(&b.relay_url(), "other").await;

    let mut ids = vec![id_a.clone(), id_b.clone()];
    ids.sort();
    assert_eq!(redis.hkeys(&keys().relay_clients("sync")), ids);
    assert_eq!(redis.hkeys(&keys().relay_clients("other")), [id_other]);

    for i in 0..10 {
        on_a.send_json(json!({"seq": i})).await;
    }
    for i in 0..10 {
        assert_eq!(on_b.json().await, json!({"seq": i}));
    }
    // No echo of its own frames came back to the sender, and nothing of
    // "sync" reached the other action: frames sent after are the next
    // things they get.
    on_b.send_json(json!({"back": true})).await;
    assert_eq!(on_a.json().await, json!({"back": true}));
    let (mut other_on_a, _) = register(&a.relay_url(), "other").await;
    other_on_a.send_json(json!({"fence": true})).await;
    assert_eq!(other.json().await, json!({"fence": true}));

    on_a.close().await;
    eventually(
        "the closed client leaves Redis",
        Duration::from_secs(5),
        || async { redis.hkeys(&keys().relay_clients("sync")) == [id_b.clone()] },
    )
    .await;
    let registration: Option<String> = redis.query(
        redis::cmd("HGET")
            .arg(keys().relay_clients("sync"))
            .arg(&id_b),
    );
    let registration: Value = serde_json::from_str(&registration.unwrap()).unwrap();
    assert_eq!(registration["name"], "test", "registration data is kept");

    on_b.close().await;
    other.close().await;
    other_on_a.close().await;
    eventually(
        "every relay key is gone",
        Duration::from_secs(5),
        || async { redis.keys("chat:*:relay:*").is_empty() },
    )
    .await;
    // With no listener left, no instance stays subscribed to the actions.
    eventually(
        "relay channels unsubscribed",
        Duration::from_secs(5),
        || async { redis.subscribed_channels("chat:ch:*:relay:*").is_empty() },
    )
    .await;
}

#[tokio::test]
async fn a_crashed_instances_ids_are_swept() {
    let redis = Redis::start();
    let fast = [("HEARTBEAT_TTL_SECS", "3")];
    let a = Server::start(Some(&redis), &fast);
    let mut doomed = Server::start(Some(&redis), &fast);
    let (_kept, kept_id) = register(&a.relay_url(), "job").await;
    let (_lost, _) = register(&doomed.relay_url(), "job").await;
    assert_eq!(redis.hkeys(&keys().relay_clients("job")).len(), 2);
    doomed.kill9();
    eventually(
        "the dead instance's ids are swept",
        Duration::from_secs(15),
        || async { redis.hkeys(&keys().relay_clients("job")) == [kept_id.clone()] },
    )
    .await;
}

/// Reads (so answers pings) in a task until told to stop, then hands the
/// client back; any frame it gets meanwhile fails the test.
fn keep_reading(
    mut client: Client,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Client>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reading = tokio::spawn(async move {
        tokio::select! {
            got = client.receive_within(Duration::from_secs(120)) => {
                panic!("a reading client got {got:?}")
            }
            _ = stopped => client,
        }
    });
    (stop, reading)
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_unregistered() {
    let redis = Redis::start();
    let server = Server::start(Some(&redis), &[("PING_INTERVAL_SECS", "1")]);
    let registry = keys().relay_clients("k");
    // Both read (and so answer pings) until the preconditions are checked,
    // however long that takes on a busy machine; then `_silent` stops
    // reading and never answers again.
    let (silent, silent_id) = register(&server.relay_url(), "k").await;
    let (stop_silent, silent) = keep_reading(silent);
    let (alive, alive_id) = register(&server.relay_url(), "k").await;
    let (stop, reading) = keep_reading(alive);
    let mut both = vec![silent_id.clone(), alive_id.clone()];
    both.sort();
    assert_eq!(redis.hkeys(&registry), both, "both registered");
    assert_eq!(server.health().await["connections"]["relay"], 2);
    let _ = stop_silent.send(());
    let _silent = silent.await.expect("still connected");
    eventually("the silent client is dropped", WAIT, || async {
        server.health().await["connections"]["relay"] == 1
    })
    .await;
    eventually("the silent client is unregistered", WAIT, || async {
        redis.hkeys(&registry) == [alive_id.clone()]
    })
    .await;
    // Three more ping intervals (what the test is about): the client that
    // answers them stays connected and registered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(());
    let _alive = reading.await.expect("still connected");
    assert_eq!(server.health().await["connections"]["relay"], 1);
    assert_eq!(redis.hkeys(&registry), [alive_id]);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_not_buffered() {
    let server = Server::start(
        None,
        &[
            ("OUTBOUND_QUEUE", "4"),
            ("RELAY_RATE_LIMIT_PER_SEC", "100000"),
            ("RELAY_RATE_LIMIT_BURST", "100000"),
            ("RELAY_BYTES_PER_SEC", "1000000000"),
        ],
    );
    let (mut sender, _) = register(&server.relay_url(), "bulk").await;
    let (mut slow, _) = register(&server.relay_url(), "bulk").await;
    let frame = format!("\"{}\"", "x".repeat(60_000));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The slow client never reads: once the kernel buffers are full its
    // queue fills and the server drops it.
    while server.health().await["connections"]["relay"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "slow consumer dropped"
        );
        for _ in 0..20 {
            sender.send_text(&frame).await;
        }
    }
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("slow_consumers_total{kind=\"relay\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The close frame (1013) queues behind megabytes the client never read:
    // it arrives if there was room, otherwise the socket is simply dropped.
    let code = slow.closed().await;
    assert!(matches!(code, Some(1013) | None), "{code:?}");
}

/// Reads `n` JSON messages and checks they are `{key: 0}`, `{key: 1}` ...
async fn expect_sequence(mut client: Client, key: &'static str, n: u64) -> Client {
    for i in 0..n {
        assert_eq!(client.json().await, json!({ key: i }), "message {i} of {n}");
    }
    client
}

/// Sends `{"steady": 0}` ... `{"steady": n - 1}` at 1,000 a second: ten
/// every 10 ms.
async fn send_steadily(sender: &mut Client, n: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    // A late tick must not be caught up in a burst faster than 1,000/s.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..n {
        if i % 10 == 0 {
            tick.tick().await;
        }
        sender.send_json(json!({ "steady": i })).await;
    }
}

/// The original forwarded everything a program sent: with the default
/// settings, a burst of 500 and then 1,000 messages a second for 5 seconds
/// reach every other client of the action, on the sender's instance and on
/// another one, all of them, once, in order, and the sender is never told
/// to slow down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_forward_what_the_original_forwarded() {
    let redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let (mut sender, _) = register(&a.relay_url(), "telemetry").await;
    let (here, _) = register(&a.relay_url(), "telemetry").await;
    let (there, _) = register(&b.relay_url(), "telemetry").await;

    let readers = [here, there].map(|client| {
        tokio::spawn(async move {
            let client = expect_sequence(client, "burst", 500).await;
            expect_sequence(client, "steady", 5000).await
        })
    });
    for i in 0..500 {
        sender.send_json(json!({ "burst": i })).await;
    }
    send_steadily(&mut sender, 5000).await;
    let mut clients = Vec::new();
    for reader in readers {
        clients.push(reader.await.expect("every message, in order"));
    }
    // Nothing more (no repeat) reached the readers, and the sender got
    // nothing (no echo, no refusal): frames sent after are the next things
    // they get.
    sender.send_json(json!({"end": true})).await;
    for client in &mut clients {
        assert_eq!(client.json().await, json!({"end": true}));
    }
    clients[0].send_json(json!({"fence": true})).await;
    assert_eq!(sender.json().await, json!({"fence": true}));
}

/// The close code a client gets after sending one text frame with this
/// payload, the reserved bit `rsv1` as given.
async fn closed_after_frame(url: &str, payload: &[u8], rsv1: bool) -> Option<u16> {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    use tokio_tungstenite::tungstenite::Message;

    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        rsv1,
        ..FrameHeader::default()
    };
    let frame = Frame::from_payload(header, payload.to_vec().into());
    ws.send(Message::Frame(frame)).await.unwrap();
    Client::from_socket(ws).closed().await
}

/// A text frame that is not UTF-8 is a protocol error: close 1007, on the
/// relay and on the chat, rather than a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_closes_with_1007() {
    let server = Instance::configured(None, &[]).await;
    for url in [server.relay_url(), server.chat_url("")] {
        let invalid = [b'{', 0xff, 0xfe, b'}'];
        assert_eq!(
            closed_after_frame(&url, &invalid, false).await,
            Some(1007),
            "{url}"
        );
    }
}

/// Frames that break the protocol get close 1002 on both endpoints, and
/// the server serves the next client: a frame with a reserved bit set, and
/// one that is not masked (written on the raw socket: a client library
/// always masks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_violation_closes_with_1002_and_the_server_lives_on() {
    use tokio::io::AsyncWriteExt;

    let server = Instance::configured(None, &[]).await;
    for url in [server.relay_url(), server.chat_url("")] {
        assert_eq!(
            closed_after_frame(&url, b"{}", true).await,
            Some(1002),
            "{url}"
        );

        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut tcp = ws.into_inner();
        // FIN + text, 2 bytes, no mask bit.
        let unmasked = [0x81, 0x02, b'{', b'}'];
        match &mut tcp {
            tokio_tungstenite::MaybeTlsStream::Plain(raw) => {
                raw.write_all(&unmasked).await.unwrap()
            }
            _ => unreachable!("plain TCP"),
        }
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            tcp,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let mut client = Client::from_socket(ws);
        assert_eq!(client.closed().await, Some(1002), "{url}");
    }
    register(&server.relay_url(), "still-here").await;
}

/// The default *rate* (not the burst) carries 1,000 messages a second: with
/// only the burst lowered, so that it cannot absorb the traffic, 5 seconds
/// at 1,000 a second still pass without a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_relay_rate_sustains_1000_messages_a_second() {
    let server = Instance::configured(None, &[("RELAY_RATE_LIMIT_BURST", "100")]).await;
    let (mut sender, _) = register(&server.relay_url(), "steady").await;
    let (reader, _) = register(&server.relay_url(), "steady").await;
    let reader = tokio::spawn(expect_sequence(reader, "steady", 5000));
    send_steadily(&mut sender, 5000).await;
    let mut reader = reader.await.expect("every message, in order");
    // No refusal came: a frame sent after is the next thing the sender gets.
    reader.send_json(json!({"fence": true})).await;
    assert_eq!(sender.json().await, json!({"fence": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_cannot_reach_the_other_instances_is_answered_with_an_error() {
    let mut redis = Redis::start();
    let a = Instance::configured(Some(&redis), &[]).await;
    let b = Instance::configured(Some(&redis), &[]).await;
    let (mut sender, _) = register(&a.relay_url(), "sync").await;
    let (mut beside, _) = register(&a.relay_url(), "sync").await;
    let (mut far, _) = register(&b.relay_url(), "sync").await;

    redis.stop();
    // Every frame reaches the client beside the sender, and the sender is
    // told that it went no further: never silence.
    for i in 0..3 {
        sender.send_json(json!({"during": i})).await;
        assert_eq!(beside.json().await, json!({"during": i}));
        let error = sender.json().await;
        assert_eq!(error["type"], "error", "frame {i}: {error}");
        let why = error["error"].as_str().unwrap();
        assert!(why.contains("this server only"), "{why}");
    }

    redis.restart();
    // Forwarding between the instances comes back by itself: a frame
    // reaching the far client proves it. Each frame meanwhile is either
    // forwarded or answered with an error (drained as it comes).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "frames never crossed again"
        );
        sender.send_json(json!({"after": i})).await;
        if let Some(Received::Text(text)) = far.receive_within(Duration::from_millis(200)).await {
            assert!(text.contains("after"), "{text}");
            break;
        }
    }
}

/// With `WRITE_COALESCE_MS` (set high here so that the timings are far
/// apart): a frame to a quiet connection leaves at once, frames that
/// follow close behind wait for the tick and arrive together, and none is
/// lost or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_writes_send_a_lone_frame_at_once_and_a_trickle_together() {
    let tick = Duration::from_millis(600);
    let server = Instance::configured(None, &[("WRITE_COALESCE_MS", "600")]).await;
    let (mut sender, _) = register(&server.relay_url(), "t").await;
    let (mut reader, _) = register(&server.relay_url(), "t").await;
    // Quiet for longer than a tick since the `registered` reply.
    tokio::time::sleep(tick + Duration::from_millis(100)).await;
    let start = std::time::Instant::now();
    sender.send_json(json!({ "n": 0 })).await;
    assert_eq!(reader.json().await, json!({ "n": 0 }));
    let first = start.elapsed();
    assert!(first < tick / 2, "a lone frame waited {first:?}");
    // Three more, 60 ms apart, right behind it: held until the tick.
    for n in 1..4 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        sender.send_json(json!({ "n": n })).await;
    }
    let mut arrivals = Vec::new();
    for n in 1..4 {
        assert_eq!(reader.json().await, json!({ "n": n }));
        arrivals.push(start.elapsed());
    }
    assert!(arrivals[0] > tick / 2, "not held: {arrivals:?}");
    let spread = arrivals[2] - arrivals[0];
    assert!(
        spread < Duration::from_millis(100),
        "not together: {arrivals:?}"
    );
}

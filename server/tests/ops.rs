//! Operations: graceful shutdown, reload on a shared port, metrics, help.

mod common;

use app::protocol::{ChatMessage, ClientMessage, ServerEvent, SystemKind};
use common::{free_port, keys, Chat, Client, Endpoint, Received, Redis, Server};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[tokio::test]
async fn sigterm_closes_everyone_with_1012_cleans_redis_and_exits_0() {
    let redis = Redis::start();
    let relay_port = free_port().to_string();
    let mut server = Server::start(
        Some(&redis),
        &[("SHUTDOWN_GRACE_SECS", "5"), ("RELAY_PORT", &relay_port)],
    );
    let id = server.instance_id();
    let mut chat = Chat::join(&server, "leaving").await;
    let mut relay = Client::connect(&server.relay_url()).await;
    relay.send_json(json!({"action": "ops"})).await;
    assert_eq!(relay.json().await["type"], "registered");
    let mut dedicated = Client::connect(&format!("ws://127.0.0.1:{relay_port}")).await;
    dedicated.send_json(json!({"action": "ops"})).await;
    assert_eq!(dedicated.json().await["type"], "registered");
    assert_eq!(redis.hkeys(&keys().relay_clients("ops")).len(), 2);

    let started = Instant::now();
    server.signal("TERM");
    assert_eq!(chat.client.closed().await, Some(1012));
    assert_eq!(relay.closed().await, Some(1012));
    assert_eq!(dedicated.closed().await, Some(1012));
    let status = server
        .wait_exit(Duration::from_secs(7))
        .expect("exits within the grace period");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(7));

    assert!(redis.hkeys(&keys().relay_clients("ops")).is_empty());
    assert!(redis.hkeys(&keys().members("general")).is_empty());
    for key in [
        keys().room_instances("general"),
        keys().relay_instances("ops"),
    ] {
        let score: Option<f64> = redis.query(redis::cmd("ZSCORE").arg(&key).arg(&id));
        assert_eq!(score, None, "{key} no longer lists the instance");
    }
    let logs = server.logs.lock().unwrap();
    let closed: Vec<serde_json::Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|j: &serde_json::Value| j["message"] == "connection closed")
        .collect();
    assert_eq!(closed.len(), 3, "one line per connection");
    for line in closed {
        assert!(line["conn"].is_string() && line["kind"].is_string());
        assert!(line["duration_ms"].is_u64());
        assert_eq!(line["reason"], "service restart");
    }
}

/// A chat member that reconnects like the browser: same session, asks for
/// what it missed. Records every message frame it gets, repeats included.
struct Member {
    url: String,
    pseudo: String,
    session: uuid::Uuid,
    chat: Chat,
    got: Vec<ChatMessage>,
    /// Who this member saw leave.
    left: Vec<String>,
    reconnects: usize,
}

impl Member {
    async fn join(url: &str, pseudo: &str) -> Member {
        let (mut chat, _, _) = Chat::try_open(url).await.expect("connects");
        let session = uuid::Uuid::new_v4();
        chat.send(&ClientMessage::Join {
            pseudo: pseudo.into(),
            session: Some(session),
        })
        .await;
        chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
            .await;
        Member {
            url: url.into(),
            pseudo: pseudo.into(),
            session,
            chat,
            got: Vec::new(),
            left: Vec::new(),
            reconnects: 0,
        }
    }

    /// Reads until `n` distinct messages arrived, reconnecting on close.
    async fn collect(&mut self, n: usize) {
        while distinct(&self.got) < n {
            match self.chat.client.receive().await {
                Received::Text(text) => match serde_json::from_str(&text).unwrap() {
                    ServerEvent::Message(m) => self.got.push(m),
                    ServerEvent::System(s) if s.kind == SystemKind::Left => {
                        self.left.push(s.pseudo)
                    }
                    ServerEvent::History { events, .. } => {
                        self.got.extend(events.into_iter().filter_map(|e| match e {
                            ServerEvent::Message(m) => Some(m),
                            _ => None,
                        }))
                    }
                    _ => {}
                },
                Received::Close(code) => {
                    assert_eq!(code, Some(1012), "closed for the restart");
                    self.reconnect().await;
                }
            }
        }
    }

    async fn reconnect(&mut self) {
        self.reconnects += 1;
        let query = match self.got.last() {
            Some(m) => format!("?last_seen={}", m.id),
            None => String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((mut chat, history, _)) =
                Chat::try_open(&format!("{}{query}", self.url)).await
            {
                self.got.extend(history.into_iter().filter_map(|e| match e {
                    ServerEvent::Message(m) => Some(m),
                    _ => None,
                }));
                chat.send(&ClientMessage::Join {
                    pseudo: self.pseudo.clone(),
                    session: Some(self.session),
                })
                .await;
                self.chat = chat;
                return;
            }
            assert!(Instant::now() < deadline, "reconnects within 10 s");
            // The new process may not have taken the port yet: retry.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn distinct(messages: &[ChatMessage]) -> usize {
    let mut ids: Vec<_> = messages.iter().map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

#[tokio::test]
async fn reload_on_a_shared_port_delivers_every_message_once() {
    let redis = Redis::start();
    let port = free_port().to_string();
    let shared = [("PORT", port.as_str()), ("REUSE_PORT", "true")];
    let mut old = Server::start(Some(&redis), &shared);
    let observer_server = Server::start(Some(&redis), &[]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut member = Member::join(&url, "member").await;
    let mut observer = Member::join(&observer_server.chat_url(""), "observer").await;

    let new = Server::start(Some(&redis), &shared);
    assert_eq!(new.http.port(), old.http.port(), "both bound the same port");

    // The observer talks all through the switch.
    const SENT: usize = 30;
    let mut talker = Chat::join(&observer_server, "talker").await;
    let talk = tokio::spawn(async move {
        for i in 0..SENT {
            talker.say(&format!("m{i}")).await;
            // Pacing: the talk lasts through the switch.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        talker
    });
    // The switch comes once the talk is under way: the member got some of
    // it from the old process.
    member.collect(3).await;
    assert_eq!(member.reconnects, 0, "still on the old process");
    old.signal("TERM");

    member.collect(SENT).await;
    assert_eq!(member.reconnects, 1, "the member moved to the new process");
    let talker = talk.await.unwrap();
    assert!(old.wait_exit(Duration::from_secs(12)).unwrap().success());
    // The member, now on the new process, speaks too.
    member.chat.say("from the new process").await;
    member.collect(SENT + 1).await;
    observer.collect(SENT + 1).await;
    drop(talker);
    drop(new);

    // The member reconnected within the reclaim window: nobody saw it leave.
    assert!(observer.left.is_empty(), "{:?}", observer.left);
    for who in [&member, &observer] {
        let mut times: HashMap<String, usize> = HashMap::new();
        for m in &who.got {
            *times.entry(m.text.clone()).or_default() += 1;
        }
        assert_eq!(times.len(), SENT + 1, "{}: every message", who.pseudo);
        assert!(
            times.values().all(|&n| n == 1),
            "{}: exactly once: {times:?}",
            who.pseudo
        );
        let order: Vec<&str> = who
            .got
            .iter()
            .map(|m| m.text.as_str())
            .filter(|t| t.starts_with('m'))
            .collect();
        let expected: Vec<String> = (0..SENT).map(|i| format!("m{i}")).collect();
        assert_eq!(order, expected, "{}: in order", who.pseudo);
    }
}

fn counter(scrape: &prometheus_parse::Scrape, name: &str, kind: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.get("kind") == Some(kind))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(server: &Server) -> prometheus_parse::Scrape {
    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format")
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let redis = Redis::start();
    let a = Server::start(Some(&redis), &[]);
    let b = Server::start(Some(&redis), &[]);
    let before = scrape(&a).await;
    let mut alice = Chat::join(&a, "alice").await;
    let mut bob = Chat::join(&b, "bob").await;
    bob.say("hello").await;
    alice.expect_message().await;
    alice.client.send_text("not json").await;
    alice.expect_error().await;

    let after = scrape(&a).await;
    assert_eq!(counter(&after, "ws_connections", "chat"), 1.0);
    assert!(
        counter(&after, "ws_connections_opened_total", "chat")
            > counter(&before, "ws_connections_opened_total", "chat")
    );
    assert!(counter(&after, "messages_in_total", "chat") >= 2.0);
    assert!(
        counter(&after, "messages_out_total", "chat")
            > counter(&before, "messages_out_total", "chat")
    );
    assert!(counter(&after, "bytes_out_total", "chat") > 0.0);
    assert!(counter(&after, "errors_total", "chat") >= 1.0);
    let latency_count = after
        .samples
        .iter()
        .find(|s| s.metric == "bus_delivery_latency_seconds")
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            _ => 0.0,
        })
        .unwrap_or(0.0);
    assert!(latency_count >= 1.0, "a cross-instance delivery was timed");
    assert!(after.samples.iter().any(|s| s.metric == "redis_up"));
}

#[test]
fn help_lists_every_setting_and_env_example_documents_them() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example = std::fs::read_to_string(format!("{root}/.env.example")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/docs/configuration.md")).unwrap();
    // Each option is a "--flag" paragraph (-h and -V, with short flags,
    // come last); each names its variable, and all but the lists that are
    // empty by default (REDIS_URL, PUBLIC_ORIGINS, the token and API keys,
    // the webhook) a default.
    let options: Vec<&str> = help.split("\n      --").skip(1).collect();
    assert!(options.len() >= 15, "{help}");
    for option in options {
        let var = option
            .split("[env: ")
            .nth(1)
            .and_then(|rest| rest.split(['=', ']']).next())
            .unwrap_or_else(|| panic!("no env var in: {option}"));
        assert!(
            option.contains("[default: ")
                || [
                    "REDIS_URL",
                    "PUBLIC_ORIGINS",
                    "AUTH_JWT_SECRET",
                    "AUTH_JWT_PUBLIC_KEY",
                    "AUTH_JWT_ISSUER",
                    "AUTH_JWT_AUDIENCE",
                    "ADMIN_HOSTS",
                    "API_KEY",
                    "WEBHOOK_URL",
                    "WEBHOOK_SECRET",
                    "HISTORY_MAX_EVENTS",
                ]
                .contains(&var),
            "no default in: {option}"
        );
        assert!(
            example.contains(&format!("{var}=")),
            ".env.example documents {var}"
        );
        assert!(
            readme.contains(&format!("`{var}`")),
            "docs/configuration.md documents {var}"
        );
    }
    assert!(help.contains("[default: 4100]"));
    let version = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("server {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Metrics are for the operator: on the admin port, which listens on the
/// loopback address unless told otherwise, and not on the public port;
/// health is on both (load balancers use the public one).
#[tokio::test]
async fn metrics_live_on_the_private_admin_port_only() {
    let server = Server::start(None, &[("BIND", "0.0.0.0")]);
    assert!(server.admin.ip().is_loopback(), "{}", server.admin);
    let _reader = Chat::open(&server, "").await;
    assert_eq!(server.get("/metrics").await.0, 404);
    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("ws_connections"), "{body}");
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.admin_get("/healthz").await.0, 200);
}

//! The server API on the admin port: who may call it, its typed errors,
//! and what it does to clients on another instance (embedded, one Redis,
//! and the cluster with `TEST_REDIS=cluster`).

mod common;

use app::protocol::{ClientMessage, ErrorCode, ServerEvent, SystemKind};
use common::{Chat, Client, Endpoint, Instance, Redis};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "an API test secret, long enough";
const KEY: &str = "an API key of the backend";

fn token(claims: Value) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = claims;
    claims["exp"] = exp.into();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

use common::api as call;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_required_when_set_and_errors_are_typed() {
    let open = Instance::configured(None, &[]).await;
    // No key configured: this machine's callers only (the test is one).
    let (status, _) = call(
        &open,
        "POST",
        "/api/rooms/general/slow_mode",
        None,
        json!({"seconds": 0}),
    )
    .await;
    assert_eq!(status, 204);

    let keyed = Instance::configured(None, &[("API_KEY", KEY)]).await;
    for key in [None, Some("wrong key, long enough anyway")] {
        let (status, body) =
            call(&keyed, "POST", "/api/disconnect", key, json!({"sub": "x"})).await;
        assert_eq!(
            (status, &body["error"]),
            (401, &json!("unauthorized")),
            "{key:?}"
        );
    }
    let (status, body) = call(
        &keyed,
        "POST",
        "/api/disconnect",
        Some(KEY),
        json!({"sub": "x"}),
    )
    .await;
    assert_eq!((status, body), (202, json!({"closed_here": 0})));
    for (method, path, body, expected) in [
        (
            "POST",
            "/api/disconnect",
            json!({"subject": "x"}),
            (400, "invalid"),
        ),
        (
            "POST",
            "/api/rooms/a%20b/kick",
            json!({"pseudo": "x"}),
            (400, "invalid"),
        ),
        (
            "POST",
            "/api/rooms/general/kick",
            json!({"pseudo": "nobody"}),
            (404, "not_found"),
        ),
        (
            "DELETE",
            "/api/rooms/general/messages/not-a-uuid",
            Value::Null,
            (400, "invalid"),
        ),
        ("GET", "/api/nothing-here", Value::Null, (404, "not_found")),
    ] {
        let (status, body) = call(&keyed, method, path, Some(KEY), body).await;
        assert_eq!(
            (status, body["error"].as_str().unwrap_or_default()),
            expected,
            "{method} {path}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // Every call is counted.
    let (_, metrics) = common::http_get(keyed.running.admin, "/metrics").await;
    assert!(
        metrics.contains("api_calls_total{call=\"POST /api/disconnect\",status=\"401\"} 2"),
        "{metrics}"
    );
}

/// The server refuses to put the API on a reachable address without a key.
#[test]
fn a_reachable_admin_port_needs_a_key() {
    use clap::Parser;
    let config = |extra: &[&str]| {
        let mut args = vec!["server", "--admin-bind", "0.0.0.0"];
        args.extend_from_slice(extra);
        server::config::Config::try_parse_from(args)
            .unwrap()
            .validate()
    };
    let refused = config(&[]).unwrap_err().to_string();
    assert!(refused.contains("API_KEY"), "{refused}");
    assert!(config(&["--api-key", "short"]).is_err());
    assert!(config(&["--api-key", KEY]).is_ok());
}

async fn disconnect_closes_a_subject_everywhere(redis: Option<&Redis>) {
    let env = [
        ("CHAT_AUTH", "required"),
        ("RELAY_AUTH", "required"),
        ("AUTH_JWT_SECRET", SECRET),
    ];
    let (a, b) = Instance::pair(redis, &env).await;
    let chat_token = |sub: &str, name: &str| token(json!({"sub": sub, "name": name}));
    let (mut gone, _, _) = Chat::open(&b, &format!("?token={}", chat_token("user-1", "ann"))).await;
    let (mut stays, _, _) =
        Chat::open(&b, &format!("?token={}", chat_token("user-2", "bea"))).await;
    let (mut gone_too, _, _) =
        Chat::open(&a, &format!("?token={}", chat_token("user-1", "ann"))).await;
    let mut relay = Client::connect(&b.relay_url()).await;
    relay
        .send_json(json!({"action": "lights", "token": token(json!({"sub": "user-1", "actions": ["lights"]}))}))
        .await;
    assert_eq!(relay.json().await["type"], "registered");

    let (status, body) = call(
        &a,
        "POST",
        "/api/disconnect",
        None,
        json!({"sub": "user-1"}),
    )
    .await;
    assert_eq!((status, body), (202, json!({"closed_here": 1})));
    for client in [&mut gone.client, &mut gone_too.client, &mut relay] {
        assert_eq!(
            client.close_reason().await,
            Some((4003, "disconnected by the server".into()))
        );
    }
    // The other subject's connection is untouched.
    stays
        .send(&ClientMessage::Join {
            pseudo: "bea".into(),
            session: None,
        })
        .await;
    stays
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    stays.say("still here").await;
    assert_eq!(stays.expect_message().await.text, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_a_subject_everywhere_embedded() {
    disconnect_closes_a_subject_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_a_subject_everywhere_on_redis() {
    let redis = Redis::start();
    disconnect_closes_a_subject_everywhere(Some(&redis)).await;
}

/// The backend moderates without chat tokens: kick on one instance closes
/// the member on the other; the events say "server" did it.
async fn the_backend_moderates(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let mut bob = Chat::join(&b, "bob").await;
    let mut reader = Chat::join(&a, "reader").await;
    let message = {
        bob.say("spam").await;
        bob.expect_message().await
    };
    let path = format!("/api/rooms/general/messages/{}", message.id);
    assert_eq!(call(&a, "DELETE", &path, None, Value::Null).await.0, 204);
    reader
        .expect(
            |e| matches!(e, ServerEvent::Deleted(d) if d.target == message.id && d.by == "server"),
        )
        .await;
    let mute = json!({"pseudo": "bob", "seconds": 60});
    assert_eq!(
        call(&a, "POST", "/api/rooms/general/mute", None, mute)
            .await
            .0,
        204
    );
    bob.expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Muted))
        .await;
    bob.say("more spam").await;
    assert_eq!(bob.expect_error().await, ErrorCode::Muted);
    let kick = json!({"pseudo": "bob"});
    assert_eq!(
        call(&a, "POST", "/api/rooms/general/kick", None, kick)
            .await
            .0,
        204
    );
    assert_eq!(bob.client.closed().await, Some(4003));
    let kicked = reader
        .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Kicked))
        .await;
    assert!(matches!(kicked, ServerEvent::System(s) if s.by.as_deref() == Some("server")));
    // Any message, once: a second deletion finds nothing.
    reader
        .send(&ClientMessage::Say {
            text: "mine".into(),
            id: None,
        })
        .await;
    let mine = reader.expect_message().await;
    let path = format!("/api/rooms/general/messages/{}", mine.id);
    assert_eq!(call(&a, "DELETE", &path, None, Value::Null).await.0, 204);
    assert_eq!(call(&a, "DELETE", &path, None, Value::Null).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_moderates_embedded() {
    the_backend_moderates(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_moderates_on_redis() {
    let redis = Redis::start();
    the_backend_moderates(Some(&redis)).await;
}

/// The backend posts (once per id), reads the room and its history, and
/// sends relay frames byte for byte; clients on the other instance see it.
async fn the_backend_posts_reads_and_relays(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let mut reader = Chat::join_room(&b, "news", "reader").await;
    let id = uuid::Uuid::new_v4();
    let body = json!({"author": "Newsbot", "text": "hello from the backend", "id": id});
    let (status, stored) = call(&a, "POST", "/api/rooms/news/messages", None, body.clone()).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(
        (&stored["id"], &stored["server"]),
        (&json!(id), &json!(true))
    );
    assert!(stored["offset"].as_u64().is_some_and(|o| o > 0), "{stored}");
    assert_eq!(
        call(&a, "POST", "/api/rooms/news/messages", None, body).await,
        (201, stored.clone())
    );
    let message = reader.expect_message().await;
    assert_eq!(
        (message.id, message.author.as_str(), message.server),
        (id, "Newsbot", true)
    );
    let bad = json!({"author": "", "text": "x"});
    assert_eq!(
        call(&a, "POST", "/api/rooms/news/messages", None, bad)
            .await
            .0,
        400
    );

    let (status, room) = call(&a, "GET", "/api/rooms/news", None, Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&room["count"], &room["online"]),
        (&json!(1), &json!(["reader"]))
    );
    assert_eq!(room["epoch"], stored["epoch"]);
    common::eventually("the room list has the room", common::WAIT, || async {
        let (_, rooms) = call(&a, "GET", "/api/rooms", None, Value::Null).await;
        rooms["rooms"]
            .as_array()
            .is_some_and(|rooms| rooms.iter().any(|r| r["name"] == "news" && r["count"] == 1))
    })
    .await;

    let since = format!("{}:0", stored["epoch"].as_str().unwrap());
    let path = format!("/api/rooms/news/history?since={since}&limit=1");
    let (status, page) = call(&a, "GET", &path, None, Value::Null).await;
    assert_eq!(
        (status, &page["recovered"], &page["more"]),
        (200, &json!(true), &json!(true))
    );
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1));
    let (_, all) = call(&a, "GET", "/api/rooms/news/history", None, Value::Null).await;
    let copies = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"] == json!(id))
        .count();
    assert_eq!(copies, 1, "{all}");
    let (status, _) = call(
        &a,
        "GET",
        "/api/rooms/news/history?since=nope",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(status, 400);

    let mut lamp = Client::connect(&b.relay_url()).await;
    lamp.send_json(json!({"action": "lights"})).await;
    let registered = lamp.json().await;
    assert_eq!(registered["type"], "registered");
    let (status, listed) = call(&a, "GET", "/api/actions/lights/clients", None, Value::Null).await;
    assert_eq!(status, 200);
    let clients = listed["clients"].as_array().expect("a list");
    assert_eq!(clients.len(), 1, "{listed}");
    assert_eq!(clients[0]["id"], registered["id"]);
    assert_eq!(clients[0]["registration"], json!({"action": "lights"}));
    assert!(clients[0]["instance"].is_string(), "{listed}");
    let frame = r#"{ "on" : true, "level": 1.50 }"#;
    let (status, text) = common::http_request(
        a.running.admin,
        "POST",
        "/api/actions/lights/frames",
        &[],
        frame,
    )
    .await;
    assert_eq!(status, 202, "{text}");
    match lamp.receive().await {
        common::Received::Text(got) => assert_eq!(got, frame, "byte for byte"),
        other => panic!("expected the frame, got {other:?}"),
    }
    let (status, _) = common::http_request(
        a.running.admin,
        "POST",
        "/api/actions/lights/frames",
        &[],
        "{oops",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_posts_reads_and_relays_embedded() {
    the_backend_posts_reads_and_relays(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_posts_reads_and_relays_on_redis() {
    let redis = Redis::start();
    the_backend_posts_reads_and_relays(Some(&redis)).await;
}

/// A batch runs its calls in order, one answer each, and holds no more
/// than 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_call_in_order() {
    let server = Instance::configured(None, &[("API_KEY", KEY)]).await;
    let mut reader = Chat::join(&server, "reader").await;
    let calls = json!({"calls": [
        {"method": "POST", "path": "/api/rooms/general/messages", "body": {"author": "Bot", "text": "one"}},
        {"method": "post", "path": "/api/rooms/general/messages", "body": {"author": "Bot", "text": "two"}},
        {"method": "GET", "path": "/api/rooms/general"},
        {"method": "GET", "path": "/api/rooms/general/history?limit=1"},
        {"method": "POST", "path": "/api/rooms/general/kick", "body": {"pseudo": "nobody"}},
    ]});
    assert_eq!(
        call(&server, "POST", "/api/batch", None, calls.clone())
            .await
            .0,
        401
    );
    let (status, answer) = call(&server, "POST", "/api/batch", Some(KEY), calls).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<&Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(
        statuses,
        [
            &json!(201),
            &json!(201),
            &json!(200),
            &json!(200),
            &json!(404)
        ]
    );
    assert_eq!(answer["results"][1]["body"]["text"], "two");
    assert_eq!(answer["results"][2]["body"]["count"], 1);
    let texts: Vec<String> = reader
        .messages(2)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["one", "two"], "in order");

    let many = json!({"calls": vec![json!({"method": "GET", "path": "/api/rooms"}); 101]});
    assert_eq!(
        call(&server, "POST", "/api/batch", Some(KEY), many).await.0,
        400
    );
    let nested =
        json!({"calls": [{"method": "POST", "path": "/api/batch", "body": {"calls": []}}]});
    assert_eq!(
        call(&server, "POST", "/api/batch", Some(KEY), nested)
            .await
            .0,
        400
    );
}

/// The description (`/api/openapi.json`) lists exactly the calls served:
/// the expected list, each documented call answered by its handler (not
/// the "no such API call" fallback, nor 405), and an undocumented one not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_served_calls() {
    let server = Instance::configured(None, &[]).await;
    let (status, doc) = call(&server, "GET", "/api/openapi.json", None, Value::Null).await;
    assert_eq!(status, 200, "{doc}");
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("operations").keys();
            methods.map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    documented.sort();
    assert_eq!(
        documented,
        [
            "DELETE /api/rooms/{room}/messages/{id}",
            "GET /api/actions/{action}/clients",
            "GET /api/backup",
            "GET /api/info",
            "GET /api/rooms",
            "GET /api/rooms/{room}",
            "GET /api/rooms/{room}/history",
            "POST /api/actions/{action}/frames",
            "POST /api/batch",
            "POST /api/disconnect",
            "POST /api/rooms/{room}/ban",
            "POST /api/rooms/{room}/kick",
            "POST /api/rooms/{room}/messages",
            "POST /api/rooms/{room}/mute",
            "POST /api/rooms/{room}/slow_mode",
        ]
    );
    for entry in &documented {
        let (method, path) = entry.split_once(' ').unwrap();
        let path = path
            .replace("{room}", "general")
            .replace("{action}", "lights")
            .replace("{id}", &uuid::Uuid::nil().to_string());
        let (status, body) = call(&server, method, &path, None, json!({})).await;
        assert_ne!(status, 405, "{entry}");
        assert_ne!(
            body["message"], "no such API call",
            "{entry}: {status} {body}"
        );
    }
    let (status, body) = call(&server, "POST", "/api/rooms/general/clear", None, json!({})).await;
    assert_eq!(
        (status, &body["message"]),
        (404, &json!("no such API call"))
    );
}

/// Every live instance is listed with its connections, the answering one
/// first.
async fn info_lists_the_live_instances(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let _chat = Chat::join(&b, "someone").await;
    let mode = if redis.is_some() {
        ["redis", "cluster"]
    } else {
        ["memory", "memory"]
    };
    common::eventually("both instances are listed", common::WAIT, || async {
        let (status, info) = call(&a, "GET", "/api/info", None, Value::Null).await;
        let instances = info["instances"].as_array().cloned().unwrap_or_default();
        status == 200
            && mode.contains(&info["mode"].as_str().unwrap_or_default())
            && instances.len() == 2
            && instances[0]["id"] == info["instance"]
            && instances.iter().any(|line| line["chat"] == 1)
            && instances
                .iter()
                .all(|line| line["version"] == info["version"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_live_instances_embedded() {
    info_lists_the_live_instances(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_live_instances_on_redis() {
    let redis = Redis::start();
    info_lists_the_live_instances(Some(&redis)).await;
}

/// The admin port answers only to the names it knows (addresses,
/// `localhost`, `ADMIN_HOSTS`), with or without a key: a page that rebinds
/// its own name to this machine gets 403 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_refuses_names_it_does_not_know() {
    for settings in [
        &[][..],
        &[("API_KEY", KEY), ("ADMIN_HOSTS", "admin.internal")][..],
    ] {
        let server = Instance::configured(None, settings).await;
        let key = settings.first().map(|_| format!("apikey {KEY}"));
        let with = |host: &'static str| {
            let mut headers = vec![("Host", host)];
            if let Some(key) = &key {
                headers.push(("Authorization", key.as_str()));
            }
            headers
        };
        let slow = json!({"seconds": 30}).to_string();
        let path = "/api/rooms/general/slow_mode";
        let admin = server.running.admin;
        for host in [
            "evil.example",
            "evil.example:9100",
            "localhost.evil.example",
        ] {
            let (status, body) =
                common::http_request(admin, "POST", path, &with(host), &slow).await;
            assert_eq!(status, 403, "{host}: {body}");
            assert!(body.contains("wrong_host"), "{body}");
            let (status, _) = common::http_request(admin, "GET", "/metrics", &with(host), "").await;
            assert_eq!(status, 403, "{host}: metrics");
        }
        let (_, watcher_history, _) = Chat::open(&server, "").await;
        assert!(
            watcher_history
                .iter()
                .all(|e| !matches!(e, ServerEvent::System(s) if s.kind == SystemKind::SlowMode)),
            "nothing was done"
        );
        let mut known = vec!["localhost:9100", "127.0.0.1", "[::1]:9100"];
        if key.is_some() {
            known.push("Admin.Internal:9100");
        }
        for host in known {
            let (status, body) =
                common::http_request(admin, "POST", path, &with(host), &slow).await;
            assert_eq!(status, 204, "{host}: {body}");
        }
    }
}

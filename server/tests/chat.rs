//! The chat on one instance (embedded mode, no Redis), over real sockets.

mod common;

use app::protocol::{ClientMessage, ErrorCode, ServerEvent, SystemKind};
use common::{
    eventually, refused_status, texts, Chat, Client, Endpoint, Instance, Received, Redis, Server,
    WAIT,
};
use serde_json::json;
use std::time::Duration;

fn is_system(kind: SystemKind, pseudo: &str) -> impl Fn(&ServerEvent) -> bool + '_ {
    move |e| matches!(e, ServerEvent::System(s) if s.kind == kind && s.pseudo == pseudo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_talk_rename_leave_with_counts_and_system_messages() {
    let server = Instance::configured(None, &[]).await;
    let mut alice = Chat::join(&server, "alice").await;
    alice.expect(is_system(SystemKind::Joined, "alice")).await;
    alice.expect_count(1).await;

    let mut bob = Chat::join(&server, "bob").await;
    alice.expect(is_system(SystemKind::Joined, "bob")).await;
    alice.expect_count(2).await;
    bob.expect_count(2).await;

    bob.say("hello <img src=x onerror=alert(1)>").await;
    for chat in [&mut alice, &mut bob] {
        let m = chat.expect_message().await;
        assert_eq!(m.author, "bob");
        assert_eq!(m.text, "hello <img src=x onerror=alert(1)>");
        assert!(m.ts > 0);
    }

    bob.send(&ClientMessage::Rename {
        pseudo: "robert".into(),
    })
    .await;
    let joined = bob
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    assert!(matches!(joined, ServerEvent::Joined { pseudo, .. } if pseudo == "robert"));
    let renamed = alice.expect(is_system(SystemKind::Renamed, "robert")).await;
    assert!(matches!(renamed, ServerEvent::System(s) if s.previous.as_deref() == Some("bob")));
    bob.say("now robert").await;
    assert_eq!(alice.expect_message().await.author, "robert");

    bob.client.close().await;
    alice.expect(is_system(SystemKind::Left, "robert")).await;
    alice.expect_count(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nicknames_are_unique_but_a_session_reclaims_its_own() {
    let server = Server::start(None, &[]);
    let alice = Chat::join(&server, "alice").await;

    let (mut other, _, _) = Chat::open(&server, "").await;
    other
        .send(&ClientMessage::Join {
            pseudo: " ALICE ".into(),
            session: None,
        })
        .await;
    assert_eq!(other.expect_error().await, ErrorCode::PseudoTaken);
    // Refused, but not disconnected: another nickname works.
    other
        .send(&ClientMessage::Join {
            pseudo: "carol".into(),
            session: None,
        })
        .await;
    other
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;

    // The same session on a new socket (a reconnect) takes the nickname back
    // while the stale socket is still open; nobody sees a second "joined".
    let (mut again, _, _) = Chat::open(&server, "").await;
    again
        .send(&ClientMessage::Join {
            pseudo: "alice".into(),
            session: Some(alice.session),
        })
        .await;
    again
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    again.say("back").await;
    assert_eq!(other.expect_message().await.author, "alice");
    // Two participants, not three: the reclaim replaced the stale socket.
    assert_eq!(Chat::open(&server, "").await.2, 2);

    // The stale socket closing does not free the nickname nor announce a
    // leave, once the server is done with it (it logs the close last).
    alice.client.close().await;
    eventually("the server is done with the stale socket", WAIT, || async {
        server
            .log_lines("connection closed")
            .iter()
            .any(|l| l["kind"] == "chat" && l["pseudo"] == "alice")
    })
    .await;
    let (mut thief, _, _) = Chat::open(&server, "").await;
    thief
        .send(&ClientMessage::Join {
            pseudo: "alice".into(),
            session: None,
        })
        .await;
    assert_eq!(thief.expect_error().await, ErrorCode::PseudoTaken);
    again.say("still here").await;
    loop {
        match other.event().await {
            ServerEvent::System(s) => assert_ne!(s.kind, SystemKind::Left, "{s:?}"),
            ServerEvent::Message(m) if m.text == "still here" => break,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_gets_an_error_event_and_the_connection_stays_usable() {
    let server = Instance::configured(None, &[]).await;
    let (mut chat, _, _) = Chat::open(&server, "").await;
    let cases: Vec<(String, ErrorCode)> = vec![
        ("not json".into(), ErrorCode::InvalidJson),
        ("{\"type\":\"dance\"}".into(), ErrorCode::UnknownType),
        ("{\"text\":\"no type\"}".into(), ErrorCode::UnknownType),
        ("{\"type\":\"say\"}".into(), ErrorCode::InvalidMessage),
        (
            "{\"type\":\"say\",\"text\":\"hi\"}".into(),
            ErrorCode::NotJoined,
        ),
        (
            "{\"type\":\"rename\",\"pseudo\":\"x\"}".into(),
            ErrorCode::NotJoined,
        ),
        (
            json!({"type":"join","pseudo":"   "}).to_string(),
            ErrorCode::InvalidPseudo,
        ),
        (
            json!({"type":"join","pseudo":"a".repeat(33)}).to_string(),
            ErrorCode::InvalidPseudo,
        ),
        (
            json!({"type":"join","pseudo":"bad\u{1}name"}).to_string(),
            ErrorCode::InvalidPseudo,
        ),
        (
            json!({"type":"join","pseudo":"ok","session":"not-a-uuid"}).to_string(),
            ErrorCode::InvalidMessage,
        ),
    ];
    for (frame, code) in cases {
        chat.client.send_text(&frame).await;
        assert_eq!(chat.expect_error().await, code, "for {frame}");
    }
    chat.client.send_binary(vec![1, 2, 3]).await;
    assert_eq!(chat.expect_error().await, ErrorCode::BinaryFrame);

    chat.send(&ClientMessage::Join {
        pseudo: "dora".into(),
        session: None,
    })
    .await;
    chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    chat.send(&ClientMessage::Join {
        pseudo: "dora2".into(),
        session: None,
    })
    .await;
    assert_eq!(chat.expect_error().await, ErrorCode::AlreadyJoined);
    for text in ["".to_owned(), "  \n ".to_owned(), "x".repeat(2001)] {
        chat.say(&text).await;
        assert_eq!(chat.expect_error().await, ErrorCode::InvalidText);
    }
    chat.say(&"é".repeat(2000)).await;
    assert_eq!(chat.expect_message().await.text.chars().count(), 2000);

    let _other = Chat::join(&server, "emma").await;
    for (pseudo, code) in [
        ("EMMA", ErrorCode::PseudoTaken),
        ("", ErrorCode::InvalidPseudo),
    ] {
        chat.send(&ClientMessage::Rename {
            pseudo: pseudo.into(),
        })
        .await;
        assert_eq!(chat.expect_error().await, code, "rename to {pseudo:?}");
    }
    // Still dora, still able to speak.
    chat.say("still dora").await;
    assert_eq!(chat.expect_message().await.author, "dora");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_gets_an_error_then_close_1009_and_the_server_lives_on() {
    let server = Instance::configured(None, &[("MAX_MESSAGE_BYTES", "4096")]).await;
    let (mut chat, _, _) = Chat::open(&server, "").await;
    chat.say(&"x".repeat(5000)).await;
    assert_eq!(chat.expect_error().await, ErrorCode::TooLarge);
    assert_eq!(chat.client.closed().await, Some(1009));
    let mut fresh = Chat::join(&server, "after").await;
    fresh.say("still serving").await;
    assert_eq!(fresh.expect_message().await.text, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_then_closed_with_1008() {
    let server = Instance::configured(
        None,
        &[
            ("CHAT_RATE_LIMIT_PER_SEC", "5"),
            ("CHAT_RATE_LIMIT_BURST", "5"),
        ],
    )
    .await;
    let mut flooder = Chat::join(&server, "flood").await;
    let mut limited = 0;
    let say = serde_json::to_string(&ClientMessage::Say {
        text: "spam".into(),
        id: None,
    })
    .unwrap();
    let code = loop {
        if !flooder.client.try_send_text(&say).await {
            break flooder.client.closed().await;
        }
        // Read without blocking long: the server answers each frame.
        match flooder
            .client
            .receive_within(Duration::from_millis(200))
            .await
        {
            Some(Received::Text(text)) if text.contains("rate_limited") => limited += 1,
            Some(Received::Close(code)) => break code,
            _ => {}
        }
    };
    assert!(limited > 0, "rate_limited errors came before the close");
    assert_eq!(code, Some(1008));
    let mut calm = Chat::join(&server, "calm").await;
    calm.say("hi").await;
    calm.expect_message().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_for_newcomers_and_catch_up_after_a_reconnect() {
    let server = Instance::configured(None, &[]).await;
    let mut alice = Chat::join(&server, "alice").await;
    for i in 0..3 {
        alice.say(&format!("m{i}")).await;
    }
    let seen = alice.messages(3).await;

    let (_, history, count) = Chat::open(&server, "").await;
    assert_eq!(texts(&history), ["m0", "m1", "m2"]);
    assert_eq!(count, 1);

    // Reconnect having seen m0 only: gets m1 and m2 once, in order.
    alice.say("m3").await;
    alice.expect_message().await;
    let (_, missed, _) = Chat::open(&server, &format!("?last_seen={}", seen[0].id)).await;
    assert_eq!(texts(&missed), ["m1", "m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_separate_and_bad_room_names_are_refused() {
    let server = Instance::configured(None, &[]).await;
    let mut a = Chat::join(&server, "a").await;
    let (mut b, _, _) = Chat::open(&server, "?room=other").await;
    b.send(&ClientMessage::Join {
        pseudo: "a".into(),
        session: None,
    })
    .await;
    b.expect(|e| matches!(e, ServerEvent::Joined { room, .. } if room == "other"))
        .await;
    b.say("in other").await;
    b.expect_message().await;
    // Nothing of the other room reached `a`: the next message it gets is
    // one said after, in its own room.
    a.say("in the default room").await;
    assert_eq!(a.expect_message().await.text, "in the default room");

    assert_eq!(refused_status(&server.chat_url("?room=a%20b")).await, 400);
    assert_eq!(
        refused_status(&server.chat_url("?last_seen=nope")).await,
        400
    );
}

/// Starts the server with `env` on top of free ports and no Redis, expects
/// it to refuse with exit code 1 and one line; returns that line.
fn refused_start(env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_server"));
    command
        .env("BIND", "127.0.0.1")
        .env("PORT", "0")
        .env("RELAY_PORT", "0")
        .env("ADMIN_PORT", "0")
        .env_remove("REDIS_URL");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"));
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let stderr = refused_start(&[("PORT", &port)]);
    assert!(stderr.contains("set PORT"), "{stderr}");
}

/// The shared rate limit of earlier versions is now one per protocol: a
/// configuration that still sets it is told, not silently ignored.
#[test]
fn the_old_shared_rate_limit_is_refused_with_the_new_names() {
    let stderr = refused_start(&[("RATE_LIMIT_PER_SEC", "20")]);
    assert!(
        stderr.contains("CHAT_RATE_LIMIT_PER_SEC") && stderr.contains("RELAY_RATE_LIMIT_PER_SEC"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_server_rendered_with_test_hooks() {
    let server = Server::start(None, &[]);
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    for hook in [
        "pseudo-input",
        "join-button",
        "message-input",
        "send-button",
        "messages",
        "participant-count",
        "connection-status",
    ] {
        assert!(
            body.contains(&format!("data-testid=\"{hook}\"")),
            "{hook} missing"
        );
    }
    // `chat.js`, or `chat.<hash>.js` when the release build left its list
    // of hashed names next to the binary.
    let script = body
        .split("/pkg/chat")
        .skip(1)
        .any(|rest| rest.split('"').next().unwrap_or_default().ends_with(".js"));
    assert!(script, "hydration script");
    assert!(body.contains("<title>general · Chat</title>"), "{body}");
    assert!(body.contains("<meta name=\"description\""), "{body}");
    let _ = Client::connect(&server.chat_url("")).await;
}

/// Each room has its page; older `?room=` links still work; other paths
/// are not pages, while the site's own files are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_have_their_own_pages() {
    // The project's public files as the site (the build copies them there).
    let public = concat!(env!("CARGO_MANIFEST_DIR"), "/../public");
    let server = Server::start(None, &[("LEPTOS_SITE_ROOT", public)]);
    for (path, room) in [
        ("/r/rust-fr", "rust-fr"),
        ("/?room=b_2", "b_2"),
        ("/r/not%20valid", "general"),
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            body.contains(&format!("<title>{room} · Chat</title>")),
            "{path}: {body}"
        );
        assert!(
            body.contains(&format!("data-testid=\"current-room\">{room}<")),
            "{path}: {body}"
        );
    }
    for path in ["/nope", "/r/a/b", "/r/"] {
        assert_eq!(server.get(path).await.0, 404, "{path}");
    }
    assert_eq!(server.get("/favicon.svg").await.0, 200);
}

/// Nobody can pass for somebody else: every look-alike of a nickname in the
/// room is taken, and nicknames with invisible or direction-changing
/// characters (or that render blank) are refused, with one Redis as well
/// as embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_and_blank_nicknames_are_refused() {
    let redis = Redis::start();
    for server in [
        Instance::configured(None, &[]).await,
        Instance::configured(Some(&redis), &[]).await,
    ] {
        let mut joined = Vec::new();
        for original in ["alice", "paypal", "STRASSE"] {
            joined.push(Chat::join(&server, original).await);
        }
        let attempts = [
            ("\u{430}lice", ErrorCode::PseudoTaken),
            (
                "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
                ErrorCode::PseudoTaken,
            ),
            ("ALICE", ErrorCode::PseudoTaken),
            ("paypaI", ErrorCode::PseudoTaken),
            ("stra\u{df}e", ErrorCode::PseudoTaken),
            ("alice\u{200b}", ErrorCode::InvalidPseudo),
            ("al\u{ad}ice", ErrorCode::InvalidPseudo),
            ("alice\u{fe0f}", ErrorCode::InvalidPseudo),
            ("\u{202e}ecila", ErrorCode::InvalidPseudo),
            ("\u{200b}", ErrorCode::InvalidPseudo),
            ("\u{3164}", ErrorCode::InvalidPseudo),
        ];
        for (pseudo, wanted) in attempts {
            let (mut chat, _, _) = Chat::open(&server, "").await;
            chat.send(&ClientMessage::Join {
                pseudo: pseudo.into(),
                session: None,
            })
            .await;
            assert_eq!(chat.expect_error().await, wanted, "{pseudo:?}");
        }
        // A message that shows nothing is empty; a control character is refused.
        let alice = &mut joined[0];
        for text in ["\u{200b}\u{200b}", "bell\u{7}"] {
            alice.say(text).await;
            assert_eq!(
                alice.expect_error().await,
                ErrorCode::InvalidText,
                "{text:?}"
            );
        }
    }
}

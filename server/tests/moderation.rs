//! Moderation kept in the room's stream, and one live owner per nickname,
//! across two instances: on one shared memory (embedded), on one Redis,
//! and on a Redis Cluster (`TEST_REDIS=cluster`).

mod common;

use app::protocol::{ChatMessage, ClientMessage, ErrorCode, ServerEvent, SystemKind};
use common::{Chat, Endpoint, Instance, Redis};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const SECRET: &str = "a moderation test secret, long enough";
const AUTH: [(&str, &str); 2] = [("CHAT_AUTH", "required"), ("AUTH_JWT_SECRET", SECRET)];

fn token(name: &str, roles: &[&str], secret: &str, ttl: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let exp = now.as_secs() as i64 + ttl;
    let claims = json!({"exp": exp, "sub": name, "name": name, "roles": roles});
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// Opens the default room with a token for `name` and joins.
async fn member(server: &impl Endpoint, name: &str, roles: &[&str]) -> Chat {
    let query = format!("?token={}", token(name, roles, SECRET, 600));
    Chat::join_query(server, &query, name).await
}

/// The error code and its `until` / `retry_after_ms`.
async fn refusal(chat: &mut Chat) -> (ErrorCode, Option<u64>, Option<u64>) {
    match chat
        .expect(|e| matches!(e, ServerEvent::Error { .. }))
        .await
    {
        ServerEvent::Error {
            code,
            until,
            retry_after_ms,
            ..
        } => (code, until, retry_after_ms),
        _ => unreachable!(),
    }
}

async fn system(chat: &mut Chat, kind: SystemKind) -> app::protocol::SystemMessage {
    match chat
        .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == kind))
        .await
    {
        ServerEvent::System(s) => s,
        _ => unreachable!(),
    }
}

/// Sends a message and waits for its echo.
async fn said(chat: &mut Chat, text: &str) -> ChatMessage {
    chat.say(text).await;
    let text = text.to_owned();
    match chat
        .expect(|e| matches!(e, ServerEvent::Message(m) if m.text == text))
        .await
    {
        ServerEvent::Message(m) => m,
        _ => unreachable!(),
    }
}

fn message_in(events: &[ServerEvent], id: Uuid) -> Option<&ChatMessage> {
    events.iter().find_map(|e| match e {
        ServerEvent::Message(m) if m.id == id => Some(m),
        _ => None,
    })
}

// ---------------------------------------------------------------------------
// One live owner per nickname

async fn a_reclaimed_nickname_has_one_live_owner(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let mut watcher = Chat::join(&a, "watcher").await;
    let session = Uuid::new_v4();
    let join = ClientMessage::Join {
        pseudo: "alice".into(),
        session: Some(session),
    };
    let (mut first, _, _) = Chat::open(&a, "").await;
    first.send(&join).await;
    first
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    watcher.expect_count(2).await;

    // The same session takes the nickname on the other instance.
    let (mut second, _, _) = Chat::open(&b, "").await;
    second.send(&join).await;
    second
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    first.expect(|e| *e == ServerEvent::Replaced).await;
    assert_eq!(first.client.closed().await, Some(4001));

    // One alice: a stranger is refused while she is a member, and the
    // replaced connection's end is not announced as a leave.
    let (mut stranger, _, _) = Chat::open(&a, "").await;
    stranger
        .send(&ClientMessage::Join {
            pseudo: "Alice".into(),
            session: None,
        })
        .await;
    assert_eq!(stranger.expect_error().await, ErrorCode::PseudoTaken);
    second.say("still me").await;
    let next = watcher
        .expect(|e| matches!(e, ServerEvent::Message(_) | ServerEvent::System(_)))
        .await;
    assert!(
        matches!(&next, ServerEvent::Message(m) if m.text == "still me"),
        "nothing between the reclaim and her next message: {next:?}"
    );
    let (_, _, count) = Chat::open(&b, "").await;
    assert_eq!(count, 2, "watcher and one alice");

    // Once the live owner leaves, the nickname is free.
    second.client.close().await;
    let left = system(&mut watcher, SystemKind::Left).await;
    assert_eq!(left.pseudo, "alice");
    stranger
        .send(&ClientMessage::Join {
            pseudo: "alice".into(),
            session: None,
        })
        .await;
    stranger
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_nickname_has_one_live_owner_embedded() {
    a_reclaimed_nickname_has_one_live_owner(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_nickname_has_one_live_owner_on_redis() {
    let redis = Redis::start();
    a_reclaimed_nickname_has_one_live_owner(Some(&redis)).await;
}

// ---------------------------------------------------------------------------
// Delete and edit

async fn deletions_and_edits_reach_readers_live_and_on_catch_up(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let mut alice = member(&a, "alice", &[]).await;
    let mut moderator = member(&b, "mod", &["moderator"]).await;
    let mut bob = member(&b, "bob", &[]).await;
    let before = alice.position.clone();

    let secret = said(&mut alice, "a secret").await;
    let typo = said(&mut alice, "a tpyo").await;
    let after = match bob
        .expect(|e| matches!(e, ServerEvent::Message(m) if m.id == typo.id))
        .await
        .position()
    {
        Some(position) => position,
        None => unreachable!(),
    };

    // Nobody else touches a message; an author does not edit someone else's.
    bob.send(&ClientMessage::Delete { id: secret.id }).await;
    assert_eq!(refusal(&mut bob).await.0, ErrorCode::Forbidden);
    moderator
        .send(&ClientMessage::Edit {
            id: secret.id,
            text: "x".into(),
        })
        .await;
    assert_eq!(refusal(&mut moderator).await.0, ErrorCode::Forbidden);
    bob.send(&ClientMessage::Delete { id: Uuid::new_v4() })
        .await;
    assert_eq!(refusal(&mut bob).await.0, ErrorCode::NotFound);

    // A moderator deletes, the author edits: everybody sees both, live.
    moderator
        .send(&ClientMessage::Delete { id: secret.id })
        .await;
    alice
        .send(&ClientMessage::Edit {
            id: typo.id,
            text: "a typo".into(),
        })
        .await;
    // Sent at once from two instances: the stream orders them either way.
    for reader in [&mut alice, &mut bob] {
        let (mut deleted, mut edited) = (false, false);
        while !(deleted && edited) {
            match reader
                .expect(|e| matches!(e, ServerEvent::Deleted(_) | ServerEvent::Edited(_)))
                .await
            {
                ServerEvent::Deleted(d) => {
                    assert_eq!((d.target, d.by.as_str()), (secret.id, "mod"));
                    assert!(d.offset > 0, "a stream event: {d:?}");
                    deleted = true;
                }
                ServerEvent::Edited(d) => {
                    assert_eq!((d.target, d.text.as_deref()), (typo.id, Some("a typo")));
                    edited = true;
                }
                _ => unreachable!(),
            }
        }
    }

    // A reader back from before the messages: tombstone, edited text, and
    // both events; from between: the events only.
    for (server, since) in [(&a, &before), (&b, &before), (&a, &after)] {
        let query = format!(
            "?token={}&since={}",
            token("reader", &[], SECRET, 600),
            since.to_query()
        );
        let (_, history, _) = Chat::open(server, &query).await;
        let deletion = history
            .iter()
            .any(|e| matches!(e, ServerEvent::Deleted(d) if d.target == secret.id));
        let edit = history
            .iter()
            .any(|e| matches!(e, ServerEvent::Edited(d) if d.target == typo.id));
        assert!(deletion && edit, "catch-up from {since:?}: {history:?}");
        if since == &before {
            let tomb = message_in(&history, secret.id).expect("the tombstone");
            assert!(tomb.deleted && tomb.text.is_empty(), "{tomb:?}");
            let fixed = message_in(&history, typo.id).expect("the edited message");
            assert!(fixed.edited && fixed.text == "a typo", "{fixed:?}");
        } else {
            assert!(message_in(&history, secret.id).is_none());
        }
    }
    // A fresh history never serves the deleted text again.
    let query = format!("?token={}", token("late", &[], SECRET, 600));
    let (_, history, _) = Chat::open(&a, &query).await;
    let shown = serde_json::to_string(&history).unwrap();
    assert!(!shown.contains("a secret"), "{shown}");
    assert!(!shown.contains("a tpyo"), "{shown}");

    // A deleted message cannot be deleted or edited again.
    alice.send(&ClientMessage::Delete { id: secret.id }).await;
    assert_eq!(refusal(&mut alice).await.0, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_edits_embedded() {
    deletions_and_edits_reach_readers_live_and_on_catch_up(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_edits_on_redis() {
    let redis = Redis::start();
    deletions_and_edits_reach_readers_live_and_on_catch_up(Some(&redis)).await;
}

// ---------------------------------------------------------------------------
// Kick, ban, mute, slow mode

async fn sanctions_hold_across_instances(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let mut moderator = member(&a, "mod", &["moderator"]).await;
    let mut bob = member(&b, "bob", &[]).await;
    let mut reader = member(&a, "reader", &[]).await;

    // Only moderators.
    bob.send(&ClientMessage::Kick {
        pseudo: "reader".into(),
    })
    .await;
    assert_eq!(refusal(&mut bob).await.0, ErrorCode::Forbidden);
    bob.send(&ClientMessage::SlowMode { seconds: 5 }).await;
    assert_eq!(refusal(&mut bob).await.0, ErrorCode::Forbidden);

    // Mute: bob reads but every say is refused with the time left.
    moderator
        .send(&ClientMessage::Mute {
            pseudo: "bob".into(),
            seconds: 600,
        })
        .await;
    let muted = system(&mut reader, SystemKind::Muted).await;
    assert_eq!(
        (muted.pseudo.as_str(), muted.by.as_deref()),
        ("bob", Some("mod"))
    );
    system(&mut bob, SystemKind::Muted).await;
    bob.say("let me talk").await;
    let (code, until, _) = refusal(&mut bob).await;
    assert_eq!((code, until), (ErrorCode::Muted, muted.until));
    moderator
        .send(&ClientMessage::Mute {
            pseudo: "bob".into(),
            seconds: 0,
        })
        .await;
    assert_eq!(system(&mut bob, SystemKind::Muted).await.until, None);
    said(&mut bob, "thanks").await;

    // Slow mode: one message per interval for everybody but moderators.
    moderator
        .send(&ClientMessage::SlowMode { seconds: 60 })
        .await;
    assert_eq!(
        system(&mut bob, SystemKind::SlowMode).await.seconds,
        Some(60)
    );
    said(&mut bob, "one").await;
    bob.say("two").await;
    let (code, _, wait) = refusal(&mut bob).await;
    assert_eq!(code, ErrorCode::SlowMode);
    assert!(
        wait.is_some_and(|ms| ms > 50_000 && ms <= 60_000),
        "{wait:?}"
    );
    said(&mut moderator, "mods are not held").await;
    said(&mut moderator, "at all").await;
    moderator
        .send(&ClientMessage::SlowMode { seconds: 0 })
        .await;
    system(&mut bob, SystemKind::SlowMode).await;
    said(&mut bob, "two").await;

    // Kick: closed on the other instance with the reason; may come back.
    moderator
        .send(&ClientMessage::Kick {
            pseudo: "bob".into(),
        })
        .await;
    assert_eq!(system(&mut reader, SystemKind::Kicked).await.pseudo, "bob");
    assert_eq!(refusal(&mut bob).await.0, ErrorCode::Kicked);
    assert_eq!(bob.client.closed().await, Some(4003));
    let mut bob = member(&b, "bob", &[]).await;
    let doomed = said(&mut bob, "something regrettable").await;

    // Ban with redaction: closed, the recent message deleted, refused
    // until the ban ends.
    moderator
        .send(&ClientMessage::Ban {
            pseudo: "bob".into(),
            seconds: 3,
            redact_minutes: 5,
        })
        .await;
    let (code, until, _) = refusal(&mut bob).await;
    assert_eq!(code, ErrorCode::Banned);
    assert!(until.is_some());
    assert_eq!(bob.client.closed().await, Some(4003));
    reader
        .expect(|e| matches!(e, ServerEvent::Deleted(d) if d.target == doomed.id))
        .await;
    // Refused as the socket opens, on every instance: not a line of the
    // room is read.
    for server in [&a, &b] {
        let query = format!("?token={}", token("bob", &[], SECRET, 600));
        let (refused, code) = Chat::refused(server, &query).await;
        assert!(
            matches!(
                refused,
                ServerEvent::Error {
                    code: ErrorCode::Banned,
                    until: Some(_),
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(code, Some(4003));
    }
    // It expires by itself.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    member(&b, "bob", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanctions_hold_across_instances_embedded() {
    sanctions_hold_across_instances(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sanctions_hold_across_instances_on_redis() {
    let redis = Redis::start();
    sanctions_hold_across_instances(Some(&redis)).await;
}

/// Slow mode holds everyone at once, on default settings: six people on
/// two instances each send three messages at the same moment; each gets
/// exactly one through and `slow_mode` for the two others, and the room
/// has six messages.
async fn slow_mode_holds_many_senders_at_once(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let mut moderator = member(&a, "mod", &["moderator"]).await;
    moderator
        .send(&ClientMessage::SlowMode { seconds: 60 })
        .await;
    system(&mut moderator, SystemKind::SlowMode).await;
    let mut senders = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        let name = format!("s{i}");
        senders.push((member(server, &name, &[]).await, name));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (mut sender, name) in senders {
        tasks.spawn(async move {
            for n in 0..3 {
                sender.say(&format!("{name} {n}")).await;
            }
            let (mut through, mut held) = (0, 0);
            while through + held < 3 {
                match sender.event().await {
                    ServerEvent::Message(m) if m.author == name => through += 1,
                    ServerEvent::Error { code, .. } => {
                        assert_eq!(code, ErrorCode::SlowMode, "{name}");
                        held += 1;
                    }
                    _ => {}
                }
            }
            (through, held)
        });
    }
    while let Some(answers) = tasks.join_next().await {
        assert_eq!(answers.unwrap(), (1, 2));
    }
    let query = format!("?token={}", token("late", &[], SECRET, 600));
    for server in [&a, &b] {
        let (_, history, _) = Chat::open(server, &query).await;
        let said = history
            .iter()
            .filter(|e| matches!(e, ServerEvent::Message(m) if m.author.starts_with('s')))
            .count();
        assert_eq!(said, 6);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_holds_many_senders_at_once_embedded() {
    slow_mode_holds_many_senders_at_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_holds_many_senders_at_once_on_redis() {
    let redis = Redis::start();
    slow_mode_holds_many_senders_at_once(Some(&redis)).await;
}

/// Bans and mutes live in Redis: an instance started afterwards keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_and_mutes_survive_an_instance_restart() {
    let redis = Redis::start();
    let first = Instance::configured(Some(&redis), &AUTH).await;
    let mut moderator = member(&first, "mod", &["moderator"]).await;
    // With tokens a sanction holds a subject: the room must know who they
    // are (here, from their messages in the history).
    for pseudo in ["eve", "mal"] {
        let mut them = member(&first, pseudo, &[]).await;
        said(&mut them, "hello").await;
        them.client.close().await;
        system(&mut moderator, SystemKind::Left).await;
    }
    for (pseudo, ban) in [("eve", true), ("mal", false)] {
        let frame = if ban {
            ClientMessage::Ban {
                pseudo: pseudo.into(),
                seconds: 600,
                redact_minutes: 0,
            }
        } else {
            ClientMessage::Mute {
                pseudo: pseudo.into(),
                seconds: 600,
            }
        };
        moderator.send(&frame).await;
        let kind = if ban {
            SystemKind::Banned
        } else {
            SystemKind::Muted
        };
        system(&mut moderator, kind).await;
    }
    drop(moderator);
    first.stop().await;

    let second = Instance::configured(Some(&redis), &AUTH).await;
    let query = format!("?token={}", token("eve", &[], SECRET, 600));
    let (refused, _) = Chat::refused(&second, &query).await;
    assert!(matches!(
        refused,
        ServerEvent::Error {
            code: ErrorCode::Banned,
            ..
        }
    ));
    let mut mal = member(&second, "mal", &[]).await;
    mal.say("hello?").await;
    assert_eq!(refusal(&mut mal).await.0, ErrorCode::Muted);
}

// ---------------------------------------------------------------------------
// Refusals

/// Without tokens there is no moderation, and says so; a forged or
/// expired moderator token does not even open the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_needs_a_valid_moderator_token() {
    let open = Instance::configured(None, &[]).await;
    let mut alice = Chat::join(&open, "alice").await;
    let message = said(&mut alice, "mine").await;
    alice.send(&ClientMessage::Delete { id: message.id }).await;
    match alice
        .expect(|e| matches!(e, ServerEvent::Error { .. }))
        .await
    {
        ServerEvent::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("CHAT_AUTH=required"), "{message}");
        }
        _ => unreachable!(),
    }

    let guarded = Instance::configured(None, &AUTH).await;
    for forged in [
        token(
            "mod",
            &["moderator"],
            "another secret, long enough too",
            600,
        ),
        token("mod", &["moderator"], SECRET, -60),
    ] {
        let url = guarded.chat_url(&format!("?token={forged}"));
        assert_eq!(common::refused_status(&url).await, 401);
    }
    // A token without the role moderates nothing.
    let mut plain = member(&guarded, "plain", &["member"]).await;
    plain
        .send(&ClientMessage::Ban {
            pseudo: "x".into(),
            seconds: 60,
            redact_minutes: 0,
        })
        .await;
    assert_eq!(refusal(&mut plain).await.0, ErrorCode::Forbidden);
}

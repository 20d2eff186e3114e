//! Who may do what, tried as an attacker would, from the client's side, on
//! two instances sharing one memory (embedded), one Redis, and a Redis
//! Cluster (`TEST_REDIS=cluster`): authorship is the token's subject (or
//! an anonymous session's identity), never the name; the backend's posts
//! are the backend's; sanctions hold the person on every instance, for
//! reading too; rate limits follow the person across reconnects.

mod common;

use app::protocol::{ChatMessage, ClientMessage, ErrorCode, ServerEvent, SystemKind};
use common::{api, Chat, Endpoint, Instance, Redis};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

const SECRET: &str = "an authorship test secret, long enough";
const AUTH: [(&str, &str); 2] = [("CHAT_AUTH", "required"), ("AUTH_JWT_SECRET", SECRET)];

fn token(sub: &str, name: &str, roles: &[&str]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = json!({"exp": now.as_secs() + 600, "sub": sub, "name": name, "roles": roles});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// Opens the default room as the token's holder and joins.
async fn member(server: &impl Endpoint, sub: &str, name: &str, roles: &[&str]) -> Chat {
    let query = format!("?token={}", token(sub, name, roles));
    Chat::join_query(server, &query, name).await
}

async fn refusal(chat: &mut Chat) -> ErrorCode {
    chat.expect_error().await
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

fn stored(history: &[ServerEvent], id: Uuid) -> &ChatMessage {
    history
        .iter()
        .find_map(|e| match e {
            ServerEvent::Message(m) if m.id == id => Some(m),
            _ => None,
        })
        .expect("the message is in the history")
}

// ---------------------------------------------------------------------------
// Authorship

/// The backend posts as "Newsbot"; a participant named `newsb0t` (a
/// look-alike), even a moderator, can neither edit nor delete it; the
/// backend can. Two people whose names collide are two authors.
async fn authorship_is_identity_not_name(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let (status, post) = api(
        &a,
        "POST",
        "/api/rooms/general/messages",
        None,
        json!({"author": "Newsbot", "text": "deploy at 17:00"}),
    )
    .await;
    assert_eq!(status, 201, "{post}");
    let news: Uuid = post["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(post["server"], true);
    assert!(post.get("author_id").is_none(), "{post}");

    let mut lookalike = member(&b, "mallory", "newsb0t", &["moderator"]).await;
    lookalike
        .send(&ClientMessage::Edit {
            id: news,
            text: "Cancelled, log in at http://evil.example".into(),
        })
        .await;
    assert_eq!(refusal(&mut lookalike).await, ErrorCode::Forbidden);
    lookalike.send(&ClientMessage::Delete { id: news }).await;
    assert_eq!(refusal(&mut lookalike).await, ErrorCode::Forbidden);
    let (_, history, _) = Chat::open(&a, &format!("?token={}", token("r", "r", &[]))).await;
    assert_eq!(stored(&history, news).text, "deploy at 17:00");

    // alice (sub 1) writes and leaves; Alice (sub 2) takes the name.
    let mut alice = member(&a, "1", "alice", &[]).await;
    let hers = said(&mut alice, "mine").await;
    assert_eq!(hers.author_id, "1");
    alice.client.close().await;
    let mut other = loop {
        let query = format!("?token={}", token("2", "Alice", &[]));
        let (mut chat, _, _) = Chat::open(&b, &query).await;
        chat.send(&ClientMessage::Join {
            pseudo: "Alice".into(),
            session: None,
        })
        .await;
        match chat
            .expect(|e| matches!(e, ServerEvent::Joined { .. } | ServerEvent::Error { .. }))
            .await
        {
            ServerEvent::Joined { .. } => break chat,
            // alice's leave is still on its way.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    other
        .send(&ClientMessage::Edit {
            id: hers.id,
            text: "not hers".into(),
        })
        .await;
    assert_eq!(refusal(&mut other).await, ErrorCode::Forbidden);
    other.send(&ClientMessage::Delete { id: hers.id }).await;
    assert_eq!(refusal(&mut other).await, ErrorCode::Forbidden);

    // The backend deletes its own post.
    let path = format!("/api/rooms/general/messages/{news}");
    assert_eq!(api(&b, "DELETE", &path, None, json!(null)).await.0, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorship_is_identity_not_name_embedded() {
    authorship_is_identity_not_name(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorship_is_identity_not_name_on_redis() {
    let redis = Redis::start();
    authorship_is_identity_not_name(Some(&redis)).await;
}

/// A participant who sends an id first does not take the backend's post:
/// the API answers 409 instead of passing the participant's message off
/// as the post, and the same id from the same participant is a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_somebody_else_sent_is_not_yours() {
    let server = Instance::configured(None, &[]).await;
    let mut mallory = Chat::join(&server, "mallory").await;
    let id = Uuid::new_v4();
    let say = ClientMessage::Say {
        text: "fake news".into(),
        id: Some(id),
    };
    mallory.send(&say).await;
    mallory
        .expect(|e| matches!(e, ServerEvent::Ack { .. }))
        .await;
    let post = json!({"author": "Newsbot", "text": "real news", "id": id});
    let (status, answer) = api(&server, "POST", "/api/rooms/general/messages", None, post).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("conflict")));
    // Her own repeat is acknowledged as before.
    mallory.send(&say).await;
    mallory
        .expect(|e| matches!(e, ServerEvent::Ack { .. }))
        .await;
    // And the backend's id is the backend's.
    let id = Uuid::new_v4();
    let post = json!({"author": "Newsbot", "text": "real news", "id": id});
    let (status, _) = api(&server, "POST", "/api/rooms/general/messages", None, post).await;
    assert_eq!(status, 201);
    mallory
        .send(&ClientMessage::Say {
            text: "mine now".into(),
            id: Some(id),
        })
        .await;
    assert_eq!(refusal(&mut mallory).await, ErrorCode::InvalidMessage);
}

// ---------------------------------------------------------------------------
// Sanctions that hold

/// A muted person cannot edit a recent message, show as typing or (without
/// tokens) rename into a fresh voice.
async fn a_mute_holds_every_voice(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let mut moderator = member(&a, "m", "mod", &["moderator"]).await;
    let mut bob = member(&b, "b", "bob", &[]).await;
    let recent = said(&mut bob, "before").await;
    moderator
        .send(&ClientMessage::Mute {
            pseudo: "bob".into(),
            seconds: 600,
        })
        .await;
    bob.expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Muted))
        .await;
    bob.send(&ClientMessage::Edit {
        id: recent.id,
        text: "speaking anyway".into(),
    })
    .await;
    assert_eq!(refusal(&mut bob).await, ErrorCode::Muted);
    bob.send(&ClientMessage::Typing).await;
    assert_eq!(refusal(&mut bob).await, ErrorCode::Muted);
    said(&mut moderator, "after").await;
    let (_, history, _) = Chat::open(&a, &format!("?token={}", token("r", "r", &[]))).await;
    assert_eq!(stored(&history, recent.id).text, "before");

    // Without tokens (the API mutes): no rename into a fresh voice either.
    let (c, d) = Instance::pair(redis, &[]).await;
    let mut eve = Chat::join_room(&c, "quiet", "eve").await;
    let (status, _) = api(
        &d,
        "POST",
        "/api/rooms/quiet/mute",
        None,
        json!({"pseudo": "eve", "seconds": 600}),
    )
    .await;
    assert_eq!(status, 204);
    eve.expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Muted))
        .await;
    eve.send(&ClientMessage::Rename {
        pseudo: "fresh".into(),
    })
    .await;
    assert_eq!(refusal(&mut eve).await, ErrorCode::Muted);
    eve.say("hello?").await;
    assert_eq!(refusal(&mut eve).await, ErrorCode::Muted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_holds_every_voice_embedded() {
    a_mute_holds_every_voice(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_holds_every_voice_on_redis() {
    let redis = Redis::start();
    a_mute_holds_every_voice(Some(&redis)).await;
}

/// A ban closes every connection of the person in the room, those that
/// only read too, on both instances, and the next one is refused as it
/// opens, before any of the room is sent; a look-alike name of another
/// subject is somebody else and is not held. The API bans a subject that
/// was never here.
async fn a_ban_keeps_the_person_from_reading(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &AUTH).await;
    let mut moderator = member(&a, "m", "mod", &["moderator"]).await;
    let mut bob = member(&b, "b", "bob", &[]).await;
    said(&mut bob, "hello").await;
    let bobs = format!("?token={}", token("b", "bob", &[]));
    let (mut reading, _, _) = Chat::open(&a, &bobs).await;
    moderator
        .send(&ClientMessage::Ban {
            pseudo: "bob".into(),
            seconds: 600,
            redact_minutes: 0,
        })
        .await;
    for chat in [&mut bob, &mut reading] {
        assert_eq!(refusal(chat).await, ErrorCode::Banned);
        assert_eq!(chat.client.closed().await, Some(4003));
    }
    for server in [&a, &b] {
        let (refused, code) = Chat::refused(server, &bobs).await;
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
    // Another subject whose name reads as bob's is not him.
    member(&b, "b2", "B0b", &[]).await;

    // A subject never seen here, banned ahead.
    let (status, answer) = api(
        &b,
        "POST",
        "/api/rooms/general/ban",
        None,
        json!({"subject": "stranger", "seconds": 60}),
    )
    .await;
    assert_eq!(status, 204, "{answer}");
    let strangers = format!("?token={}", token("stranger", "newcomer", &[]));
    let (refused, _) = Chat::refused(&a, &strangers).await;
    assert!(matches!(
        refused,
        ServerEvent::Error {
            code: ErrorCode::Banned,
            ..
        }
    ));
    // Lifted: back in.
    let lift = json!({"subject": "stranger", "seconds": 0});
    assert_eq!(
        api(&a, "POST", "/api/rooms/general/ban", None, lift)
            .await
            .0,
        204
    );
    member(&a, "stranger", "newcomer", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_keeps_the_person_from_reading_embedded() {
    a_ban_keeps_the_person_from_reading(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_keeps_the_person_from_reading_on_redis() {
    let redis = Redis::start();
    a_ban_keeps_the_person_from_reading(Some(&redis)).await;
}

/// Without tokens, the API's ban of "bob" keeps that name and its
/// look-alikes out on every instance, and bob's session under any name;
/// somebody else from the same (loopback, so shared) address is not held.
async fn an_anonymous_ban_holds_the_name_and_the_session(redis: Option<&Redis>) {
    let (a, b) = Instance::pair(redis, &[]).await;
    let mut carol = Chat::join(&a, "carol").await;
    let mut bob = Chat::join(&b, "bob").await;
    let session = bob.session;
    let (status, _) = api(
        &a,
        "POST",
        "/api/rooms/general/ban",
        None,
        json!({"pseudo": "bob", "seconds": 600}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(refusal(&mut bob).await, ErrorCode::Banned);
    assert_eq!(bob.client.closed().await, Some(4003));
    carol
        .expect(|e| matches!(e, ServerEvent::System(s) if s.kind == SystemKind::Banned))
        .await;

    for (server, name, session) in [
        (&a, "bob", Uuid::new_v4()),
        (&b, "B0B", Uuid::new_v4()),
        (&a, "robert", session),
    ] {
        let (mut again, _, _) = Chat::open(server, "").await;
        again
            .send(&ClientMessage::Join {
                pseudo: name.into(),
                session: Some(session),
            })
            .await;
        assert_eq!(refusal(&mut again).await, ErrorCode::Banned, "{name}");
        assert_eq!(again.client.closed().await, Some(4003), "{name}");
    }
    // The others here are not held: carol speaks, dave joins.
    said(&mut carol, "still here").await;
    Chat::join(&b, "dave").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_ban_holds_the_name_and_the_session_embedded() {
    an_anonymous_ban_holds_the_name_and_the_session(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_ban_holds_the_name_and_the_session_on_redis() {
    let redis = Redis::start();
    an_anonymous_ban_holds_the_name_and_the_session(Some(&redis)).await;
}

// ---------------------------------------------------------------------------
// Rate limits

/// Joins are counted per person, not per connection: reconnecting with
/// the same session does not refill the allowance; somebody else keeps
/// theirs. Default settings (10 a minute; each instance counts its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_the_person_across_reconnects() {
    let a = Instance::configured(None, &[]).await;
    let session = Uuid::new_v4();
    let mut refused = 0;
    for _ in 0..12 {
        let (mut chat, _, _) = Chat::open(&a, "").await;
        chat.send(&ClientMessage::Join {
            pseudo: "hopper".into(),
            session: Some(session),
        })
        .await;
        match chat
            .expect(|e| matches!(e, ServerEvent::Joined { .. } | ServerEvent::Error { .. }))
            .await
        {
            ServerEvent::Joined { .. } => {}
            ServerEvent::Error { code, .. } => {
                assert_eq!(code, ErrorCode::RateLimited);
                refused += 1;
            }
            _ => unreachable!(),
        }
        chat.client.close().await;
    }
    // Each new connection started afresh before: none was refused.
    assert_eq!(refused, 2, "refused of 12");
    Chat::join(&a, "somebody-else").await;
}

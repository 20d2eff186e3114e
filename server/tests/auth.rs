//! Relay access tokens (`RELAY_AUTH=required`): every token case, for
//! HS256 and for ES256, with tokens minted here; refusals say why, never
//! repeat the token, and close with 1008.

mod common;

use common::{Client, Endpoint, Instance, Redis};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "a test secret that is long enough";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn mint(key: &EncodingKey, algorithm: Algorithm, claims: Value) -> String {
    encode(&Header::new(algorithm), &claims, key).unwrap()
}

/// Registers with `registration`; the reply, or the error and close code.
async fn register(
    url: &str,
    registration: Value,
    bearer: Option<&str>,
) -> Result<Value, (String, Option<u16>)> {
    let mut client = match bearer {
        None => Client::connect(url).await,
        Some(token) => {
            common::try_connect(url, &[("Authorization", &format!("Bearer {token}"))], None)
                .await
                .expect("the upgrade")
        }
    };
    client.send_json(registration).await;
    let reply = client.json().await;
    if reply["type"] == "registered" {
        return Ok(reply);
    }
    assert_eq!(reply["type"], "error", "{reply}");
    let reason = reply["error"].as_str().unwrap().to_owned();
    Err((reason, client.closed().await))
}

/// Every case against one server whose tokens are signed with `key`.
async fn every_case(
    server: &Instance,
    key: &EncodingKey,
    algorithm: Algorithm,
    other: &EncodingKey,
) {
    let url = server.relay_url();
    let valid = |actions: Value| {
        mint(
            key,
            algorithm,
            json!({"exp": now() + 600, "actions": actions, "sub": "device-7"}),
        )
    };

    // Accepted: the exact action, a wildcard, the Bearer header.
    let token = valid(json!(["lights"]));
    let reply = register(&url, json!({"action": "lights", "token": token}), None).await;
    assert_eq!(reply.unwrap()["action"], "lights");
    let token = valid(json!(["sensors.*"]));
    let reply = register(
        &url,
        json!({"action": "sensors.kitchen", "token": token}),
        None,
    )
    .await;
    assert_eq!(reply.unwrap()["action"], "sensors.kitchen");
    let token = valid(json!(["lights"]));
    let reply = register(&url, json!({"action": "lights"}), Some(&token)).await;
    assert_eq!(reply.unwrap()["action"], "lights");

    // Refused, each with its reason and close 1008.
    let cases = [
        ("another action", json!(valid(json!(["lights"]))), "sensors.kitchen", "does not allow this action"),
        (
            "expired",
            json!(mint(key, algorithm, json!({"exp": now() - 60, "actions": ["lights"]}))),
            "lights",
            "expired",
        ),
        (
            "signed with another key",
            json!(mint(other, algorithm, json!({"exp": now() + 600, "actions": ["lights"]}))),
            "lights",
            "signature",
        ),
        (
            "alg none",
            json!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhY3Rpb25zIjpbImxpZ2h0cyJdLCJleHAiOjk5OTk5OTk5OTl9."),
            "lights",
            "access token",
        ),
        ("garbage", json!("not.a.token"), "lights", "not a valid JWT"),
        (
            "without exp",
            json!(mint(key, algorithm, json!({"actions": ["lights"]}))),
            "lights",
            "not a valid JWT",
        ),
        ("missing", Value::Null, "lights", "access token is required"),
    ];
    for (case, token, action, reason) in cases {
        let mut registration = json!({"action": action});
        if !token.is_null() {
            registration["token"] = token.clone();
        }
        let (said, code) = register(&url, registration, None).await.expect_err(case);
        assert!(said.contains(reason), "{case}: {said}");
        if let Some(token) = token.as_str() {
            assert!(
                !said.contains(token),
                "{case}: the reason repeats the token"
            );
        }
        assert_eq!(code, Some(1008), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_every_case() {
    let redis = Redis::start();
    let server = Instance::configured(
        Some(&redis),
        &[("RELAY_AUTH", "required"), ("AUTH_JWT_SECRET", SECRET)],
    )
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let other = EncodingKey::from_secret(b"somebody else's secret");
    every_case(&server, &key, Algorithm::HS256, &other).await;

    // The registration kept in Redis has the token's sub, not the token.
    let token = mint(
        &key,
        Algorithm::HS256,
        json!({"exp": now() + 600, "actions": ["kept"], "sub": "device-7"}),
    );
    // Kept open: a closed client leaves the registry.
    let mut kept = Client::connect(&server.relay_url()).await;
    kept.send_json(json!({"action": "kept", "token": token, "room": "hall"}))
        .await;
    let reply = kept.json().await;
    let id = reply["id"].as_str().unwrap();
    let stored: String = redis.query(
        redis::cmd("HGET")
            .arg(common::keys().relay_clients("kept"))
            .arg(id),
    );
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored,
        json!({"action": "kept", "room": "hall", "sub": "device-7"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_every_case() {
    let signing = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = std::env::temp_dir().join(format!("chat-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("public.pem");
    std::fs::write(&public, signing.public_key_pem()).unwrap();
    let server = Instance::configured(
        None,
        &[
            ("RELAY_AUTH", "required"),
            ("AUTH_JWT_PUBLIC_KEY", public.to_str().unwrap()),
        ],
    )
    .await;
    let key = EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes()).unwrap();
    let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
    every_case(&server, &key, Algorithm::ES256, &other).await;
    // An HS256 token is refused where only a public key is configured.
    let hs = mint(
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::HS256,
        json!({"exp": now() + 600, "actions": ["lights"]}),
    );
    let (said, code) = register(
        &server.relay_url(),
        json!({"action": "lights", "token": hs}),
        None,
    )
    .await
    .unwrap_err();
    assert!(said.contains("algorithm"), "{said}");
    assert_eq!(code, Some(1008));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Off by default: the drop-in needs no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_relay_auth_no_token_is_needed() {
    let server = Instance::configured(None, &[]).await;
    let reply = register(&server.relay_url(), json!({"action": "lights"}), None).await;
    assert_eq!(reply.unwrap()["type"], "registered");
}

/// `CHAT_AUTH=required`: the token (`?token=`) is needed to open the chat,
/// its `name` is the nickname whatever the client asks for, renames are
/// refused, and `rooms` limits the rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_tokens_name_the_speaker_and_limit_the_rooms() {
    use app::protocol::{ClientMessage, ErrorCode, ServerEvent};
    let server = Instance::configured(
        None,
        &[("CHAT_AUTH", "required"), ("AUTH_JWT_SECRET", SECRET)],
    )
    .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = |claims: Value| mint(&key, Algorithm::HS256, claims);

    // Anonymous, expired, nameless or for another room: refused before the upgrade.
    assert_eq!(common::refused_status(&server.chat_url("")).await, 401);
    let expired = token(json!({"exp": now() - 60, "name": "alice"}));
    assert_eq!(
        common::refused_status(&server.chat_url(&format!("?token={expired}"))).await,
        401
    );
    let nameless = token(json!({"exp": now() + 600}));
    assert_eq!(
        common::refused_status(&server.chat_url(&format!("?token={nameless}"))).await,
        401
    );
    // A token must say who holds it: its `sub` is what messages record and
    // what sanctions hold.
    let nobody = token(json!({"exp": now() + 600, "name": "alice"}));
    assert_eq!(
        common::refused_status(&server.chat_url(&format!("?token={nobody}"))).await,
        401
    );
    let elsewhere =
        token(json!({"exp": now() + 600, "sub": "1", "name": "alice", "rooms": ["other"]}));
    assert_eq!(
        common::refused_status(&server.chat_url(&format!("?token={elsewhere}"))).await,
        403
    );

    // A valid token: the nickname is its name, not the one asked for.
    let alice =
        token(json!({"exp": now() + 600, "sub": "1", "name": "alice", "rooms": ["general"]}));
    let (mut chat, _, _) = common::Chat::open(&server, &format!("?token={alice}")).await;
    chat.send(&ClientMessage::Join {
        pseudo: "bob".into(),
        session: None,
    })
    .await;
    let joined = chat
        .expect(|e| matches!(e, ServerEvent::Joined { .. }))
        .await;
    assert!(matches!(joined, ServerEvent::Joined { pseudo, .. } if pseudo == "alice"));
    chat.send(&ClientMessage::Rename {
        pseudo: "bob".into(),
    })
    .await;
    assert_eq!(chat.expect_error().await, ErrorCode::InvalidPseudo);
    chat.say("signed").await;
    let said = chat.expect_message().await;
    assert_eq!(
        (said.author.as_str(), said.author_id.as_str()),
        ("alice", "1")
    );
}

/// With `AUTH_JWT_ISSUER` and `AUTH_JWT_AUDIENCE`, a token of another
/// issuer or for another audience (or naming neither) is refused, on the
/// chat and the relay; `nbf` is checked whether or not they are set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_an_issuer_an_audience_and_their_start() {
    let bound = [
        ("CHAT_AUTH", "required"),
        ("RELAY_AUTH", "required"),
        ("AUTH_JWT_SECRET", SECRET),
        ("AUTH_JWT_ISSUER", "https://auth.example"),
        ("AUTH_JWT_AUDIENCE", "chat"),
    ];
    let server = Instance::configured(None, &bound).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = |extra: Value| {
        let mut claims =
            json!({"exp": now() + 600, "sub": "1", "name": "alice", "actions": ["lights"]});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        mint(&key, Algorithm::HS256, claims)
    };
    let ours = json!({"iss": "https://auth.example", "aud": "chat"});
    let cases = [
        (json!({"iss": "https://auth.example", "aud": "chat"}), true),
        (
            json!({"iss": "https://auth.example", "aud": ["other", "chat"]}),
            true,
        ),
        (json!({"iss": "https://evil.example", "aud": "chat"}), false),
        (
            json!({"iss": "https://auth.example", "aud": "billing"}),
            false,
        ),
        (json!({"aud": "chat"}), false),
        (json!({"iss": "https://auth.example"}), false),
        (
            json!({"iss": "https://auth.example", "aud": "chat", "nbf": now() + 600}),
            false,
        ),
        (
            json!({"iss": "https://auth.example", "aud": "chat", "nbf": now() - 5}),
            true,
        ),
    ];
    for (claims, accepted) in cases {
        let jwt = token(claims.clone());
        let status = common::upgrade_status(&server.chat_url(&format!("?token={jwt}"))).await;
        assert_eq!(status == 101, accepted, "chat {claims}: {status}");
        let reply = register(
            &server.relay_url(),
            json!({"action": "lights", "token": jwt}),
            None,
        )
        .await;
        assert_eq!(reply.is_ok(), accepted, "relay {claims}: {reply:?}");
    }
    // Unbound, `nbf` still holds and an `aud` is not judged.
    let open = Instance::configured(None, &bound[..3]).await;
    let later = token(json!({"nbf": now() + 600}));
    let status = common::upgrade_status(&open.chat_url(&format!("?token={later}"))).await;
    assert_eq!(status, 401);
    let any = token(ours);
    assert_eq!(
        common::upgrade_status(&open.chat_url(&format!("?token={any}"))).await,
        101
    );
}

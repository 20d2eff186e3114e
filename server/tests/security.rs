//! Defences, each tested with real clients against a real server process:
//! the origin check on WebSocket upgrades, connection limits (per address,
//! per instance, behind a trusted proxy, within the open-files limit),
//! half-open connections (slowloris), join / rename / message rate
//! limits, a chat member that stops reading, and Redis over TLS, with a
//! password and with an ACL user.

mod common;

use app::protocol::{ClientMessage, ErrorCode, ServerEvent};
use common::{
    eventually, free_port, resident_kib, try_connect, Chat, Client, Endpoint, Received, Server,
    WAIT,
};
use serde_json::json;
use server::admission::capacity::Full;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The value of one sample in `/metrics`, e.g.
/// `ws_rejected_total{kind="chat",reason="origin"}`; 0 if absent.
async fn metric(server: &Server, sample: &str) -> f64 {
    let (_, text) = server.admin_get("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

fn loopback(last: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, last]))
}

const EVIL: (&str, &str) = ("Origin", "https://evil.example");

#[tokio::test]
async fn only_allowed_origins_may_open_websockets() {
    let relay_port = free_port();
    let server = Server::start(None, &[("RELAY_PORT", &relay_port.to_string())]);
    let chat = server.chat_url("");
    let relay = server.relay_url();
    let dedicated = format!("ws://127.0.0.1:{relay_port}/any");
    let own = format!("http://{}", server.http);

    // Default: the server's own pages, and programs that send no Origin.
    for url in [&chat, &relay] {
        assert!(try_connect(url, &[("Origin", &own)], None).await.is_ok());
        assert!(try_connect(url, &[], None).await.is_ok());
    }
    for url in [&chat, &relay, &dedicated] {
        let (status, body) = try_connect(url, &[EVIL], None).await.err().unwrap();
        assert_eq!(status, 403, "{url}");
        assert!(body.contains("ALLOWED_ORIGINS"), "{body}");
        assert_eq!(body.lines().count(), 1, "one line: {body}");
    }
    // A page of the same host on another port is another origin.
    let other_port = format!("http://127.0.0.1:{}", free_port());
    let refused = try_connect(&chat, &[("Origin", &other_port)], None).await;
    assert_eq!(refused.err().map(|e| e.0), Some(403));
    assert_eq!(
        metric(&server, r#"ws_rejected_total{kind="chat",reason="origin"}"#).await,
        2.0
    );
    assert_eq!(
        metric(
            &server,
            r#"ws_rejected_total{kind="relay",reason="origin"}"#
        )
        .await,
        2.0
    );

    // A configured list replaces the default; an Origin may be required.
    let listed = "https://chat.example.com";
    let strict = Server::start(
        None,
        &[
            (
                "ALLOWED_ORIGINS",
                "https://chat.example.com,https://x.example:8443",
            ),
            ("CHAT_REQUIRE_ORIGIN", "true"),
            ("RELAY_REQUIRE_ORIGIN", "true"),
        ],
    );
    let (chat, relay) = (strict.chat_url(""), strict.relay_url());
    let own = format!("http://{}", strict.http);
    for url in [&chat, &relay] {
        assert!(try_connect(url, &[("Origin", listed)], None).await.is_ok());
        assert!(
            try_connect(url, &[("Origin", "https://x.example:8443")], None)
                .await
                .is_ok()
        );
        for origin in [EVIL.1, &own, "https://x.example", "null"] {
            let refused = try_connect(url, &[("Origin", origin)], None).await;
            assert_eq!(refused.err().map(|e| e.0), Some(403), "{origin}");
        }
        let (status, body) = try_connect(url, &[], None).await.err().unwrap();
        assert_eq!(status, 403);
        assert!(body.contains("Origin header is required"), "{body}");
    }
    assert_eq!(
        metric(
            &strict,
            r#"ws_rejected_total{kind="chat",reason="no_origin"}"#
        )
        .await,
        1.0
    );

    // `*` lets every site in, only when set.
    let open = Server::start(None, &[("ALLOWED_ORIGINS", "*")]);
    assert!(try_connect(&open.chat_url(""), &[EVIL], None).await.is_ok());
}

#[tokio::test]
async fn connection_limits_per_address_and_per_instance_are_released_on_close() {
    let server = Server::start(
        None,
        &[("MAX_CONNECTIONS", "3"), ("MAX_CONNECTIONS_PER_IP", "2")],
    );
    let (chat, relay) = (server.chat_url(""), server.relay_url());
    let a1 = try_connect(&chat, &[], loopback(1)).await.unwrap();
    let _a2 = try_connect(&relay, &[], loopback(1)).await.unwrap();
    // Chat and relay sockets share the limits, counted as they connect.
    let (status, body) = try_connect(&chat, &[], loopback(1)).await.err().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address")
    );
    let b1 = try_connect(&chat, &[], loopback(2)).await.unwrap();
    let (status, body) = try_connect(&relay, &[], loopback(3)).await.err().unwrap();
    assert_eq!(status, 503);
    assert!(body.starts_with("server full"), "{body}");
    assert_eq!(
        metric(
            &server,
            r#"connections_refused_total{port="public",reason="address_full"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            r#"connections_refused_total{port="public",reason="instance_full"}"#
        )
        .await,
        1.0
    );
    // Plain HTTP takes a place too.
    let (status, _) = common::http_get(server.http, "/healthz").await;
    assert_eq!(status, 503);

    // A clean close and a dropped socket both give their place back.
    a1.close().await;
    drop(b1);
    eventually("both places are free", WAIT, || async {
        match try_connect(&chat, &[], loopback(1)).await {
            Ok(client) => {
                let second = try_connect(&chat, &[], loopback(3)).await;
                client.close().await;
                if let Ok(second) = second {
                    second.close().await;
                    return true;
                }
                false
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test]
async fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
    let env = [
        ("MAX_CONNECTIONS_PER_IP", "1"),
        ("TRUSTED_PROXY_HEADER", "X-Forwarded-For"),
    ];
    let server = Server::start(None, &env);
    let url = server.chat_url("");
    let forwarded = |list: &'static str| [("X-Forwarded-For", list)];
    // From the proxy (127.0.0.1, trusted by default): the right-most
    // address is the client, whatever the client wrote before it.
    let _one = try_connect(&url, &forwarded("198.51.100.1, 203.0.113.5"), loopback(1))
        .await
        .unwrap();
    let same = try_connect(&url, &forwarded("203.0.113.5"), loopback(1)).await;
    assert_eq!(same.err().map(|e| e.0), Some(429));
    let _other = try_connect(&url, &forwarded("203.0.113.5, 203.0.113.6"), loopback(1))
        .await
        .unwrap();
    // From anywhere else the header is ignored: the peer address counts.
    let _direct = try_connect(&url, &forwarded("203.0.113.7"), loopback(2))
        .await
        .unwrap();
    let spoofed = try_connect(&url, &forwarded("203.0.113.8"), loopback(2)).await;
    assert_eq!(spoofed.err().map(|e| e.0), Some(429));

    // Without the setting, the header means nothing.
    let plain = Server::start(None, &[("MAX_CONNECTIONS_PER_IP", "1")]);
    let url = plain.chat_url("");
    let _first = try_connect(&url, &forwarded("203.0.113.9"), loopback(1))
        .await
        .unwrap();
    let second = try_connect(&url, &forwarded("203.0.113.10"), loopback(1)).await;
    assert_eq!(second.err().map(|e| e.0), Some(429));
}

/// The error event's message, for a refused frame.
async fn error_message(chat: &mut Chat) -> (ErrorCode, String) {
    match chat
        .expect(|e| matches!(e, ServerEvent::Error { .. }))
        .await
    {
        ServerEvent::Error { code, message, .. } => (code, message),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn renames_joins_and_messages_have_their_own_limits() {
    let server = Server::start(
        None,
        &[
            ("RENAME_LIMIT_PER_MIN", "2"),
            ("JOIN_LIMIT_PER_MIN", "2"),
            ("CHAT_RATE_LIMIT_PER_SEC", "5"),
            ("CHAT_RATE_LIMIT_BURST", "10"),
        ],
    );
    let rename = |pseudo: &str| ClientMessage::Rename {
        pseudo: pseudo.into(),
    };

    // Renames: two a minute, then an error each, then a close.
    let mut alice = Chat::join(&server, "alice").await;
    for name in ["alice2", "alice3"] {
        alice.send(&rename(name)).await;
        alice
            .expect(|e| matches!(e, ServerEvent::Joined { pseudo, .. } if pseudo == name))
            .await;
    }
    let mut watcher = Chat::join(&server, "watcher").await;
    alice.send(&rename("alice4")).await;
    let (code, message) = error_message(&mut alice).await;
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(
        message.starts_with("too many nickname changes: try again in"),
        "{message}"
    );
    // The refused rename was not announced: nothing about it reaches the
    // watcher before a message alice says after it.
    alice.say("after the refusal").await;
    loop {
        let frame = watcher.client.receive().await;
        assert!(
            !matches!(&frame, Received::Text(t) if t.contains("alice4")),
            "{frame:?}"
        );
        if matches!(&frame, Received::Text(t) if t.contains("after the refusal")) {
            break;
        }
    }
    alice.send(&rename("alice5")).await;
    assert_eq!(error_message(&mut alice).await.0, ErrorCode::RateLimited);
    alice.send(&rename("alice6")).await;
    assert_eq!(
        alice.client.close_reason().await,
        Some((1008, "too many nickname changes".to_owned()))
    );
    assert_eq!(
        metric(
            &server,
            r#"errors_total{kind="chat",error="rename_limited"}"#
        )
        .await,
        3.0
    );

    // Join attempts (here refused nicknames): the same.
    let (mut guesser, _, _) = Chat::open(&server, "").await;
    let join = ClientMessage::Join {
        pseudo: "watcher".into(),
        session: None,
    };
    for _ in 0..2 {
        guesser.send(&join).await;
        assert_eq!(guesser.expect_error().await, ErrorCode::PseudoTaken);
    }
    guesser.send(&join).await;
    let (code, message) = error_message(&mut guesser).await;
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(message.starts_with("too many join attempts"), "{message}");
    guesser.send(&join).await;
    guesser.send(&join).await;
    assert_eq!(
        guesser.client.close_reason().await,
        Some((1008, "too many join attempts".to_owned()))
    );

    // Messages: the per-connection frame rate.
    let mut flood = Chat::join(&server, "flood").await;
    let mut refused = 0;
    let code = loop {
        if !flood
            .client
            .try_send_text(r#"{"type":"say","text":"spam"}"#)
            .await
        {
            break flood.client.closed().await;
        }
        match flood.client.receive_within(Duration::from_millis(20)).await {
            Some(Received::Text(text)) if text.contains("rate_limited") => refused += 1,
            Some(Received::Close(code)) => break code,
            _ => {}
        }
        assert!(refused < 1000, "never closed");
    };
    assert!(refused > 0);
    assert_eq!(code, Some(1008));
    // The others were not affected (they got the spam that was let through).
    watcher.say("still here").await;
    watcher
        .expect(|e| matches!(e, ServerEvent::Message(m) if m.text == "still here"))
        .await;
}

/// Reads until both talkers' message `last` arrived, noting the
/// "sender:index" of every message, in arrival order.
async fn read_batch(chat: &mut Chat, last: usize, seen: &mut Vec<String>) {
    let lasts = [format!("alice:{last}"), format!("bob:{last}")];
    let mut found = 0;
    while found < lasts.len() {
        let message = chat.expect_message().await;
        let tag = message.text.rsplit_once(':').unwrap().0.to_owned();
        found += usize::from(lasts.contains(&tag));
        seen.push(tag);
    }
}

/// One round: alice and bob say `each` messages, ten each at a time, and
/// the next ten go once every reading member (the talkers and `reader`)
/// got these. A member then has at most twenty messages in flight, fewer
/// than its queue holds, however slowly the machine runs it; only the
/// member that does not read at all falls behind. Returns what each of
/// the three got.
async fn round(members: [&mut Chat; 3], each: usize, pad: &str) -> [Vec<String>; 3] {
    const BATCH: usize = 10;
    let [alice, bob, reader] = members;
    let mut seen: [Vec<String>; 3] = Default::default();
    for first in (0..each).step_by(BATCH) {
        let last = (first + BATCH).min(each) - 1;
        for i in first..=last {
            alice.say(&format!("alice:{i}:{pad}")).await;
            bob.say(&format!("bob:{i}:{pad}")).await;
        }
        let [a, b, r] = &mut seen;
        tokio::join!(
            read_batch(alice, last, a),
            read_batch(bob, last, b),
            read_batch(reader, last, r),
        );
    }
    seen
}

#[tokio::test]
async fn a_chat_member_that_stops_reading_is_dropped_and_costs_no_memory() {
    let server = Server::start(
        None,
        &[
            ("OUTBOUND_QUEUE", "32"),
            ("CHAT_RATE_LIMIT_PER_SEC", "100000"),
            ("CHAT_RATE_LIMIT_BURST", "100000"),
        ],
    );
    let mut alice = Chat::join(&server, "alice").await;
    let mut bob = Chat::join(&server, "bob").await;
    let mut reader = Chat::join(&server, "reader").await;
    // Joins, then never reads again: its socket buffers fill, then its queue.
    let mut slow = Chat::join(&server, "slow").await;
    assert_eq!(server.health().await["connections"]["chat"], 4);
    let before = resident_kib(server.pid());

    // Rounds of 250 messages from each talker, of 1900 four-byte characters
    // (7.6 KB; the limit is 2000 characters): at least 6 rounds (over 20 MiB
    // to each member), and until the slow member is gone.
    const EACH: usize = 250;
    const MIN_ROUNDS: usize = 6;
    const MAX_ROUNDS: usize = 30;
    let pad = "\u{1D11E}".repeat(1900);
    let mut rounds = 0;
    let mut dropped_after = None;
    while rounds < MIN_ROUNDS || dropped_after.is_none() {
        assert!(rounds < MAX_ROUNDS, "the slow member was never dropped");
        let got = round([&mut alice, &mut bob, &mut reader], EACH, &pad).await;
        for got in got {
            for who in ["alice", "bob"] {
                let theirs: Vec<String> = got
                    .iter()
                    .filter(|m| m.starts_with(&format!("{who}:")))
                    .cloned()
                    .collect();
                let expected: Vec<String> = (0..EACH).map(|i| format!("{who}:{i}")).collect();
                assert!(theirs == expected, "round {rounds}");
            }
        }
        rounds += 1;
        if dropped_after.is_none() && server.health().await["connections"]["chat"] == 3 {
            dropped_after = Some(rounds);
        }
    }
    let after = resident_kib(server.pid());
    let sent_mib = rounds * 2 * EACH * pad.len() / (1024 * 1024);
    eprintln!(
        "slow member dropped after {} rounds; {sent_mib} MiB to each member; RSS {before} KiB -> {after} KiB",
        dropped_after.unwrap()
    );
    assert!(
        metric(&server, r#"slow_consumers_total{kind="chat"}"#).await >= 1.0,
        "counted"
    );
    // Bound: the queue (32 frames) and the socket's write buffer of the slow
    // member, plus allocator slack: far less than the traffic it missed.
    const BOUND_KIB: u64 = 8 * 1024;
    assert!(
        after.saturating_sub(before) < BOUND_KIB,
        "RSS grew from {before} KiB to {after} KiB with {sent_mib} MiB sent"
    );
    // Its socket is closed: with 1013 if the close frame found room.
    let code = tokio::time::timeout(Duration::from_secs(60), slow.client.closed())
        .await
        .expect("the slow member's socket ends");
    assert!(matches!(code, Some(1013) | None), "{code:?}");
}

/// A redis-server with custom arguments (TLS, passwords, users), on a free
/// port, stopped on drop.
struct CustomRedis {
    port: u16,
    child: Child,
}

impl CustomRedis {
    /// `args(port)` gives the arguments for a port.
    fn start(args: impl Fn(u16) -> Vec<String>) -> CustomRedis {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(args(port))
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server on PATH");
            let stdout = child.stdout.take().unwrap();
            let (ready, is_ready) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("Ready to accept connections") {
                        let _ = ready.send(());
                    }
                }
            });
            if is_ready.recv_timeout(WAIT).is_ok() {
                return CustomRedis { port, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server");
    }
}

impl Drop for CustomRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate for 127.0.0.1 and localhost, as PEM
/// files in a private directory removed on drop.
struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    fn generate() -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = std::env::temp_dir().join(format!("chat-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "chat test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("redis.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("redis.key"), key.serialize_pem()).unwrap();
        Certificates { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Nothing the server printed, nor its `/healthz`, holds `secret`.
async fn never_shows(server: &Server, secret: &str) {
    let (_, health) = server.get("/healthz").await;
    assert!(!health.contains(secret), "{health}");
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(!logs.contains(secret), "{logs}");
}

/// Two members on two instances hear each other (so pub/sub and commands
/// both work through this Redis).
async fn chat_across(a: &Server, b: &Server) {
    let mut alice = Chat::join(a, "alice").await;
    let mut bob = Chat::join(b, "bob").await;
    alice.expect_count(2).await;
    bob.expect_count(2).await;
    alice.say("across").await;
    assert_eq!(bob.expect_message().await.text, "across");
    for server in [a, b] {
        assert_eq!(server.health().await["redis"], "ok");
    }
}

async fn redis_status(server: &Server) -> String {
    server.health().await["redis"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_and_a_password() {
    let certs = Certificates::generate();
    let password = "tls-Secret-4711";
    let redis = CustomRedis::start(|port| {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &certs.path("redis.pem"),
            "--tls-key-file",
            &certs.path("redis.key"),
            "--tls-ca-cert-file",
            &certs.path("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .map(String::from)
        .to_vec()
    });
    let url = format!("rediss://:{password}@127.0.0.1:{}", redis.port);
    let ca = certs.path("ca.pem");
    let env = [("REDIS_URL", url.as_str()), ("REDIS_CA_CERT", ca.as_str())];
    let a = Server::start(None, &env);
    let b = Server::start(None, &env);
    chat_across(&a, &b).await;
    never_shows(&a, password).await;

    // Without the private CA, the machine's roots do not vouch for this
    // server: no connection, and the logs say why.
    let untrusted = Server::start(None, &[("REDIS_URL", url.as_str())]);
    assert_eq!(redis_status(&untrusted).await, "degraded");
    eventually("the certificate error is logged", WAIT, || async {
        let logs = untrusted.logs.lock().unwrap().join("\n");
        logs.contains("cannot reach Redis") && logs.contains("certificate")
    })
    .await;
    never_shows(&untrusted, password).await;
}

#[tokio::test]
async fn redis_with_a_password_or_an_acl_user() {
    let (default_password, user_password) = ("Default-pw-31", "Alice-pw-27");
    let redis = CustomRedis::start(|port| {
        let password = format!(">{user_password}");
        let port = port.to_string();
        [
            "--port",
            &port,
            "--requirepass",
            default_password,
            "--user",
            "alice",
            "on",
            &password,
            // Least privilege: its own keys and channels, no admin commands.
            "~chat:*",
            "&chat:*",
            "+@all",
            "-@dangerous",
        ]
        .map(String::from)
        .to_vec()
    });
    let port = redis.port;
    let with_password = format!("redis://:{default_password}@127.0.0.1:{port}");
    let with_user = format!("redis://alice:{user_password}@127.0.0.1:{port}");
    let a = Server::start(None, &[("REDIS_URL", &with_password)]);
    let b = Server::start(None, &[("REDIS_URL", &with_user)]);
    chat_across(&a, &b).await;
    never_shows(&a, default_password).await;
    never_shows(&b, user_password).await;

    // A wrong password: the instance serves locally and says why, without
    // printing the password it was given.
    let wrong = "Wrong-pw-99";
    let bad = Server::start(
        None,
        &[(
            "REDIS_URL",
            &format!("redis://alice:{wrong}@127.0.0.1:{port}"),
        )],
    );
    assert_eq!(redis_status(&bad).await, "degraded");
    eventually("the refusal is logged", WAIT, || async {
        let logs = bad.logs.lock().unwrap().join("\n").to_lowercase();
        logs.contains("wrongpass") || logs.contains("authentication")
    })
    .await;
    never_shows(&bad, wrong).await;
    assert!(
        bad.logs
            .lock()
            .unwrap()
            .join("\n")
            .contains("alice:***@127.0.0.1"),
        "the redacted URL names the user"
    );

    // A bad URL stops the server with one line, without the password.
    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .env(
            "REDIS_URL",
            format!("redis://alice:{wrong}@127.0.0.1:{port}/not-a-db"),
        )
        .env("PORT", "0")
        .env("RELAY_PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("REDIS_URL") && !stderr.contains(wrong),
        "{stderr}"
    );
    // Clients still connect to the degraded instance.
    assert!(try_connect(&bad.chat_url(""), &[], None).await.is_ok());
}

/// A WebSocket handshake written by hand, with the `Host` and `Origin` a
/// browser would send from a page at that name; the HTTP status and body.
async fn handshake(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
    origin: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut reply))
        .await
        .expect("an answer")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    let status = reply[9..12].parse().unwrap();
    (status, reply)
}

/// DNS rebinding: a page at a name its site made resolve to this server
/// sends `Host` and `Origin` with that name. Refused on the chat socket and
/// on the relay port, with the setting to change named; the configured
/// public origin, `localhost` and the IP address keep working.
#[tokio::test]
async fn a_rebound_name_cannot_open_a_socket() {
    let relay_port = free_port().to_string();
    let server = Server::start(
        None,
        &[
            ("PUBLIC_ORIGINS", "https://chat.example.test"),
            ("RELAY_PORT", &relay_port),
        ],
    );
    let http = server.http;
    let relay = server.relay.expect("the relay port");
    for (addr, path) in [(http, "/ws"), (relay, "/"), (http, "/relay")] {
        let rebound = format!("rebind.evil.example:{}", addr.port());
        let (status, body) = handshake(addr, path, &rebound, &format!("http://{rebound}")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("PUBLIC_ORIGINS"), "{body}");
        for (host, origin) in [
            (
                format!("127.0.0.1:{}", addr.port()),
                format!("http://127.0.0.1:{}", addr.port()),
            ),
            (
                format!("localhost:{}", addr.port()),
                format!("http://localhost:{}", addr.port()),
            ),
            (
                "chat.example.test".to_owned(),
                "https://chat.example.test".to_owned(),
            ),
        ] {
            let (status, body) = handshake(addr, path, &host, &origin).await;
            assert_eq!(status, 101, "{host} {path}: {body}");
        }
    }
}

/// Connections that each send the start of a request and then nothing, the
/// way a slowloris attack holds a server's sockets: each reports, when the
/// server ends it, how long it lasted and whether it was refused outright.
async fn half_open(
    server: SocketAddr,
    from: IpAddr,
    count: usize,
) -> Vec<tokio::task::JoinHandle<(Duration, bool)>> {
    let mut ends = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut stream = socket.connect(server).await.expect("TCP connects");
        let opened = Instant::now();
        ends.push(tokio::spawn(async move {
            // Refused connections may be gone before this lands.
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            let refused = answer.starts_with(b"HTTP/1.1 429");
            (opened.elapsed(), refused)
        }));
    }
    ends
}

/// A chat exchange, a relay exchange and `/healthz`, from 127.0.0.1.
async fn others_are_served(server: &Server) {
    assert_eq!(common::http_get(server.http, "/healthz").await.0, 200);
    let pseudo = format!("alice-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let mut alice = Chat::join(server, &pseudo).await;
    alice.say("still here").await;
    assert_eq!(alice.expect_message().await.text, "still here");
    alice.client.close().await;
    let mut pair = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(&server.relay_url()).await;
        client.send_json(json!({"action": "lights"})).await;
        assert_eq!(client.json().await["type"], "registered");
        pair.push(client);
    }
    pair[0].send_json(json!({"on": true})).await;
    assert_eq!(pair[1].json().await["on"], true);
}

#[tokio::test]
async fn half_open_connections_from_one_address_are_capped_and_timed_out_on_both_ports() {
    // Default settings (256 connections per address, 5 s for the headers),
    // with the relay on its own port as by default.
    let relay_port = free_port().to_string();
    let server = Server::start(None, &[("RELAY_PORT", &relay_port)]);
    const FLOOD: usize = 2_000;
    const PER_ADDRESS: usize = 256;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    let relay = server.relay.unwrap();
    let (on_public, on_relay) = tokio::join!(
        half_open(server.http, [127, 0, 0, 5].into(), FLOOD),
        half_open(relay, [127, 0, 0, 6].into(), FLOOD),
    );
    // While the flood holds its connections, everybody else is served.
    others_are_served(&server).await;
    // Part of the scenario: the flood has held its connections for half the
    // header timeout, and everybody else is still served.
    tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    others_are_served(&server).await;

    for (port, ends) in [("public", on_public), ("relay", on_relay)] {
        let mut held = 0;
        let mut refused = 0;
        for end in ends {
            let (lasted, was_refused) = tokio::time::timeout(HEADER_TIMEOUT + WAIT, end)
                .await
                .unwrap_or_else(|_| {
                    panic!("{port}: a half-open connection outlived the header timeout")
                })
                .unwrap();
            if was_refused {
                assert!(
                    lasted < HEADER_TIMEOUT / 2,
                    "{port}: refused after {lasted:?}"
                );
                refused += 1;
            } else {
                held += 1;
            }
        }
        assert!(held <= PER_ADDRESS, "{port}: {held} connections held");
        assert!(
            refused >= FLOOD - 2 * PER_ADDRESS,
            "{port}: {refused} refused"
        );
        let sample = format!(r#"connections_refused_total{{port="{port}",reason="address_full"}}"#);
        assert!(metric(&server, &sample).await >= refused as f64);
    }
    others_are_served(&server).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(None, &[("HEADER_TIMEOUT_SECS", "1")]);
    let mut stream = tokio::net::TcpStream::connect(server.http).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive for a next request, then closed for want of one.
    let opened = Instant::now();
    let rest = tokio::time::timeout(WAIT, stream.read(&mut answer)).await;
    assert!(matches!(rest, Ok(Ok(0)) | Ok(Err(_))), "{rest:?}");
    assert!(opened.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn connections_stay_within_the_open_files_limit() {
    // A process allowed 400 files keeps 256 for itself and accepts 144
    // connections; the next is refused, not an accept error for everybody.
    let mut command = Command::new("prlimit");
    command.args(["--nofile=400:400", env!("CARGO_BIN_EXE_server")]);
    let server = common::Server::spawn_configured(command, None, &[]);
    assert!(server
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|line| line.contains("above what the open-files limit holds")));
    let mut held = Vec::new();
    for last in 1..=144u8 {
        let from = IpAddr::from([127, 0, 1, last]);
        held.push(
            try_connect(&server.chat_url(""), &[], Some(from))
                .await
                .unwrap(),
        );
    }
    let (status, body) = try_connect(&server.chat_url(""), &[], loopback(9))
        .await
        .err()
        .unwrap();
    assert_eq!((status, body.as_str()), (503, Full::Instance.reason()));
    drop(held.pop());
    eventually("a place comes back", WAIT, || async {
        try_connect(&server.chat_url(""), &[], loopback(9))
            .await
            .is_ok()
    })
    .await;
}

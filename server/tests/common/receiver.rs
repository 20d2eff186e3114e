//! A backend receiving webhooks: a real HTTP server on a free loopback
//! port that records every request it acknowledges, checks its signature,
//! and can be told to answer 500 for a while.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const WEBHOOK_SECRET: &str = "a webhook test secret";

/// One acknowledged request.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key: String,
    pub body: Value,
    pub raw: String,
    /// Its `X-Webhook-Signature` header, as sent.
    pub signature: String,
    /// Its `X-Webhook-Id` header.
    pub id: String,
    /// Its signature is the HMAC of its time and body with the secret,
    /// and its time recent.
    pub signed: bool,
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Delivery>>,
    failing_until: Mutex<Option<Instant>>,
    refused: Mutex<usize>,
}

pub struct Receiver {
    pub url: String,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, inner }
    }

    /// The settings that send an instance's webhooks here.
    pub fn env(&self) -> [(&str, &str); 2] {
        [
            ("WEBHOOK_URL", self.url.as_str()),
            ("WEBHOOK_SECRET", WEBHOOK_SECRET),
        ]
    }

    /// Answers 500 to everything for this long from now.
    pub fn fail_for(&self, time: Duration) {
        *self.inner.failing_until.lock().unwrap() = Some(Instant::now() + time);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.got.lock().unwrap().clone()
    }

    /// How many requests were answered 500.
    pub fn refused(&self) -> usize {
        *self.inner.refused.lock().unwrap()
    }

    /// The room's events as the backend first got them (duplicates left
    /// out after checking they are the same request again), gaps included.
    pub fn room_events(&self, room: &str) -> Vec<Value> {
        let mut seen = std::collections::HashMap::<String, String>::new();
        let mut events = Vec::new();
        for delivery in self.deliveries() {
            assert!(
                delivery.signed,
                "a request without a valid signature: {}",
                delivery.raw
            );
            if delivery.body["room"] != room {
                continue;
            }
            if let Some(first) = seen.get(&delivery.key) {
                assert_eq!(first, &delivery.raw, "one key, two different bodies");
                continue;
            }
            seen.insert(delivery.key.clone(), delivery.raw.clone());
            events.push(delivery.body["event"].clone());
        }
        events
    }

    /// The relay events (registered/unregistered) of an action, first
    /// deliveries only.
    pub fn relay_events(&self, action: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let deliveries = self.deliveries().into_iter();
        deliveries
            .filter(|d| d.body["action"] == action && d.key.starts_with("relay:"))
            .filter(|d| seen.insert(d.key.clone()))
            .map(|d| d.body)
            .collect()
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = inner
        .failing_until
        .lock()
        .unwrap()
        .is_some_and(|until| Instant::now() < until);
    if failing {
        *inner.refused.lock().unwrap() += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let raw = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    let signature = headers
        .get("x-webhook-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let id = headers
        .get("x-webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let signed = !id.is_empty() && verify(signature, &raw, Duration::from_secs(300));
    let signature = signature.to_owned();
    let json = headers
        .get("content-type")
        .is_some_and(|value| value == "application/json");
    let body: Value = serde_json::from_str(&raw).expect("a JSON body");
    let key = body["key"].as_str().expect("a key").to_owned();
    inner.got.lock().unwrap().push(Delivery {
        key,
        body,
        raw,
        signature,
        id,
        signed: signed && json,
    });
    StatusCode::NO_CONTENT
}

/// Checks a `t=<unix>,v1=<hex>` signature of `"<t>.<body>"` the way the
/// README tells receivers to: a valid HMAC and a time within `tolerance`.
pub fn verify(signature: &str, body: &str, tolerance: Duration) -> bool {
    let mut parts = signature.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let Ok(sent) = t.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    expected == v1 && now.abs_diff(sent) <= tolerance.as_secs()
}

/// Checks that `events` are one epoch's offsets from `first` on, with
/// none missing, in order, up to `last` at least (events appended since
/// the test read `last` may follow).
pub fn assert_contiguous(events: &[Value], first: u64, last: u64) {
    let offsets: Vec<u64> = events
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    let end = offsets.last().copied().unwrap_or(0).max(last);
    let expected: Vec<u64> = (first..=end).collect();
    assert_eq!(
        offsets, expected,
        "the room's events, in order, none missing"
    );
    let epochs: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["epoch"].as_str().unwrap())
        .collect();
    assert_eq!(epochs.len(), 1, "one epoch");
}

/// Waits until the room's events reach `offset` at the backend.
pub async fn delivered_up_to(receiver: &Receiver, room: &str, offset: u64, within: Duration) {
    let reached = || async {
        let events = receiver.room_events(room);
        events.last().and_then(|e| e["offset"].as_u64()) >= Some(offset)
    };
    super::eventually("the webhook delivered the room's events", within, reached).await;
}

//! Scenario 12: the server API and the webhooks under load. A webhook
//! receiver in this process (acknowledging everything at once) records when
//! each message event arrives; its lag is that time minus the event's `ts`
//! (the server's clock, on this machine too), so it covers the append, the
//! deliverer finding the room, and the POST.
//!
//! - 12a: scenario 3a's chat fan-out with webhooks on: what they cost the
//!   fan-out, and how far behind the backend is;
//! - 12b: backend workers posting messages through the server API of both
//!   instances as fast as they are answered, a room each (webhooks on):
//!   posts per second, their round trip, and the webhook lag of those
//!   messages.

use crate::lab::Lab;
use crate::measure::{histogram, Row};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Backend workers posting at once in 12b, spread over both instances.
const WORKERS: usize = 16;
/// How long the webhook may stay silent before the count is final.
const HOOK_IDLE: Duration = Duration::from_secs(5);

struct Got {
    /// Message events (by key) and their lag in microseconds.
    keys: HashSet<String>,
    /// Gap events: messages lost to the webhook.
    gaps: u64,
    lag: Histogram<u64>,
    last: Option<Instant>,
}

/// The backend's end of the webhooks.
pub struct Hooks {
    url: String,
    got: Arc<Mutex<Got>>,
}

impl Hooks {
    pub fn start() -> anyhow::Result<Hooks> {
        let got = Arc::new(Mutex::new(Got {
            keys: HashSet::new(),
            gaps: 0,
            lag: histogram(),
            last: None,
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(got.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        // A backend is a service of its own: its thread and runtime, not
        // the one the thousand clients of the load keep busy.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).await
            })
        });
        Ok(Hooks { url, got })
    }

    /// The settings that send an instance's webhooks here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("WEBHOOK_URL".into(), self.url.clone()),
            ("WEBHOOK_SECRET".into(), "a benchmark webhook secret".into()),
        ]
    }

    /// Waits until `messages` message events arrived or none came for a
    /// while; then forgets them and says how many came and how late.
    async fn drained(&self, messages: u64) -> String {
        loop {
            let (count, idle) = {
                let got = self.got.lock().expect("not poisoned");
                let idle = got.last.is_none_or(|last| last.elapsed() > HOOK_IDLE);
                (got.keys.len() as u64, idle)
            };
            if count >= messages || idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = self.got.lock().expect("not poisoned");
        let lag = std::mem::replace(&mut got.lag, histogram());
        let count = got.keys.len();
        let gaps = std::mem::take(&mut got.gaps);
        got.keys.clear();
        got.last = None;
        let ms = |q: f64| lag.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "webhook: {count} of {messages} messages, {gaps} gap(s), lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(0.5),
            ms(0.99),
            lag.max() as f64 / 1000.0
        )
    }
}

async fn receive(State(got): State<Arc<Mutex<Got>>>, body: String) -> StatusCode {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let event = &body["event"];
    if event["type"] == "gap" {
        got.lock().expect("not poisoned").gaps += 1;
    }
    if event["type"] == "message" {
        let mut got = got.lock().expect("not poisoned");
        let key = body["key"].as_str().unwrap_or_default().to_owned();
        if got.keys.insert(key) {
            let ts_us = event["ts"].as_u64().unwrap_or(0) * 1000;
            got.lag
                .saturating_record(now_us.saturating_sub(ts_us).max(1));
            got.last = Some(Instant::now());
        }
    }
    StatusCode::NO_CONTENT
}

/// 12a: a flow's row, with what the webhook got of its messages.
pub async fn with_webhooks(hooks: &Hooks, mut row: Row) -> Row {
    let said = hooks.drained(row.sent).await;
    row.note.push_str(&format!("; {said}"));
    row
}

/// 12b: backend workers post through the server API of two instances,
/// each to a room of its own (one room's webhook is one POST at a time:
/// a single room is bounded by the backend's round trip).
pub async fn publish(
    lab: &Lab,
    name: &str,
    hooks: &Hooks,
    duration: Duration,
) -> anyhow::Result<Row> {
    let servers = lab.servers_with(2, name, &hooks.env())?;
    let rooms = lab.topic(name);
    let client = reqwest::Client::new();
    let before = lab.usage(&servers)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let port = servers[worker % servers.len()].admin_port;
        let url = format!("http://127.0.0.1:{port}/api/rooms/{rooms}-{worker}/messages");
        let client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut n = 0u64;
            while started.elapsed() < duration {
                let body = format!(r#"{{"author":"bench","text":"w{worker} {n}"}}"#);
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .context("the server API does not answer")?;
                anyhow::ensure!(
                    response.status() == reqwest::StatusCode::CREATED,
                    "the server API answered {}",
                    response.status()
                );
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                n += 1;
            }
            anyhow::Ok((n, latency))
        }));
    }
    let (mut posted, mut latency) = (0, histogram());
    for worker in workers {
        let (n, mine) = worker.await??;
        posted += n;
        latency.add(&mine)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let said = hooks.drained(posted).await;
    let after = lab.usage(&servers)?;
    let mut row = Row {
        scenario: name.to_owned(),
        deliveries: posted,
        seconds,
        deliveries_per_sec: posted as f64 / seconds.max(1e-9),
        note: format!(
            "{WORKERS} backend workers posting to a room each through both instances' API (latency: the POST's round trip); {said}"
        ),
        ..Row::default()
    };
    row.latency(&latency);
    lab.spent(&mut row, before, after);
    Ok(row)
}

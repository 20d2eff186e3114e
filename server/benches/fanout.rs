//! Fan-out benchmark with targets. Starts real server processes (and a
//! private redis-server for the scale-out case), connects real WebSocket
//! clients, and measures what the server process spends: wall time, CPU
//! time per delivered frame (from /proc, so the clients' CPU is not
//! counted), resident memory per idle connection, and cross-instance
//! latency. Prints the figures and checks them against the targets below;
//! exits non-zero if one is missed. The targets leave room for a busy
//! 2-core machine; the figures are what to compare between versions.
//!
//!     cargo bench -p server --bench fanout

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
#[path = "../tests/common/mod.rs"]
mod common;

use common::{Redis, Server};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

/// Idle connections for the memory figure.
const IDLE: usize = 1000;
/// Chat members receiving every message, and messages sent.
const MEMBERS: usize = 200;
const MESSAGES: usize = 1000;
/// Relay clients per instance in the Redis case.
const PER_INSTANCE: usize = 100;

const TARGET_RSS_PER_CONN_KB: f64 = 64.0;
const TARGET_CPU_US_PER_DELIVERY: f64 = 20.0;
/// Includes the receiving clients' own scheduling on the same 2 cores.
const TARGET_P99_MS: f64 = 100.0;

/// The server's own resources, read from /proc.
struct Usage(u32);

impl Usage {
    fn of(server: &Server) -> Usage {
        Usage(server.pid())
    }

    fn proc_field(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.0)).unwrap()
    }

    fn rss_kb(&self) -> f64 {
        let status = self.proc_field("status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// User + system CPU time of the server process.
    fn cpu(&self) -> Duration {
        let stat = self.proc_field("stat");
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }
}

/// A server without rate limits (the benchmark floods on purpose).
fn start(redis: Option<&Redis>) -> Server {
    Server::start(
        redis,
        &[
            ("RUST_LOG", "warn,server=info"),
            ("RATE_LIMIT_PER_SEC", "1000000"),
            ("RATE_LIMIT_BURST", "1000000"),
            ("OUTBOUND_QUEUE", "4096"),
        ],
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Report {
    failed: bool,
}

impl Report {
    fn check(&mut self, what: &str, value: f64, unit: &str, target: f64, lower_is_better: bool) {
        let ok = if lower_is_better {
            value <= target
        } else {
            value >= target
        };
        let bound = if lower_is_better { "<=" } else { ">=" };
        println!(
            "{:<44} {value:>10.2} {unit:<8} target {bound} {target} {}",
            what,
            if ok { "ok" } else { "MISSED" }
        );
        self.failed |= !ok;
    }
}

/// Memory of idle chat connections (each has joined the room listener).
async fn idle_memory(report: &mut Report) {
    let server = start(None);
    let usage = Usage::of(&server);
    let url = server.chat_url("");
    let mut warm = Vec::new();
    for _ in 0..10 {
        warm.push(connect(&url).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = usage.rss_kb();
    let mut clients = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let mut ws = connect(&url).await;
        next_json(&mut ws).await; // history
        clients.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_conn = (usage.rss_kb() - before) / IDLE as f64;
    report.check(
        "RSS per idle chat connection",
        per_conn,
        "KiB",
        TARGET_RSS_PER_CONN_KB,
        true,
    );
}

/// One sender, MEMBERS receivers in one room of one instance.
async fn chat_fanout(report: &mut Report) {
    let server = start(None);
    let usage = Usage::of(&server);
    let url = server.chat_url("");
    let mut receivers = Vec::new();
    for i in 0..MEMBERS {
        let mut ws = connect(&url).await;
        ws.send(Message::text(
            json!({"type":"join","pseudo":format!("m{i}")}).to_string(),
        ))
        .await
        .unwrap();
        receivers.push(ws);
    }
    let mut sender = connect(&url).await;
    sender
        .send(Message::text(
            json!({"type":"join","pseudo":"sender"}).to_string(),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = 0;
                while got < MESSAGES {
                    if let Some(Ok(Message::Text(t))) = ws.next().await {
                        if t.contains("\"type\":\"message\"") {
                            got += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let cpu_before = usage.cpu();
    let started = Instant::now();
    for i in 0..MESSAGES {
        sender
            .send(Message::text(
                json!({"type":"say","text":format!("message {i}")}).to_string(),
            ))
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let wall = started.elapsed();
    let cpu = usage.cpu() - cpu_before;
    let deliveries = (MEMBERS * MESSAGES) as f64;
    println!(
        "chat fan-out: {MESSAGES} messages x {MEMBERS} members = {deliveries} deliveries in {:.2} s ({:.0}/s wall, clients included)",
        wall.as_secs_f64(),
        deliveries / wall.as_secs_f64()
    );
    let cpu_us = cpu.as_secs_f64() * 1e6 / deliveries;
    report.check(
        "server CPU per chat delivery",
        cpu_us,
        "us",
        TARGET_CPU_US_PER_DELIVERY,
        true,
    );
}

/// Relay clients on two instances through a private Redis: latency of the
/// cross-instance path.
async fn relay_through_redis(report: &mut Report) {
    let redis = Redis::start();
    let a = start(Some(&redis));
    let b = start(Some(&redis));
    let mut clients = Vec::new();
    for server in [&a, &b] {
        for _ in 0..PER_INSTANCE {
            let mut ws = connect(&server.relay_url()).await;
            ws.send(Message::text(r#"{"action":"bench"}"#))
                .await
                .unwrap();
            next_json(&mut ws).await;
            clients.push(ws);
        }
    }
    let mut sender = clients.remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let receivers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(MESSAGES);
                while latencies.len() < MESSAGES {
                    if let Some(Ok(Message::Text(t))) = ws.next().await {
                        let sent: u64 = serde_json::from_str::<Value>(&t).unwrap()["t"]
                            .as_u64()
                            .unwrap();
                        latencies.push(now_us().saturating_sub(sent));
                    }
                }
                // Only the other instance's clients measure the Redis path.
                (i >= PER_INSTANCE - 1, latencies)
            })
        })
        .collect();
    let started = Instant::now();
    for _ in 0..MESSAGES {
        sender
            .send(Message::text(json!({"t": now_us()}).to_string()))
            .await
            .unwrap();
        // A steady stream, not one burst: latency, not queueing, is measured.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut remote = Vec::new();
    for task in receivers {
        let (is_remote, latencies) = task.await.unwrap();
        if is_remote {
            remote.extend(latencies);
        }
    }
    remote.sort_unstable();
    let percentile =
        |p: f64| remote[((remote.len() as f64 * p) as usize).min(remote.len() - 1)] as f64 / 1000.0;
    println!(
        "relay via Redis: {MESSAGES} messages to {} clients on 2 instances in {:.2} s; cross-instance latency p50 {:.2} ms, p99 {:.2} ms",
        2 * PER_INSTANCE - 1,
        started.elapsed().as_secs_f64(),
        percentile(0.5),
        percentile(0.99)
    );
    report.check(
        "cross-instance relay latency p99",
        percentile(0.99),
        "ms",
        TARGET_P99_MS,
        true,
    );
}

#[tokio::main]
async fn main() {
    println!(
        "machine: {} cores; figures from the server process only (/proc), clients excluded",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report { failed: false };
    idle_memory(&mut report).await;
    chat_fanout(&mut report).await;
    relay_through_redis(&mut report).await;
    if report.failed {
        std::process::exit(1);
    }
}

//! Scenario 6: chat clients all connect and join at once, half on each
//! instance. How long until every one is joined, and whether every one ends
//! up seeing the exact participant count.

use crate::client;
use crate::lab::Lab;
use crate::measure::{histogram, Row};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(lab: &Lab, name: &str, clients: usize) -> anyhow::Result<Row> {
    let servers = lab.servers(2, name)?;
    let room = lab.topic(name);
    let ports: Vec<u16> = servers.iter().map(|s| s.http_port).collect();
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let joined = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let before = lab.usage(&servers)?;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (room, port) = (room.clone(), ports[i % ports.len()]);
        let (counts, joined, stop) = (counts.clone(), joined.clone(), stop.clone());
        tasks.spawn(async move {
            let mut ws = client::chat(port, &room).await?;
            client::send_join(&mut ws, &format!("s{i}")).await?;
            if let Some(count) = client::await_joined(&mut ws).await? {
                counts[i].store(count, Ordering::Relaxed);
            }
            let took = start.elapsed();
            joined.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    text = client::next_text(&mut ws) => match client::count_of(&text?) {
                        Some(count) => counts[i].store(count, Ordering::Relaxed),
                        None => continue,
                    },
                    _ = stop.cancelled() => return anyhow::Ok(took),
                }
            }
        });
    }
    let all_joined = wait(JOIN_TIMEOUT, || joined.load(Ordering::Relaxed) == clients).await;
    let joined_in = start.elapsed();
    let exact = || {
        counts
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) == clients as u64)
            .count()
    };
    let settled = wait(SETTLE_TIMEOUT, || exact() == clients).await;
    let settled_in = start.elapsed();
    let after = lab.usage(&servers)?;
    let exact = exact();
    stop.cancel();

    let mut latency = histogram();
    let mut failures = Vec::new();
    while let Some(task) = tasks.join_next().await {
        match task? {
            Ok(took) => latency.saturating_record(took.as_micros() as u64),
            Err(err) => failures.push(err.to_string()),
        }
    }
    let mut row = Row {
        scenario: name.to_owned(),
        deliveries: latency.len(),
        seconds: joined_in.as_secs_f64(),
        deliveries_per_sec: latency.len() as f64 / joined_in.as_secs_f64(),
        lost: (clients - exact) as u64,
        note: format!(
            "{}/{clients} joined in {:.2} s{}; final count exactly {clients} for {exact}/{clients}{}",
            latency.len(),
            joined_in.as_secs_f64(),
            if all_joined { "" } else { " (timed out)" },
            if settled { format!(" after {:.2} s", settled_in.as_secs_f64()) } else { String::new() },
        ),
        ..Row::default()
    };
    if let Some(first) = failures.first() {
        row.note
            .push_str(&format!("; {} failed, first: {first}", failures.len()));
    }
    row.latency(&latency);
    lab.spent(&mut row, before, after);
    Ok(row)
}

async fn wait(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

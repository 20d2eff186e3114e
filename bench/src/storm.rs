//! Join storms: chat clients all connect and join one room at once.
//! Scenario 6: 1,000 of them, half on each of two instances through Redis.
//! Scenario 8: a big room, 5,000 of them on one embedded instance, with the
//! server's memory per member, and after they all leave; again with 100
//! messages of about 200 characters in the room's history, as a busy room
//! holds, which every member is sent on joining.
//! How long until every one is joined, whether every one ends up seeing the
//! exact participant count, and how many frames each got meanwhile.

use crate::client;
use crate::lab::Lab;
use crate::measure::{histogram, Row};
use crate::procs::Server;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long memory is given to come back once everybody left.
const AFTER_LEAVING: Duration = Duration::from_secs(8);
/// How long after the storm the memory is read again, the members still
/// there: longer than the server's period for giving freed memory back.
const SETTLED: Duration = Duration::from_secs(6);

/// What one member saw.
#[derive(Default)]
struct Member {
    count: AtomicU64,
    frames: AtomicU64,
}

pub async fn run(
    lab: &Lab,
    name: &str,
    servers: Vec<Server>,
    clients: usize,
    history: usize,
) -> anyhow::Result<Row> {
    let room = lab.topic(name);
    // A busy room: every member is sent its history on joining.
    crate::stored::post_messages(&servers[0], &room, history).await?;
    let ports: Vec<u16> = servers.iter().map(|s| s.http_port).collect();
    let members: Arc<Vec<Member>> = Arc::new((0..clients).map(|_| Member::default()).collect());
    let joined = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let before = lab.usage(&servers)?;
    let heap_before = servers[0].heap_kib().await;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..clients {
        let (room, port) = (room.clone(), ports[i % ports.len()]);
        let (members, joined, stop) = (members.clone(), joined.clone(), stop.clone());
        tasks.spawn(async move {
            let me = &members[i];
            let mut ws = client::chat(port, &room).await?;
            client::send_join(&mut ws, &format!("s{i}")).await?;
            let (count, frames) = client::await_joined(&mut ws).await?;
            me.frames.fetch_add(frames, Ordering::Relaxed);
            if let Some(count) = count {
                me.count.store(count, Ordering::Relaxed);
            }
            let took = start.elapsed();
            joined.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    text = client::next_text(&mut ws) => {
                        let text = text?;
                        me.frames.fetch_add(1, Ordering::Relaxed);
                        if let Some(count) = client::count_of(&text) {
                            me.count.store(count, Ordering::Relaxed);
                        }
                    }
                    _ = stop.cancelled() => return anyhow::Ok(took),
                }
            }
        });
    }
    let all_joined = wait(JOIN_TIMEOUT, || joined.load(Ordering::Relaxed) == clients).await;
    let joined_in = start.elapsed();
    let exact = || {
        members
            .iter()
            .filter(|m| m.count.load(Ordering::Relaxed) == clients as u64)
            .count()
    };
    let settled = wait(SETTLE_TIMEOUT, || exact() == clients).await;
    let settled_in = start.elapsed();
    let after = lab.usage(&servers)?;
    let heap_after = servers[0].heap_kib().await;
    // What stays once the storm's garbage (each joiner's history frame,
    // written and freed) was given back; single-instance rows only.
    let steady = if servers.len() == 1 {
        tokio::time::sleep(SETTLED).await;
        Some(lab.usage(&servers)?)
    } else {
        None
    };
    let exact = exact();
    let frames: Vec<u64> = members
        .iter()
        .map(|m| m.frames.load(Ordering::Relaxed))
        .collect();
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
            "{}/{clients} joined in {:.2} s{}; final count exactly {clients} for {exact}/{clients}{}; frames per member mean {:.0}, most {}",
            latency.len(),
            joined_in.as_secs_f64(),
            if all_joined { "" } else { " (timed out)" },
            if settled { format!(" after {:.2} s", settled_in.as_secs_f64()) } else { String::new() },
            frames.iter().sum::<u64>() as f64 / clients.max(1) as f64,
            frames.iter().max().copied().unwrap_or(0),
        ),
        ..Row::default()
    };
    if servers.len() == 1 {
        // Everybody left (their sockets dropped above): what memory came back.
        tokio::time::sleep(AFTER_LEAVING).await;
        let left = lab.usage(&servers)?;
        let (start_kib, full_kib) = (before.rss_kib(), after.rss_kib());
        let per_member = full_kib.saturating_sub(start_kib) as f64 / clients.max(1) as f64;
        let steady_kib = steady.map_or(full_kib, |steady| steady.rss_kib());
        let steady_per_member = steady_kib.saturating_sub(start_kib) as f64 / clients.max(1) as f64;
        row.note.push_str(&format!(
            "; RSS {start_kib} -> {full_kib} KiB, {per_member:.2} KiB per member, {steady_per_member:.2} {}s later, {} KiB after they left{}",
            SETTLED.as_secs(),
            left.rss_kib(),
            crate::idle::heap_note(heap_before, heap_after, clients)
        ));
        row.rss_per_connection_kib = Some(per_member);
    }
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

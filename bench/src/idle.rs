//! Scenario 4: many clients that say nothing, on one instance: registered
//! relay clients (4a), or chat members joined in rooms of [`ROOM_SIZE`]
//! (4b). The server's resident memory before and after, per connection.

use crate::client::{self, Proto, Ws};
use crate::lab::Lab;
use crate::measure::Row;
use futures::StreamExt;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connections opened first, so one-time allocations (runtime, Redis
/// connections, first buffers) are not charged to the measured ones.
const WARM_UP: usize = 100;
const CONNECT_CONCURRENCY: usize = 200;
/// Chat members per room: a room's joins are each announced to it.
const ROOM_SIZE: usize = 50;

pub async fn run(lab: &Lab, name: &str, proto: Proto, connections: usize) -> anyhow::Result<Row> {
    let servers = lab.servers(1, name)?;
    let server = &servers[0];
    let (port, topic) = match proto {
        Proto::Relay => (server.relay_port, lab.topic(name)),
        Proto::Chat => (server.http_port, lab.topic(name)),
    };
    let stop = CancellationToken::new();
    let mut readers = JoinSet::new();
    let mut keep_reading = |sockets: Vec<Ws>| {
        // As a real client would (it also answers the server's pings).
        for mut ws in sockets {
            let stop = stop.clone();
            readers.spawn(async move {
                tokio::select! {
                    _ = async { while let Some(Ok(_)) = ws.next().await {} } => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    };
    keep_reading(open(proto, port, &format!("{topic}w"), WARM_UP).await.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = lab.usage(&servers)?;
    let heap_before = server.heap_kib().await;
    let (sockets, failed) = open(proto, port, &topic, connections).await;
    let opened = sockets.len();
    keep_reading(sockets);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = lab.usage(&servers)?;
    let heap_after = server.heap_kib().await;
    stop.cancel();
    while readers.join_next().await.is_some() {}

    let (rss_before, rss_after) = (before.rss_kib(), after.rss_kib());
    let per_conn = rss_after.saturating_sub(rss_before) as f64 / opened.max(1) as f64;
    let mut row = Row {
        scenario: name.to_owned(),
        deliveries: opened as u64,
        lost: failed as u64,
        note: format!(
            "{opened} idle {} clients: RSS {rss_before} -> {rss_after} KiB, {per_conn:.2} KiB per connection{}",
            proto.name(),
            heap_note(heap_before, heap_after, opened)
        ),
        rss_per_connection_kib: Some(per_conn),
        ..Row::default()
    };
    lab.spent(&mut row, before, after);
    Ok(row)
}

/// Opens `count` registered relay clients or joined chat members; also
/// how many failed.
async fn open(proto: Proto, port: u16, topic: &str, count: usize) -> (Vec<Ws>, usize) {
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| async move {
            match proto {
                Proto::Relay => client::relay(port, topic).await,
                Proto::Chat => {
                    let room = format!("{topic}-{}", i / ROOM_SIZE);
                    let mut ws = client::chat(port, &room).await?;
                    client::send_join(&mut ws, &format!("m{i}")).await?;
                    client::await_joined(&mut ws).await?;
                    Ok(ws)
                }
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    (results.into_iter().flatten().collect(), failed)
}

/// The heap in use before and after, per connection, when the server
/// publishes it.
pub fn heap_note(before: Option<u64>, after: Option<u64>, count: usize) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            let per = after.saturating_sub(before) as f64 / count.max(1) as f64;
            format!("; heap in use {before} -> {after} KiB, {per:.2} KiB per connection")
        }
        _ => String::new(),
    }
}

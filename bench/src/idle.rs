//! Scenario 4: many registered relay clients that say nothing, on one
//! instance. The server's resident memory before and after, per connection.

use crate::client::{self, Ws};
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

pub async fn run(lab: &Lab, name: &str, connections: usize) -> anyhow::Result<Row> {
    let servers = lab.servers(1, name)?;
    let (port, action) = (servers[0].relay_port, lab.topic(name));
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
    keep_reading(open(port, &action, WARM_UP).await.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = lab.usage(&servers)?;
    let (sockets, failed) = open(port, &action, connections).await;
    let opened = sockets.len();
    keep_reading(sockets);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = lab.usage(&servers)?;
    stop.cancel();
    while readers.join_next().await.is_some() {}

    let (rss_before, rss_after) = (before.rss_kib(), after.rss_kib());
    let per_conn = rss_after.saturating_sub(rss_before) as f64 / opened.max(1) as f64;
    let mut row = Row {
        scenario: name.to_owned(),
        deliveries: opened as u64,
        lost: failed as u64,
        note: format!(
            "{opened} idle relay clients: RSS {rss_before} -> {rss_after} KiB, {per_conn:.2} KiB per connection"
        ),
        rss_per_connection_kib: Some(per_conn),
        ..Row::default()
    };
    lab.spent(&mut row, before, after);
    Ok(row)
}

/// Opens `count` registered relay clients; also how many failed.
async fn open(port: u16, action: &str, count: usize) -> (Vec<Ws>, usize) {
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|_| client::relay(port, action))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    (results.into_iter().flatten().collect(), failed)
}

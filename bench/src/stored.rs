//! Scenario 13b, a room of many stored events on the embedded default: the
//! data file is written here, in the server's format (a redb file with its
//! `rooms` and `events` tables, docs/operations.md), then a server starts on
//! it: its start-up time, its memory, 50-event pages read back from
//! anywhere in the room through the socket (`older`), and the disk bytes
//! per message.

use crate::lab::Lab;
use crate::measure::Row;
use crate::procs::{Server, Usage};
use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use redb::{Database, TableDefinition};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The server's tables, as its data file holds them.
const ROOMS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("rooms");
const EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("events");

const ROOM: &str = "stored";
const PAGE: u64 = 50;

/// Writes a room of `events` messages of about 200 characters.
fn write_file(path: &std::path::Path, events: u64) -> anyhow::Result<()> {
    let db = Database::create(path).with_context(|| format!("cannot make {}", path.display()))?;
    let epoch = format!("{:016x}bench", crate::client::now_us());
    let text = "a message of about two hundred characters, as people write them in a busy room, with a few words more to reach the length the other scenarios use for their own messages here.";
    let mut offset = 0;
    while offset < events {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(EVENTS)?;
            for _ in 0..100_000.min(events - offset) {
                offset += 1;
                let frame = format!(
                    r#"{{"epoch":"{epoch}","offset":{offset},"type":"message","id":"{}","author":"bench","author_id":"anon-0000000000000000","text":"{offset} {text}","ts":{}}}"#,
                    uuid::Uuid::new_v4(),
                    1_700_000_000_000u64 + offset,
                );
                table.insert((ROOM, offset), frame.as_str())?;
            }
        }
        txn.open_table(ROOMS)?
            .insert(ROOM, (epoch.as_str(), offset))?;
        txn.commit()?;
    }
    Ok(())
}

pub async fn run(lab: &Lab, name: &str, events: u64, pages: usize) -> anyhow::Result<Row> {
    let dir = lab.dir.join("stored");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("rooms.redb");
    let written = Instant::now();
    write_file(&file, events)?;
    let writing = written.elapsed();
    let bytes = std::fs::metadata(&file)?.len();

    let started = Instant::now();
    let env = [(String::from("DATA_DIR"), dir.display().to_string())];
    let server = Server::start(&lab.bin, None, &lab.dir, "13b-stored", &env)?;
    let start_up = started.elapsed();
    let before = server.usage()?;

    let url = format!("ws://127.0.0.1:{}/ws?room={ROOM}", server.http_port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut seed = crate::client::now_us() | 1;
    let begun = Instant::now();
    for _ in 0..pages {
        // xorshift: pages from anywhere in the room, never twice the same run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before_offset = PAGE + 1 + seed % (events - PAGE);
        let older = format!(r#"{{"type":"older","before":{before_offset},"limit":{PAGE}}}"#);
        let asked = Instant::now();
        socket.send(Message::text(older)).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .context("no page within 10 s")?
                .context("the socket closed")??;
            if let Message::Text(text) = frame {
                if text.starts_with(r#"{"type":"page""#) {
                    let page: serde_json::Value = serde_json::from_str(&text)?;
                    let got = page["events"].as_array().map_or(0, Vec::len) as u64;
                    anyhow::ensure!(got == PAGE, "a page of {got} events, not {PAGE}");
                    break;
                }
            }
        }
        latency.record(asked.elapsed().as_micros() as u64)?;
    }
    let paging = begun.elapsed();
    let after: Usage = server.usage()?;
    let mut row = Row {
        scenario: name.to_owned(),
        deliveries: pages as u64,
        seconds: paging.as_secs_f64(),
        deliveries_per_sec: pages as f64 / paging.as_secs_f64(),
        server_cpu_s: (after.cpu - before.cpu).as_secs_f64(),
        server_rss_mib: after.rss_kib as f64 / 1024.0,
        note: format!(
            "{events} stored events ({:.1} s to write the file): start-up {:.0} ms, RSS {:.1} MiB at start and {:.1} MiB after {pages} pages of {PAGE} from anywhere (the figures above), {:.0} disk bytes per message",
            writing.as_secs_f64(),
            start_up.as_secs_f64() * 1000.0,
            before.rss_kib as f64 / 1024.0,
            after.rss_kib as f64 / 1024.0,
            bytes as f64 / events as f64,
        ),
        ..Row::default()
    };
    row.latency(&latency);
    Ok(row)
}

/// One instance through the lab's Redis: 1,000 messages of about 200
/// characters in a room, then what its list of events takes in Redis
/// (`MEMORY USAGE`, all of the list sampled).
pub async fn redis_memory(lab: &Lab, name: &str) -> anyhow::Result<Row> {
    let servers = lab.servers(1, name)?;
    let room = lab.topic(name);
    post_messages(&servers[0], &room, 1000).await?;
    let mut redis = redis::Client::open(lab.redis.url())?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("chat:*:room:{room}:*"))
        .query(&mut redis)?;
    let mut bytes = 0u64;
    for key in &keys {
        let used: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query(&mut redis)?;
        bytes += used.unwrap_or(0);
    }
    Ok(Row {
        scenario: name.to_owned(),
        deliveries: 1000,
        note: format!(
            "{:.0} KiB of Redis memory for a room's 1,000 retained events of about 200 characters ({} keys)",
            bytes as f64 / 1024.0,
            keys.len()
        ),
        ..Row::default()
    })
}

/// Posts `count` messages of about 200 characters to a room through the
/// server API, as a busy room holds them.
pub async fn post_messages(server: &Server, room: &str, count: usize) -> anyhow::Result<()> {
    let url = format!(
        "http://127.0.0.1:{}/api/rooms/{room}/messages",
        server.admin_port
    );
    let client = reqwest::Client::new();
    let text = "a".repeat(200);
    for n in 0..count {
        let response = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"author":"bench","text":"{n} {text}"}}"#))
            .send()
            .await
            .context("the server API does not answer")?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
    }
    Ok(())
}

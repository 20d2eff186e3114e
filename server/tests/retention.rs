//! Retention instead of a window: `HISTORY_MAX_EVENTS` and
//! `HISTORY_MAX_AGE` trim a room's oldest events, on the embedded default's
//! data file, in memory and in Redis (one, or a cluster with
//! `TEST_REDIS=cluster`); what is retained is what scroll-back, catch-up
//! and the history shown on joining read. With Redis a room keeps 1,000
//! events unless told otherwise.

mod common;

use common::tempdir::Dir;
use common::{Chat, Redis, Server};
use std::time::Duration;

async fn post(server: &Server, room: &str, from: usize, count: usize) {
    common::post_messages(server.admin, room, from, count).await;
}

/// Every retained offset of the room, oldest first.
async fn retained(server: &Server, room: &str) -> Vec<u64> {
    let events = common::retained_events(server.admin, room).await;
    events
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect()
}

/// Waits until the room retains exactly `expected`.
async fn retains(server: &Server, room: &str, expected: Vec<u64>) {
    let what = format!("{room} retains {}..", expected.first().unwrap_or(&0));
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        last = retained(server, room).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{what}: it retains {} events from {:?}",
        last.len(),
        last.first()
    );
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

/// On the data file: 1,000 events with `HISTORY_MAX_EVENTS=300` leave the
/// newest 300, in the file, in the history shown on joining, and after a
/// restart; a client resuming from a trimmed offset is told it missed
/// some; the trimmed events are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_file_keeps_the_newest_events_up_to_the_count() {
    let dir = Dir::new();
    let data = dir.path().to_str().unwrap().to_owned();
    let env = [("DATA_DIR", data.as_str()), ("HISTORY_MAX_EVENTS", "300")];
    let server = Server::start(None, &env);
    post(&server, "counted", 0, 1_000).await;
    retains(&server, "counted", range(701, 1_000)).await;
    let (status, metrics) = common::http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    let trimmed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("history_trimmed_events_total "))
        .and_then(|n| n.parse::<f64>().ok());
    assert!(trimmed >= Some(700.0), "{trimmed:?}");
    assert!(
        metrics.contains("rooms_file_bytes "),
        "stored bytes reported"
    );
    drop(server);

    let server = Server::start(None, &env);
    assert_eq!(retained(&server, "counted").await, range(701, 1_000));
    let (chat, _, _) = Chat::open(&server, "?room=counted").await;
    let epoch = chat.position.epoch.clone();
    let (resumed, missed, _) =
        Chat::open(&server, &format!("?room=counted&since={epoch}:500")).await;
    assert!(!resumed.recovered, "offsets 501..700 are gone");
    assert!(missed.iter().all(|e| e.position().unwrap().offset > 700));
    let (resumed, missed, _) =
        Chat::open(&server, &format!("?room=counted&since={epoch}:800")).await;
    assert!(resumed.recovered);
    assert_eq!(missed.len(), 200);
}

/// By age, on the data file and in memory: events older than
/// `HISTORY_MAX_AGE` go, the newer ones stay, also from the history shown
/// on joining.
async fn the_oldest_events_go_by_age(data_dir: &str) {
    let server = Server::start(None, &[("DATA_DIR", data_dir), ("HISTORY_MAX_AGE", "6s")]);
    post(&server, "aging", 0, 20).await;
    // Checked between the old ones' end and the new ones' (6 s later).
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    post(&server, "aging", 20, 5).await;
    retains(&server, "aging", range(21, 25)).await;
    let (_, history, _) = Chat::open(&server, "?room=aging").await;
    let shown: Vec<u64> = history
        .iter()
        .map(|e| e.position().unwrap().offset)
        .collect();
    assert_eq!(shown, range(21, 25));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_file_trims_by_age() {
    let dir = Dir::new();
    the_oldest_events_go_by_age(dir.path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_trims_by_age() {
    the_oldest_events_go_by_age("memory").await;
}

/// Redis keeps 1,000 events by default, all of them paged back and caught
/// up with (the history shown on joining is the newest 100); a count and
/// an age limit hold as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_a_thousand_events_by_default() {
    let redis = Redis::start();
    let server = Server::start(Some(&redis), &[]);
    post(&server, "kept", 0, 1_050).await;
    assert_eq!(retained(&server, "kept").await, range(51, 1_050));
    let (chat, history, _) = Chat::open(&server, "?room=kept").await;
    assert_eq!(history.len(), 100);
    let epoch = chat.position.epoch.clone();
    let (resumed, missed, _) = Chat::open(&server, &format!("?room=kept&since={epoch}:60")).await;
    assert!(resumed.recovered, "everything after 60 is retained");
    let offsets: Vec<u64> = missed
        .iter()
        .map(|e| e.position().unwrap().offset)
        .collect();
    assert_eq!(offsets, range(61, 1_050));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trims_by_count_and_age() {
    let redis = Redis::start();
    let server = Server::start(
        Some(&redis),
        &[("HISTORY_MAX_EVENTS", "100"), ("HISTORY_MAX_AGE", "4s")],
    );
    post(&server, "short", 0, 150).await;
    assert_eq!(retained(&server, "short").await, range(51, 150));
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    post(&server, "short", 150, 1).await;
    assert_eq!(retained(&server, "short").await, vec![151]);
}

/// With Redis, age is trimmed in the background, not by the next append:
/// a room nobody writes to after the newer events loses the older ones
/// once they are past the limit, and the newer ones stay until theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_trims_a_quiet_room_by_age_without_an_append() {
    let redis = Redis::start();
    let server = Server::start(Some(&redis), &[("HISTORY_MAX_AGE", "6s")]);
    post(&server, "quiet", 0, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    post(&server, "quiet", 20, 5).await;
    // The first 20 are past the limit from 6 s on, the last 5 from 9 s.
    retains(&server, "quiet", range(21, 25)).await;
}

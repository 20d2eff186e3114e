//! Big rooms: a crowd joining at once costs each member a bounded number
//! of frames, and every join is still announced exactly once.

mod common;

use app::protocol::{ClientMessage, ServerEvent, SystemKind};
use common::{eventually, Endpoint, Instance, Redis, WAIT};
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const JOINS: u64 = 1000;

/// What one member saw from the moment its socket opened.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    /// The last participant count it was told.
    count: AtomicU64,
    /// People named or counted in "joined" announcements.
    joined: AtomicU64,
}

/// One member: opens a socket to the room, joins, and reads every frame
/// until `stop`.
async fn member(url: String, pseudo: String, seen: Arc<Seen>, stop: CancellationToken) {
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the chat socket opens");
    let join = ClientMessage::Join {
        pseudo,
        session: None,
    };
    let join = serde_json::to_string(&join).unwrap();
    ws.send(Message::text(join)).await.expect("join sent");
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = stop.cancelled() => return,
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("the member's socket ended during the storm: {other:?}"),
        };
        seen.frames.fetch_add(1, Ordering::Relaxed);
        match serde_json::from_str(&text).expect("server events are JSON") {
            ServerEvent::Count { count } => seen.count.store(count, Ordering::Relaxed),
            ServerEvent::System(s) if s.kind == SystemKind::Joined => {
                seen.joined.fetch_add(s.people(), Ordering::Relaxed);
            }
            ServerEvent::Error { code, message, .. } => panic!("refused: {code:?} {message}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_a_thousand_joins_costs_each_member_a_bounded_number_of_frames() {
    let redis = Redis::start();
    // A thousand people, who all come from this test's one address.
    let crowd = [("MAX_CONNECTIONS_PER_IP", "2000")];
    let a = Instance::configured(Some(&redis), &crowd).await;
    let b = Instance::configured(Some(&redis), &crowd).await;
    let urls = [a.chat_url(""), b.chat_url("")];
    let stop = CancellationToken::new();
    let seen: Vec<Arc<Seen>> = (0..JOINS).map(|_| Arc::default()).collect();

    // The first member is in before the storm: unbatched, it would be told
    // of every one of the 999 others, one frame each.
    let mut tasks = tokio::task::JoinSet::new();
    let first = seen[0].clone();
    tasks.spawn(member(
        urls[0].clone(),
        "p0".into(),
        first.clone(),
        stop.clone(),
    ));
    let one_member = || async { first.count.load(Ordering::Relaxed) == 1 };
    eventually("the first member is counted", WAIT, one_member).await;
    for (i, seen) in seen.iter().enumerate().skip(1) {
        let url = urls[i % 2].clone();
        tasks.spawn(member(url, format!("p{i}"), seen.clone(), stop.clone()));
    }

    let storm = Duration::from_secs(120);
    let all_counted = || async {
        seen.iter()
            .all(|s| s.count.load(Ordering::Relaxed) == JOINS)
    };
    eventually("every member sees the whole crowd", storm, all_counted).await;
    // Every join is announced once, grouped or not (the last group goes
    // out within a second).
    let all_announced = || async { first.joined.load(Ordering::Relaxed) >= JOINS };
    eventually("the first member hears of every join", storm, all_announced).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    while let Some(task) = tasks.join_next().await {
        task.expect("no member failed");
    }

    assert_eq!(
        first.joined.load(Ordering::Relaxed),
        JOINS,
        "each join once"
    );
    let frames: Vec<u64> = seen
        .iter()
        .map(|s| s.frames.load(Ordering::Relaxed))
        .collect();
    let most = *frames.iter().max().unwrap();
    let mean = frames.iter().sum::<u64>() / JOINS;
    println!("frames per member during the storm: mean {mean}, most {most}");
    assert!(
        most <= JOINS / 5,
        "a member got {most} frames from a storm of {JOINS} joins (mean {mean})"
    );
}

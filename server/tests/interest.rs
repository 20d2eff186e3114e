//! Relay frames go through Redis only when another instance has a client
//! of their action, without losing one at the moment a client registers
//! elsewhere, and a frame that an instance following the action missed is
//! never lost in silence.

mod common;

use common::{Client, Endpoint, Instance, Received, Redis, Server};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn register(url: &str, action: &str) -> Client {
    let mut client = Client::connect(url).await;
    client.send_json(json!({ "action": action })).await;
    assert_eq!(client.json().await["type"], "registered");
    client
}

/// Frames published to Redis so far, on every node.
fn publishes(redis: &Redis) -> u64 {
    let infos: Vec<String> = redis.on_every_node(redis::cmd("INFO").arg("commandstats"));
    infos
        .iter()
        .flat_map(|info| info.lines())
        .filter(|line| {
            line.starts_with("cmdstat_publish:") || line.starts_with("cmdstat_spublish:")
        })
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_redis_only_while_another_instance_follows_the_action() {
    let redis = Redis::start();
    let (a, b) = Instance::pair(Some(&redis), &[]).await;
    let mut sender = register(&a.relay_url(), "solo").await;
    let mut beside = register(&a.relay_url(), "solo").await;
    let before = publishes(&redis);
    for i in 0..50 {
        sender.send_json(json!({ "alone": i })).await;
        assert_eq!(beside.json().await, json!({ "alone": i }));
    }
    let alone = publishes(&redis) - before;
    assert!(
        alone < 5,
        "{alone} publishes for 50 frames nobody else follows"
    );

    let mut far = register(&b.relay_url(), "solo").await;
    let before = publishes(&redis);
    for i in 0..50 {
        sender.send_json(json!({ "shared": i })).await;
        assert_eq!(far.json().await, json!({ "shared": i }));
        assert_eq!(beside.json().await, json!({ "shared": i }));
    }
    let shared = publishes(&redis) - before;
    assert!(shared >= 50, "{shared} publishes for 50 frames");

    // Once the far client left, nobody else follows the action again.
    far.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let before = publishes(&redis);
        sender.send_json(json!({ "probe": true })).await;
        assert_eq!(beside.json().await, json!({ "probe": true }));
        if publishes(&redis) == before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing came back to the sender: no error, no echo.
    beside.send_json(json!({ "fence": 1 })).await;
    assert_eq!(sender.json().await, json!({ "fence": 1 }));
}

/// Sends `{key: 0}`, `{key: 1}` ... every 2 ms until dropped, noting in
/// `sent` the last one sent.
fn send_forever(
    mut sender: Client,
    key: &'static str,
    sent: Arc<AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        for n in 0.. {
            tick.tick().await;
            sender.send_json(json!({ key: n })).await;
            sent.store(n, Ordering::SeqCst);
        }
    })
}

/// Reads until every sender's frame `from + 100`: of each sender, every
/// frame whose sending started after `sent` read `from` comes, in order
/// (`from + 1` may have been on its way).
async fn every_frame_after(client: &mut Client, senders: &[(&str, i64)]) {
    let mut next: Vec<Option<i64>> = vec![None; senders.len()];
    let mut done = 0;
    while done < senders.len() {
        let frame: Value = client.json().await;
        let (i, n) = senders
            .iter()
            .enumerate()
            .find_map(|(i, (key, _))| Some((i, frame[*key].as_i64()?)))
            .unwrap_or_else(|| panic!("{frame}"));
        let (key, from) = senders[i];
        match next[i] {
            Some(next) => assert_eq!(n, next, "{key}: a frame sent after `registered` is missing"),
            None => assert!(
                n <= from + 2,
                "{key}: frames {} to {} are missing",
                from + 2,
                n - 1
            ),
        }
        if n == from + 100 {
            done += 1;
        }
        next[i] = Some(n + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registering_on_another_instance_gets_every_frame_sent_after_registered() {
    let redis = Redis::start();
    let (a, b) = Instance::pair(Some(&redis), &[]).await;
    let c = Instance::configured(Some(&redis), &[]).await;
    for round in 0..8 {
        // A new action each round. Even rounds: one sender, on the first
        // instance, which then publishes only once it knows of a joiner.
        // Odd rounds: senders on two instances at once. Three joiners
        // register at once.
        let action = format!("race{round}");
        let two = round % 2 == 1;
        let (on_a, on_b) = (Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(-1)));
        let mut sending = vec![send_forever(
            register(&a.relay_url(), &action).await,
            "a",
            on_a.clone(),
        )];
        if two {
            let sender = register(&b.relay_url(), &action).await;
            sending.push(send_forever(sender, "b", on_b.clone()));
        }
        let started = |sent: &AtomicI64| sent.load(Ordering::SeqCst) >= 5;
        while !started(&on_a) || (two && !started(&on_b)) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Every fourth round all on one instance: no third one's answers
        // tell the sender's instance about them.
        let urls = match round % 4 {
            0 => [b.relay_url(), b.relay_url(), b.relay_url()],
            2 => [b.relay_url(), b.relay_url(), c.relay_url()],
            _ => [c.relay_url(), c.relay_url(), b.relay_url()],
        };
        let joiners = urls.map(|url| {
            let (action, on_a, on_b) = (action.clone(), on_a.clone(), on_b.clone());
            tokio::spawn(async move {
                let mut client = register(&url, &action).await;
                let mut senders = vec![("a", on_a.load(Ordering::SeqCst))];
                if two {
                    senders.push(("b", on_b.load(Ordering::SeqCst)));
                }
                every_frame_after(&mut client, &senders).await;
            })
        });
        for joiner in joiners {
            joiner.await.expect("every frame after `registered`");
        }
        for sender in sending {
            sender.abort();
        }
    }
}

/// Whether the frame `{"n": n}` reached `far`, or its sender was told;
/// `None` if neither happened within the wait.
async fn reached_or_told(sender: &mut Client, far: &mut Client, n: i64) -> Option<&'static str> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::select! {
            frame = far.receive_within(Duration::from_millis(20)) => match frame {
                Some(Received::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    // An earlier frame that was reported may still come.
                    if frame["n"] == n {
                        return Some("reached");
                    }
                }
                Some(other) => panic!("{other:?}"),
                None => {}
            },
            told = sender.receive_within(Duration::from_millis(20)) => match told {
                Some(Received::Text(text)) => {
                    assert!(text.contains("error"), "{text}");
                    return Some("told");
                }
                Some(other) => panic!("{other:?}"),
                None => {}
            },
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_redis_restart_every_frame_reaches_the_far_client_or_its_sender_is_told() {
    let mut redis = Redis::start();
    let (a, b) = Instance::pair(Some(&redis), &[]).await;
    let mut sender = register(&a.relay_url(), "steady").await;
    let mut far = register(&b.relay_url(), "steady").await;
    let mut told = 0;
    let mut crossed_after_restart = 0;
    for n in 0..400 {
        if n == 20 {
            redis.stop();
        }
        if n == 40 {
            redis.restart();
        }
        sender.send_json(json!({ "n": n })).await;
        match reached_or_told(&mut sender, &mut far, n).await {
            None => panic!("frame {n} was lost in silence ({told} reported before)"),
            Some("told") => told += 1,
            Some(_) if n > 40 => crossed_after_restart += 1,
            Some(_) => {}
        }
        if crossed_after_restart >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(told > 0, "the outage was never reported");
    assert!(crossed_after_restart >= 50, "frames stopped crossing");
}

#[tokio::test]
async fn an_instance_that_died_without_a_bye_is_forgotten() {
    let redis = Redis::start();
    let a = Server::start(Some(&redis), &[]);
    let mut doomed = Server::start(Some(&redis), &[]);
    let mut sender = register(&a.relay_url(), "job").await;
    let mut beside = register(&a.relay_url(), "job").await;
    let mut far = register(&doomed.relay_url(), "job").await;
    sender.send_json(json!({ "n": 0 })).await;
    assert_eq!(far.json().await, json!({ "n": 0 }));
    assert_eq!(beside.json().await, json!({ "n": 0 }));
    doomed.kill9();
    // Its absence is reported until its line in the directory of live
    // instances is stale; then the frames stop going to Redis.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut quiet = 0;
    for n in 1.. {
        assert!(tokio::time::Instant::now() < deadline, "never forgotten");
        let before = publishes(&redis);
        sender.send_json(json!({ "n": n })).await;
        assert_eq!(beside.json().await, json!({ "n": n }));
        let told = sender.receive_within(Duration::from_millis(100)).await;
        quiet = match told {
            None if publishes(&redis) == before => quiet + 1,
            None => 0,
            Some(Received::Text(text)) => {
                assert!(text.contains("not delivered everywhere"), "{text}");
                0
            }
            Some(other) => panic!("{other:?}"),
        };
        if quiet == 10 {
            break;
        }
    }
}

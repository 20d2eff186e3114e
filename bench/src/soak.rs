//! The soak test: for a long while, chat and relay clients come and go on
//! two instances (connect, join or register, talk, rename, disconnect,
//! again), and Redis is restarted twice on the way. At the end:
//!
//! - every message a client should have received, it received, once: sent
//!   while it was connected (with a margin at both ends), and, for a sender
//!   on the other instance, not while Redis was down or recovering;
//! - Redis holds no presence or relay entry once everybody has left;
//! - each server's resident memory at the end is within [`RSS_GROWTH`] of
//!   what it was once warmed up.

use crate::client::{self, Probe, Proto, Ws};
use crate::lab::Lab;
use anyhow::Context;
use app::protocol::ClientMessage;
use futures::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Clients alive at any time, per protocol.
const SLOTS: usize = 20;
/// A client must have been connected this long before a message is due to it...
const SETTLE: u64 = 1_000_000;
/// ...and stay this long after it was sent.
const IN_FLIGHT: u64 = 2_000_000;
/// After Redis comes back, the instances resubscribe and resynchronize.
const RECOVERY: u64 = 10_000_000;
/// The end-of-run resident memory may exceed the warmed-up one by this factor.
const RSS_GROWTH: f64 = 1.5;

/// One client connection, from ready to closed.
struct Session {
    id: usize,
    proto: Proto,
    instance: usize,
    ready: u64,
    closed: u64,
    received: HashSet<(usize, u64)>,
    duplicates: u64,
}

struct Sent {
    sender: usize,
    proto: Proto,
    instance: usize,
    t: u64,
    n: u64,
}

#[derive(Default)]
struct Journal {
    sessions: Vec<Session>,
    sent: Vec<Sent>,
    /// Redis down (stopped) to up again, in [`client::now_us`] time.
    outages: Vec<(u64, u64)>,
    failed_sessions: u64,
    renames: u64,
}

type Shared = Arc<Mutex<Journal>>;

pub async fn run(lab: &mut Lab, minutes: f64) -> anyhow::Result<bool> {
    let servers = lab.servers(2, "soak")?;
    let ports: Vec<[u16; 2]> = servers
        .iter()
        .map(|s| [s.http_port, s.relay_port])
        .collect();
    let topic = lab.topic("soak");
    let journal: Shared = Arc::default();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let deadline = Instant::now() + total;
    println!("soak: {minutes} min, {SLOTS} chat + {SLOTS} relay clients churning on 2 instances, Redis restarted at 1/3 and 2/3");

    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..2 * SLOTS {
        let proto = if slot % 2 == 0 {
            Proto::Chat
        } else {
            Proto::Relay
        };
        let (journal, topic, ports) = (journal.clone(), topic.clone(), ports.clone());
        slots.spawn(churn(slot, proto, ports, topic, journal, deadline));
    }

    let warm_at = Instant::now() + total / 6;
    let restarts = [Instant::now() + total / 3, Instant::now() + total * 2 / 3];
    let mut warm_rss = None;
    let mut next_report = Instant::now() + Duration::from_secs(60);
    for restart_at in restarts {
        while Instant::now() < restart_at {
            sleep(Duration::from_millis(200)).await;
            if warm_rss.is_none() && Instant::now() >= warm_at {
                warm_rss = Some(rss(&servers)?);
            }
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(60);
                progress(&journal, &servers)?;
            }
        }
        let down = client::now_us();
        lab.redis.restart(&lab.dir, Duration::from_secs(3))?;
        journal
            .lock()
            .expect("journal")
            .outages
            .push((down, client::now_us()));
        println!(
            "soak: Redis restarted (down {:.1} s)",
            (client::now_us() - down) as f64 / 1e6
        );
    }
    while slots.join_next().await.is_some() {}
    // Leaving is asynchronous (Redis clean-up after the socket closes).
    sleep(Duration::from_secs(3)).await;
    let final_rss = rss(&servers)?;
    let stale = stale_keys(lab)?;
    let warm_rss = warm_rss.context("the run was too short to warm up")?;
    drop(servers);

    let journal = journal.lock().expect("journal");
    let (missing, duplicates, due) = check(&journal);
    let received: u64 = journal
        .sessions
        .iter()
        .map(|s| s.received.len() as u64)
        .sum();
    let rss_ok = final_rss
        .iter()
        .zip(&warm_rss)
        .all(|(end, warm)| *end as f64 <= *warm as f64 * RSS_GROWTH);
    let summary = serde_json::json!({
        "minutes": minutes,
        "sessions": journal.sessions.len(),
        "failed_sessions": journal.failed_sessions,
        "renames": journal.renames,
        "messages_sent": journal.sent.len(),
        "deliveries": received,
        "deliveries_due": due,
        "missing": missing,
        "duplicated": duplicates,
        "redis_restarts": journal.outages.len(),
        "stale_redis_keys": stale,
        "rss_kib_warm": warm_rss,
        "rss_kib_end": final_rss,
        "rss_bound": format!("end <= {RSS_GROWTH} x warm"),
    });
    println!("{summary}");
    let ok = missing == 0 && duplicates == 0 && stale.is_empty() && rss_ok;
    println!("soak: {}", if ok { "passed" } else { "FAILED" });
    Ok(ok)
}

fn rss(servers: &[crate::procs::Server]) -> anyhow::Result<Vec<u64>> {
    servers.iter().map(|s| Ok(s.usage()?.rss_kib)).collect()
}

fn progress(journal: &Shared, servers: &[crate::procs::Server]) -> anyhow::Result<()> {
    let (sessions, sent) = {
        let j = journal.lock().expect("journal");
        (j.sessions.len(), j.sent.len())
    };
    println!(
        "soak: {sessions} sessions ended, {sent} messages sent, server RSS {:?} KiB",
        rss(servers)?
    );
    Ok(())
}

/// Keys that should be gone once every client left: presence, nicknames,
/// relay registrations and their instances' entries (room streams stay).
fn stale_keys(lab: &Lab) -> anyhow::Result<Vec<String>> {
    let mut redis = redis::Client::open(lab.redis.url())?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS").arg("chat:*").query(&mut redis)?;
    Ok(keys
        .into_iter()
        .filter(|k| !k.ends_with(":meta") && !k.ends_with(":events"))
        .collect())
}

/// Messages due and not received, duplicates, and how many were due.
fn check(journal: &Journal) -> (u64, u64, u64) {
    let cross_blocked = |t: u64| {
        journal
            .outages
            .iter()
            .any(|&(down, up)| t + IN_FLIGHT >= down && t <= up + RECOVERY)
    };
    let (mut missing, mut due) = (0, 0);
    for session in &journal.sessions {
        for sent in &journal.sent {
            let wanted = sent.proto == session.proto
                && (session.proto == Proto::Chat || sent.sender != session.id)
                && sent.t >= session.ready + SETTLE
                && sent.t + IN_FLIGHT <= session.closed
                && (sent.instance == session.instance || !cross_blocked(sent.t));
            if wanted {
                due += 1;
                if !session.received.contains(&(sent.sender, sent.n)) {
                    missing += 1;
                }
            }
        }
    }
    let duplicates = journal.sessions.iter().map(|s| s.duplicates).sum();
    (missing, duplicates, due)
}

/// A tiny deterministic generator: the soak needs variety, not quality.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One slot: client after client until the deadline.
async fn churn(
    slot: usize,
    proto: Proto,
    ports: Vec<[u16; 2]>,
    topic: String,
    journal: Shared,
    deadline: Instant,
) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (slot as u64 + 1));
    let mut generation = 0;
    while Instant::now() < deadline {
        let id = slot + 2 * SLOTS * generation;
        generation += 1;
        let instance = rng.below(2) as usize;
        let life = Duration::from_millis(5_000 + rng.below(35_000));
        let end = (Instant::now() + life).min(deadline);
        let port = ports[instance][usize::from(proto == Proto::Relay)];
        match session(id, proto, instance, port, &topic, end, &mut rng, &journal).await {
            Ok(record) => journal.lock().expect("journal").sessions.push(record),
            // Refused or cut (e.g. while Redis restarts): counted, not checked.
            Err(_) => journal.lock().expect("journal").failed_sessions += 1,
        }
        sleep(Duration::from_millis(rng.below(1000))).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    id: usize,
    proto: Proto,
    instance: usize,
    port: u16,
    topic: &str,
    end: Instant,
    rng: &mut XorShift,
    journal: &Shared,
) -> anyhow::Result<Session> {
    let ws: Ws = match proto {
        Proto::Relay => client::relay(port, topic).await?,
        Proto::Chat => {
            let mut ws = client::chat(port, topic).await?;
            client::send_join(&mut ws, &format!("k{id}")).await?;
            client::await_joined(&mut ws).await?;
            ws
        }
    };
    let ready = client::now_us();
    let (mut sink, mut stream) = ws.split();
    let reader = tokio::spawn(async move {
        let (mut received, mut duplicates) = (HashSet::new(), 0);
        while let Some(Ok(message)) = stream.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            if let Some(probe) = Probe::read(proto, &text) {
                if !received.insert((probe.s, probe.n)) {
                    duplicates += 1;
                }
            }
        }
        (received, duplicates)
    });
    let mut n = 0;
    let mut outcome = Ok(());
    while Instant::now() < end {
        sleep(Duration::from_millis(500 + rng.below(1000))).await;
        if proto == Proto::Chat && rng.below(10) == 0 {
            let rename = ClientMessage::Rename {
                pseudo: format!("k{id}r{n}"),
            };
            outcome = sink.send(Message::text(client::to_json(&rename))).await;
            journal.lock().expect("journal").renames += 1;
        } else {
            let t = client::now_us();
            outcome = sink
                .send(Message::text(Probe { s: id, n, t }.frame(proto)))
                .await;
            if outcome.is_ok() {
                let sent = Sent {
                    sender: id,
                    proto,
                    instance,
                    t,
                    n,
                };
                journal.lock().expect("journal").sent.push(sent);
            }
            n += 1;
        }
        if outcome.is_err() {
            break;
        }
    }
    let closed = client::now_us();
    let _ = sink.close().await;
    let (received, duplicates) = timeout(Duration::from_secs(5), reader)
        .await
        .context("the server did not close")??;
    outcome.context("the connection broke")?;
    Ok(Session {
        id,
        proto,
        instance,
        ready,
        closed,
        received,
        duplicates,
    })
}

//! Message flows (scenarios 1, 2, 3 and 5): clients spread over the
//! instances, some of them sending probes at a fixed rate or as fast as a
//! bounded in-flight window allows, all of them receiving. Every receiver
//! records each probe once; at the end, what it should have got and did
//! not is lost, what it got twice is duplicated.

use crate::client::{self, Probe, Proto, Ws};
use crate::lab::Lab;
use crate::measure::{histogram, Progress, Row, Seen};
use crate::procs::Server;
use anyhow::Context;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub enum Pacing {
    /// Messages per second, per sender.
    Rate(u32),
    /// At most this many messages per sender that some receiver still lacks.
    Window(u64),
}

pub enum Layout {
    /// Client `i` on instance `i % 2`.
    Alternate,
    /// Senders on the first instance, receivers on the second: the
    /// cross-instance path only.
    Apart,
    /// Every client on the first instance; the second runs beside it with
    /// none (what Redis costs when no other instance listens).
    First,
}

/// What serves a flow.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Two instances through the lab's Redis.
    TwoInstances,
    /// One instance on its embedded broker.
    Embedded,
    /// `minrelay`, the smallest relay (relay flows only).
    Minimal,
}

pub struct Flow {
    pub name: String,
    pub target: Target,
    pub proto: Proto,
    pub clients: usize,
    /// Clients `0..senders` send (and receive too).
    pub senders: usize,
    pub pacing: Pacing,
    pub duration: Duration,
    pub layout: Layout,
    /// Extra settings of the instances.
    pub env: Vec<(String, String)>,
}

/// Clients opening at once while a flow sets up.
const CONNECT_CONCURRENCY: usize = 64;
/// How long the end of a run waits for deliveries that stopped coming.
const DRAIN_IDLE: Duration = Duration::from_secs(3);

impl Flow {
    fn instance(&self, client: usize) -> usize {
        if self.target != Target::TwoInstances {
            return 0;
        }
        match self.layout {
            Layout::Alternate => client % 2,
            Layout::Apart => usize::from(client >= self.senders),
            Layout::First => 0,
        }
    }

    /// Whether `receiver` should get `sender`'s probes: the relay never
    /// echoes a frame to its sender, the chat does.
    fn expects(&self, receiver: usize, sender: usize) -> bool {
        self.proto == Proto::Chat || receiver != sender
    }

    pub async fn run(&self, lab: &Lab) -> anyhow::Result<Row> {
        let servers = match self.target {
            Target::TwoInstances => lab.servers_with(2, &self.name, &self.env)?,
            Target::Embedded => lab.embedded_with(&self.name, &self.env)?,
            Target::Minimal => vec![Server::minimal(&lab.dir)?],
        };
        let topic = lab.topic(&self.name);
        let port = |i: usize| match self.proto {
            Proto::Relay => servers[self.instance(i)].relay_port,
            Proto::Chat => servers[self.instance(i)].http_port,
        };
        let sockets: Vec<Ws> = futures::stream::iter(0..self.clients)
            .map(|i| {
                let topic = topic.clone();
                let port = port(i);
                async move {
                    match self.proto {
                        Proto::Relay => client::relay(port, &topic).await,
                        Proto::Chat => {
                            let mut ws = client::chat(port, &topic).await?;
                            client::send_join(&mut ws, &format!("p{i}")).await?;
                            client::await_joined(&mut ws).await?;
                            Ok(ws)
                        }
                    }
                }
            })
            .buffered(CONNECT_CONCURRENCY)
            .try_collect()
            .await
            .with_context(|| format!("{}: cannot connect the clients", self.name))?;

        let progress = Arc::new(Progress::new(self.clients, self.senders));
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..self.clients).map(|_| AtomicU64::new(0)).collect());
        let stop = CancellationToken::new();
        let mut sinks = Vec::new();
        let mut readers = Vec::new();
        for (i, ws) in sockets.into_iter().enumerate() {
            let (sink, stream) = ws.split();
            sinks.push(sink);
            readers.push(tokio::spawn(receive(Receiver {
                index: i,
                proto: self.proto,
                senders: self.senders,
                progress: progress.clone(),
                counts: counts.clone(),
                stop: stop.clone(),
                stream,
            })));
        }
        self.settle(&counts).await;

        let before = lab.usage(&servers)?;
        let started = client::now_us();
        let senders: Vec<_> = sinks
            .drain(..self.senders)
            .enumerate()
            .map(|(j, sink)| tokio::spawn(self.sender(j, sink, progress.clone())))
            .collect();
        let mut sent = Vec::new();
        for sender in senders {
            sent.push(sender.await??);
        }
        let expected: u64 = (0..self.clients)
            .flat_map(|r| (0..self.senders).filter(move |&s| self.expects(r, s)))
            .map(|s| sent[s])
            .sum();
        drain(&progress, expected).await;
        let after = lab.usage(&servers)?;
        stop.cancel();

        let mut latency = histogram();
        let (mut distinct, mut duplicates, mut last_delivery) = (0, 0, 0);
        let (mut refused, mut refusal) = (0, None);
        for reader in readers {
            let seen = reader.await?;
            refused += seen.refused;
            refusal = refusal.or(seen.refusal);
            distinct += seen.distinct;
            duplicates += seen.duplicates;
            last_delivery = last_delivery.max(seen.last);
            latency.add(&seen.latency)?;
        }
        let seconds = last_delivery.saturating_sub(started) as f64 / 1e6;
        let mut row = Row {
            scenario: self.name.clone(),
            deliveries: distinct,
            seconds,
            deliveries_per_sec: distinct as f64 / seconds.max(1e-9),
            lost: expected.saturating_sub(distinct),
            sent: sent.iter().sum(),
            duplicated: duplicates,
            note: format!(
                "{} {} clients, {} sender(s), {} messages",
                self.clients,
                self.proto.name(),
                self.senders,
                sent.iter().sum::<u64>()
            ),
            ..Row::default()
        };
        if let Some(last) = refusal {
            row.note
                .push_str(&format!("; {refused} error frame(s), the last: {last}"));
        }
        row.latency(&latency);
        lab.spent(&mut row, before, after);
        Ok(row)
    }

    /// Waits until every chat client counts every participant, so that the
    /// join announcements are over before measuring; relay clients only
    /// need their subscriptions to be in place.
    async fn settle(&self, counts: &[AtomicU64]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.proto == Proto::Chat
            && Instant::now() < deadline
            && counts
                .iter()
                .any(|c| c.load(Ordering::Relaxed) != self.clients as u64)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    fn sender(
        &self,
        index: usize,
        mut sink: SplitSink<Ws, Message>,
        progress: Arc<Progress>,
    ) -> impl std::future::Future<Output = anyhow::Result<u64>> + Send + 'static {
        let proto = self.proto;
        let duration = self.duration;
        let clients = self.clients;
        let (period, window) = match self.pacing {
            Pacing::Rate(per_sec) => (Some(Duration::from_secs(1) / per_sec), u64::MAX),
            Pacing::Window(window) => (None, window),
        };
        let receivers: Vec<usize> = (0..clients).filter(|&r| self.expects(r, index)).collect();
        async move {
            let start = tokio::time::Instant::now();
            let mut n = 0u64;
            while start.elapsed() < duration {
                if let Some(period) = period {
                    tokio::time::sleep_until(start + period * n as u32).await;
                }
                // The slowest receiver bounds what is in flight.
                while n - receivers
                    .iter()
                    .map(|&r| progress.get(r, index))
                    .min()
                    .unwrap_or(n)
                    >= window
                {
                    if start.elapsed() >= duration {
                        return Ok(n);
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let probe = Probe {
                    s: index,
                    n,
                    t: client::now_us(),
                };
                sink.send(Message::text(probe.frame(proto))).await?;
                n += 1;
            }
            Ok(n)
        }
    }
}

/// Waits until every expected probe arrived, or deliveries stopped.
async fn drain(progress: &Progress, expected: u64) {
    let mut last = (progress.total(), Instant::now());
    while last.0 < expected && last.1.elapsed() < DRAIN_IDLE {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = progress.total();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

struct Receiver {
    index: usize,
    proto: Proto,
    senders: usize,
    progress: Arc<Progress>,
    counts: Arc<Vec<AtomicU64>>,
    stop: CancellationToken,
    stream: SplitStream<Ws>,
}

async fn receive(mut r: Receiver) -> Seen {
    let mut seen = Seen::new(r.senders);
    loop {
        let message = tokio::select! {
            biased;
            message = r.stream.next() => message,
            _ = r.stop.cancelled() => break,
        };
        let Some(Ok(message)) = message else { break };
        let Message::Text(text) = message else {
            continue;
        };
        if let Some(probe) = Probe::read(r.proto, &text) {
            let now = client::now_us();
            if seen.record(probe.s, probe.n, now.saturating_sub(probe.t)) {
                r.progress.bump(r.index, probe.s);
                seen.last = seen.last.max(now);
            }
        } else if let Some(count) = client::count_of(&text) {
            r.counts[r.index].store(count, Ordering::Relaxed);
        } else if text.starts_with("{\"type\":\"error\"") {
            // A refused send: lost by every receiver, and this says why.
            seen.refused += 1;
            seen.refusal = Some(text.as_str().to_owned());
        }
    }
    seen
}

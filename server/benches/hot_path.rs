//! The per-message hot path of the chat, step by step and whole: decode the
//! client's frame, validate the text, encode the server event once, queue
//! the same bytes for N local connections (each queue then drained, as the
//! connection's writer would).
//!
//!     cargo bench -p server --bench hot_path

use app::protocol::{ChatMessage, ClientMessage, MessageText, ServerEvent};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use server::fanout::{Hub, Kind, Peer, Queue, Topic};
use std::hint::black_box;
use uuid::Uuid;

const FRAME: &str =
    r#"{"type":"say","text":"hello everyone, this is a chat message of ordinary size"}"#;

fn event(text: String) -> ServerEvent {
    ServerEvent::Message(ChatMessage {
        epoch: String::new(),
        offset: 0,
        id: Uuid::new_v4(),
        author: "alice".into(),
        author_id: "anon-0123456789abcdef".into(),
        text,
        ts: 1_700_000_000_000,
        deleted: false,
        edited: false,
        server: false,
    })
}

/// Decodes and validates a frame, and encodes the event it becomes.
fn handle(frame: &str) -> axum::extract::ws::Utf8Bytes {
    let Ok(ClientMessage::Say { text, .. }) = ClientMessage::decode(frame) else {
        panic!("the benchmark frame is a valid say");
    };
    let text = MessageText::parse(&text).expect("valid text");
    server::chat::encode(&event(text.into_string()))
}

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("steps");
    group.bench_function("decode", |b| {
        b.iter(|| ClientMessage::decode(black_box(FRAME)))
    });
    let text = "hello everyone, this is a chat message of ordinary size";
    group.bench_function("validate", |b| {
        b.iter(|| MessageText::parse(black_box(text)))
    });
    let message = event(text.into());
    group.bench_function("encode", |b| {
        b.iter(|| server::chat::encode(black_box(&message)))
    });
    group.finish();
}

/// A hub with `n` connections on one room, and their queues.
fn room(n: usize) -> (Hub, Topic, Vec<Queue>) {
    let hub = Hub::default();
    let topic = Topic::Room("bench".into());
    let queues = (0..n)
        .map(|_| {
            let (peer, queue) = Peer::new(Kind::Chat, 256);
            hub.insert(&topic, Uuid::new_v4(), peer);
            queue
        })
        .collect();
    (hub, topic, queues)
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("say_to_n_connections");
    for n in [1, 100, 1000] {
        let (hub, topic, mut queues) = room(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let frame = handle(black_box(FRAME));
                hub.deliver(&topic, &frame, None);
                for queue in &mut queues {
                    black_box(queue.try_recv());
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, steps, fan_out);
criterion_main!(benches);

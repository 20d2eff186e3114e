//! Prometheus metrics through the `metrics` facade and its Prometheus
//! exporter (the ecosystem's standard pair): call sites stay one line, the
//! exporter owns the text format. Names are documented in docs/operations.md.

use crate::kind::Kind;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Installs the process-wide recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(DELIVERY_LATENCY.into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ],
                )
                // Only the bucket list above can be wrong, and it is constant.
                .expect("valid histogram buckets")
                .install_recorder()
                // Fails only if another recorder is installed, which this OnceLock prevents.
                .expect("one metrics recorder per process")
        })
        .clone()
}

const DELIVERY_LATENCY: &str = "bus_delivery_latency_seconds";

pub fn connection_opened(kind: Kind) {
    counter!("ws_connections_opened_total", "kind" => kind.as_str()).increment(1);
    gauge!("ws_connections", "kind" => kind.as_str()).increment(1.0);
}

pub fn connection_closed(kind: Kind) {
    gauge!("ws_connections", "kind" => kind.as_str()).decrement(1.0);
}

pub fn received(kind: Kind, bytes: usize) {
    counter!("messages_in_total", "kind" => kind.as_str()).increment(1);
    counter!("bytes_in_total", "kind" => kind.as_str()).increment(bytes as u64);
}

pub fn delivered(kind: Kind, frames: usize, bytes_each: usize) {
    if frames == 0 {
        return;
    }
    counter!("messages_out_total", "kind" => kind.as_str()).increment(frames as u64);
    counter!("bytes_out_total", "kind" => kind.as_str()).increment((frames * bytes_each) as u64);
}

pub fn slow_consumer(kind: Kind) {
    counter!("slow_consumers_total", "kind" => kind.as_str()).increment(1);
}

/// A WebSocket upgrade refused before it happened (origin, limits, draining).
pub fn rejected(kind: Kind, reason: &'static str) {
    counter!("ws_rejected_total", "kind" => kind.as_str(), "reason" => reason).increment(1);
}

/// A TCP connection refused as it was accepted (connection limits).
pub fn connection_refused(port: &'static str, reason: &'static str) {
    counter!("connections_refused_total", "port" => port, "reason" => reason).increment(1);
}

/// A refused frame or a failed operation, by kind and a stable error name.
pub fn error(kind: &'static str, error: &'static str) {
    counter!("errors_total", "kind" => kind, "error" => error).increment(1);
}

pub fn redis_up(up: bool) {
    gauge!("redis_up").set(if up { 1.0 } else { 0.0 });
}

pub fn task_restarted(task: &'static str) {
    counter!("task_restarts_total", "task" => task).increment(1);
}

pub fn redis_reconnected() {
    counter!("redis_reconnects_total").increment(1);
}

/// Time from the publish on one instance to the delivery on another.
pub fn delivery_latency(latency: Duration) {
    histogram!(DELIVERY_LATENCY).record(latency.as_secs_f64());
}

/// A webhook POST (`what`: event or gap) and how it ended.
pub fn webhook_sent(what: &'static str, result: &'static str, took: Duration) {
    counter!("webhook_requests_total", "what" => what, "result" => result).increment(1);
    histogram!("webhook_request_seconds").record(took.as_secs_f64());
}

/// What the rooms this instance delivers still owe the backend.
pub fn webhook_backlog(events: u64, oldest: Duration) {
    gauge!("webhook_backlog_events").set(events as f64);
    gauge!("webhook_oldest_undelivered_seconds").set(oldest.as_secs_f64());
}

/// Rooms with events the webhook may not have had, across instances.
pub fn webhook_rooms_marked(rooms: usize) {
    gauge!("webhook_rooms_pending").set(rooms as f64);
}

/// Rooms whose stream the embedded broker holds in memory.
pub fn rooms_stored(rooms: usize) {
    gauge!("broker_rooms_stored").set(rooms as f64);
}

/// Entries of a bounded per-client or per-name table (`table`: which one),
/// after its last sweep.
pub fn table_size(table: &'static str, entries: usize) {
    gauge!("bounded_table_entries", "table" => table).set(entries as f64);
}

/// A batch of appends and changes written to the data file in one commit.
pub fn rooms_committed(jobs: usize, took: Duration) {
    counter!("rooms_commits_total").increment(1);
    counter!("rooms_committed_total").increment(jobs as u64);
    histogram!("rooms_commit_seconds").record(took.as_secs_f64());
}

/// Events a retention pass removed (past HISTORY_MAX_AGE or beyond
/// HISTORY_MAX_EVENTS).
pub fn history_trimmed(events: u64) {
    counter!("history_trimmed_events_total").increment(events);
}

/// The allocator's heap: bytes in use (mapped blocks included) and free.
pub fn heap(in_use: usize, free: usize) {
    gauge!("heap_bytes", "state" => "in_use").set(in_use as f64);
    gauge!("heap_bytes", "state" => "free").set(free as f64);
}

/// The rooms' data file's size on disk.
pub fn rooms_file_bytes(bytes: u64) {
    gauge!("rooms_file_bytes").set(bytes as f64);
}

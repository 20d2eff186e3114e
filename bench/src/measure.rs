//! What receivers record (each probe once, duplicates, latency) and the
//! report: one table for people and one JSON line per scenario.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latencies are recorded in microseconds, up to a minute, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One receiver's record of the probes it got.
pub struct Seen {
    /// Per sender, a bit per sequence number.
    bits: Vec<Vec<u64>>,
    pub distinct: u64,
    pub duplicates: u64,
    pub latency: Histogram<u64>,
    /// Error frames: the server refused a send (or said why it could not
    /// deliver it), and the last one.
    pub refused: u64,
    pub refusal: Option<String>,
    /// When the last new probe arrived, from [`crate::client::now_us`]
    /// (kept per receiver: one shared atomic would cost every delivery a
    /// contended cache line).
    pub last: u64,
}

impl Seen {
    pub fn new(senders: usize) -> Seen {
        Seen {
            bits: vec![Vec::new(); senders],
            distinct: 0,
            duplicates: 0,
            latency: histogram(),
            refused: 0,
            refusal: None,
            last: 0,
        }
    }

    /// Records a probe; true if it is the first copy.
    pub fn record(&mut self, sender: usize, seq: u64, latency_us: u64) -> bool {
        let Some(bits) = self.bits.get_mut(sender) else {
            return false;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return false;
        }
        bits[word] |= 1 << bit;
        self.distinct += 1;
        self.latency.saturating_record(latency_us.max(1));
        true
    }
}

/// Probes received so far, per receiver and sender: the senders' in-flight
/// window and the end-of-run drain read it while receivers write it.
pub struct Progress {
    senders: usize,
    counts: Vec<AtomicU64>,
}

impl Progress {
    pub fn new(receivers: usize, senders: usize) -> Progress {
        Progress {
            senders,
            counts: (0..receivers * senders)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub fn bump(&self, receiver: usize, sender: usize) {
        self.counts[receiver * self.senders + sender].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, receiver: usize, sender: usize) -> u64 {
        self.counts[receiver * self.senders + sender].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// One scenario's figures.
#[derive(Serialize, Default, Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub deliveries: u64,
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub lost: u64,
    pub duplicated: u64,
    /// CPU time of both server processes during the scenario.
    pub server_cpu_s: f64,
    /// The same, per delivery (or per join, in the storms).
    pub server_cpu_us_per_delivery: f64,
    pub redis_cpu_s: f64,
    /// CPU time of the load generator (all the clients) during the scenario.
    pub client_cpu_s: f64,
    /// Resident memory of the server processes at the end.
    pub server_rss_mib: f64,
    /// Scenario 4 only: resident memory added per idle connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_connection_kib: Option<f64>,
    pub note: String,
    /// Messages the senders sent (not reported: the deliveries are).
    #[serde(skip)]
    pub sent: u64,
}

impl Row {
    pub fn latency(&mut self, latency: &Histogram<u64>) {
        let ms = |us: u64| us as f64 / 1000.0;
        if latency.is_empty() {
            return;
        }
        self.p50_ms = ms(latency.value_at_quantile(0.50));
        self.p90_ms = ms(latency.value_at_quantile(0.90));
        self.p99_ms = ms(latency.value_at_quantile(0.99));
        self.max_ms = ms(latency.max());
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "\n| scenario | deliveries/s | p50 ms | p90 ms | p99 ms | max ms | lost | dup | server CPU s | server CPU us per delivery | Redis CPU s | clients CPU s | server RSS MiB | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
            r.scenario,
            r.deliveries_per_sec,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.lost,
            r.duplicated,
            r.server_cpu_s,
            r.server_cpu_us_per_delivery,
            r.redis_cpu_s,
            r.client_cpu_s,
            r.server_rss_mib,
            r.note
        );
    }
}

/// With `--before`: each scenario's figures before and after, side by
/// side (the rows named `… [before]` and `… [after]`).
pub fn print_changes(rows: &[Row]) {
    println!(
        "\n| scenario | deliveries/s before → after | p99 ms | server CPU us per delivery | KiB per connection | server RSS MiB |"
    );
    println!("|---|---|---|---|---|---|");
    for after in rows {
        let Some(name) = after.scenario.strip_suffix(" [after]") else {
            continue;
        };
        let wanted = format!("{name} [before]");
        let Some(before) = rows.iter().find(|r| r.scenario == wanted) else {
            continue;
        };
        let change = |b: f64, a: f64, digits: usize| {
            let ratio = if b > 0.0 {
                format!(" ({:+.0}%)", (a / b - 1.0) * 100.0)
            } else {
                String::new()
            };
            format!("{b:.digits$} → {a:.digits$}{ratio}")
        };
        let per_connection = match (before.rss_per_connection_kib, after.rss_per_connection_kib) {
            (Some(b), Some(a)) => change(b, a, 2),
            _ => String::new(),
        };
        println!(
            "| {name} | {} | {} | {} | {per_connection} | {} |",
            change(before.deliveries_per_sec, after.deliveries_per_sec, 0),
            change(before.p99_ms, after.p99_ms, 1),
            change(
                before.server_cpu_us_per_delivery,
                after.server_cpu_us_per_delivery,
                2
            ),
            change(before.server_rss_mib, after.server_rss_mib, 1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_each_probe_once() {
        let mut seen = Seen::new(2);
        assert!(seen.record(1, 0, 10));
        assert!(seen.record(1, 200, 10));
        assert!(!seen.record(1, 200, 10));
        assert!(!seen.record(5, 0, 10), "unknown sender");
        assert_eq!((seen.distinct, seen.duplicates), (2, 1));
    }
}

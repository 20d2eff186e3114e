//! Load generator for the chat and relay server. Starts a private
//! redis-server and server instances, drives real WebSocket clients through
//! fourteen scenarios (the seventh and eleventh through a three-master Redis
//! Cluster, the ninth also through `minrelay`, the thirteenth on the
//! embedded default's data file), stops everything and prints
//! one table (Markdown) and one JSON line per scenario. Figures come from the receivers (latency from the
//! send time carried in each message, loss, duplicates) and from /proc for
//! the server and Redis processes (CPU seconds, resident memory).
//!
//!     scripts/bench.sh                          # release build, all scenarios
//!     scripts/bench.sh --quick                  # tiny loads: checks that it works
//!     scripts/bench.sh --only 4,9 --before OLD  # each scenario on OLD, then on this build

mod client;
mod flow;
mod hooks;
mod idle;
mod lab;
mod measure;
mod procs;
mod recovery;
mod scenarios;
mod soak;
mod spread;
mod stored;
mod storm;

use anyhow::Context;
use clap::Parser;
use lab::Lab;
use measure::Row;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Benchmark the chat and relay server through Redis with real WebSocket clients")]
struct Args {
    /// Server binary [default: `server` next to this program]
    #[arg(long)]
    server: Option<PathBuf>,
    /// An older server binary: each scenario runs on it, then on the
    /// server, and the table shows both rows and the change.
    #[arg(long, value_name = "BINARY")]
    before: Option<PathBuf>,
    /// Tiny loads, to check that every scenario works (the test suite runs this).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, e.g. `--only 1,4` [default: all]
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Seconds each message-flow scenario sends for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Instead of the scenarios: the soak test, for this many minutes
    /// (churning clients, Redis restarted twice); exits 1 if it fails.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
}

/// In-flight messages per sender in the throughput scenarios. Ten senders
/// fill at most 10 x 32 of a receiver's outbound queue (1024 by default).
pub const WINDOW: u64 = 32;

/// The sizes of the full run, or of `--quick`.
pub struct Sizes {
    pub fanout_clients: usize,
    pub throughput_clients: usize,
    pub throughput_senders: usize,
    pub idle: usize,
    pub storm: usize,
    pub big_room: usize,
    /// Scenario 13: events in the stored room, and pages read back.
    pub stored: (u64, usize),
    pub duration: Duration,
}

impl Sizes {
    fn of(args: &Args) -> Sizes {
        if args.quick {
            Sizes {
                fanout_clients: 20,
                throughput_clients: 10,
                throughput_senders: 2,
                idle: 200,
                storm: 20,
                big_room: 60,
                stored: (5_000, 50),
                duration: Duration::from_secs(1),
            }
        } else {
            Sizes {
                fanout_clients: 1000,
                throughput_clients: 100,
                throughput_senders: 10,
                // 20,000 wanted; this machine holds at most 20,000 open files per
                // process, and the load generator needs a few besides its sockets.
                idle: 19_500,
                storm: 1000,
                big_room: 5000,
                stored: (1_000_000, 2_000),
                duration: Duration::from_secs(args.seconds),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("server"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "no server binary at {}: build it first (scripts/bench.sh does) or pass --server",
        bin.display()
    );
    let dir = std::env::temp_dir().join(format!("chat-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("{}", machine());
    println!("server: {}; logs: {}", bin.display(), dir.display());
    if let Some(minutes) = args.soak {
        let mut lab = Lab::start(bin.clone(), dir.clone())?;
        let passed = soak::run(&mut lab, minutes).await?;
        drop(lab);
        if passed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::process::exit(if passed { 0 } else { 1 });
    }
    let sizes = Sizes::of(&args);
    // With --before: each scenario runs on the old binary, then on this
    // one, so that both see the machine as it is at that moment.
    let mut binaries = vec![(String::new(), bin.clone())];
    if let Some(before) = &args.before {
        anyhow::ensure!(before.is_file(), "no server binary at {}", before.display());
        println!("before: {}", before.display());
        binaries = vec![("before".into(), before.clone()), ("after".into(), bin)];
    }
    let mut rows: Vec<Row> = Vec::new();
    for scenario in scenarios::ALL {
        if !(args.only.is_empty() || args.only.contains(&scenario)) {
            continue;
        }
        for (label, bin) in &binaries {
            rows.extend(scenarios::run(scenario, &sizes, args.quick, bin, &dir, label).await?);
        }
    }
    measure::print_table(&rows);
    if args.before.is_some() {
        measure::print_changes(&rows);
    }
    // Logs are kept only when something went wrong (the `?`s above).
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The machine the figures come from.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!(
        "machine: {cores} cores ({model}), {mem_gib:.0} GiB; servers, Redis and this load generator share them"
    )
}

//! Load generator for the chat and relay server. Starts a private
//! redis-server and server instances, drives real WebSocket clients through
//! thirteen scenarios (the seventh and eleventh through a three-master Redis
//! Cluster, the ninth also through `minrelay`, the thirteenth on the
//! embedded default's data file), stops everything and prints
//! one table (Markdown) and one JSON line per scenario. Figures come from the receivers (latency from the
//! send time carried in each message, loss, duplicates) and from /proc for
//! the server and Redis processes (CPU seconds, resident memory).
//!
//!     scripts/bench.sh             # release build, all scenarios
//!     scripts/bench.sh --quick     # tiny loads: checks that it works

mod client;
mod flow;
mod hooks;
mod idle;
mod lab;
mod measure;
mod procs;
mod recovery;
mod soak;
mod spread;
mod stored;
mod storm;

use anyhow::Context;
use clap::Parser;
use client::Proto;
use flow::{Flow, Layout, Pacing, Target};
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
const WINDOW: u64 = 32;

/// The sizes of the full run, or of `--quick`.
struct Sizes {
    fanout_clients: usize,
    throughput_clients: usize,
    throughput_senders: usize,
    idle: usize,
    storm: usize,
    big_room: usize,
    /// Scenario 13: events in the stored room, and pages read back.
    stored: (u64, usize),
    duration: Duration,
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
    let mut lab = Lab::start(bin.clone(), dir.clone())?;
    if let Some(minutes) = args.soak {
        let passed = soak::run(&mut lab, minutes).await?;
        drop(lab);
        if passed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::process::exit(if passed { 0 } else { 1 });
    }
    let sizes = Sizes::of(&args);
    let wanted = |n: u8| args.only.is_empty() || args.only.contains(&n);

    let mut rows: Vec<Row> = Vec::new();
    let mut report = |mut row: Row| {
        if row.deliveries > 0 {
            row.server_cpu_us_per_delivery = row.server_cpu_s * 1e6 / row.deliveries as f64;
        }
        println!("{}", serde_json::to_string(&row).expect("rows serialize"));
        rows.push(row);
    };
    let flow = |name: &str, proto, clients, senders, pacing, layout| Flow {
        name: name.to_owned(),
        target: Target::TwoInstances,
        proto,
        clients,
        senders,
        pacing,
        duration: sizes.duration,
        layout,
        env: Vec::new(),
    };
    let (fan, thr, senders) = (
        sizes.fanout_clients,
        sizes.throughput_clients,
        sizes.throughput_senders,
    );
    // Every sender as fast as its in-flight window allows.
    let throughput = |name: &str, proto, target| Flow {
        target,
        ..flow(
            name,
            proto,
            thr,
            senders,
            Pacing::Window(WINDOW),
            Layout::Alternate,
        )
    };
    if wanted(1) {
        let f = flow(
            "1 relay fan-out",
            Proto::Relay,
            fan,
            1,
            Pacing::Rate(200),
            Layout::Alternate,
        );
        report(f.run(&lab).await?);
    }
    if wanted(2) {
        let f = throughput("2 relay throughput", Proto::Relay, Target::TwoInstances);
        report(f.run(&lab).await?);
    }
    if wanted(3) {
        let f = flow(
            "3a chat fan-out",
            Proto::Chat,
            fan,
            1,
            Pacing::Rate(200),
            Layout::Alternate,
        );
        report(f.run(&lab).await?);
        let f = throughput("3b chat throughput", Proto::Chat, Target::TwoInstances);
        report(f.run(&lab).await?);
    }
    if wanted(4) {
        let (name, idle) = ("4a idle relay connections", sizes.idle);
        report(idle::run(&lab, name, Proto::Relay, idle).await?);
        let (name, idle) = ("4b idle chat members", sizes.idle);
        report(idle::run(&lab, name, Proto::Chat, idle).await?);
    }
    if wanted(5) {
        let f = flow(
            "5 cross-instance latency",
            Proto::Relay,
            2,
            1,
            Pacing::Rate(100),
            Layout::Apart,
        );
        report(f.run(&lab).await?);
    }
    if wanted(6) {
        let name = "6 join storm";
        report(storm::run(&lab, name, lab.servers(2, name)?, sizes.storm, 0).await?);
    }
    if wanted(8) {
        let name = "8 big room, embedded";
        report(storm::run(&lab, name, lab.embedded(name)?, sizes.big_room, 0).await?);
        let name = "8b big room with 100 messages of history, embedded";
        let servers = lab.embedded(name)?;
        report(storm::run(&lab, name, servers, sizes.big_room, 100).await?);
    }
    if wanted(9) {
        // The relay's share of what the machine allows: the same load
        // through one embedded instance, then through `minrelay`.
        let server = throughput(
            "9a relay throughput, one embedded instance",
            Proto::Relay,
            Target::Embedded,
        );
        let mut server = server.run(&lab).await?;
        let with_redis = Flow {
            layout: Layout::First,
            ..throughput(
                "9c relay throughput, two instances on Redis, every client on one",
                Proto::Relay,
                Target::TwoInstances,
            )
        };
        let mut with_redis = with_redis.run(&lab).await?;
        let minimal = throughput(
            "9b minimal relay (bench/src/bin/minrelay.rs)",
            Proto::Relay,
            Target::Minimal,
        );
        let minimal = minimal.run(&lab).await?;
        for row in [&mut server, &mut with_redis] {
            let share = row.deliveries_per_sec / minimal.deliveries_per_sec.max(1.0);
            row.note
                .push_str(&format!("; {:.0}% of the minimal relay", share * 100.0));
        }
        report(server);
        report(with_redis);
        report(minimal);
    }
    if wanted(10) {
        report(recovery::run(&mut lab, "10 recovery after Redis restarts").await?);
    }
    if wanted(12) {
        let hooks = hooks::Hooks::start()?;
        let f = Flow {
            env: hooks.env(),
            ..flow(
                "12a chat fan-out (3a) with webhooks",
                Proto::Chat,
                fan,
                1,
                Pacing::Rate(200),
                Layout::Alternate,
            )
        };
        report(hooks::with_webhooks(&hooks, f.run(&lab).await?).await);
        let name = "12b API publish, webhooks on";
        report(hooks::publish(&lab, name, &hooks, sizes.duration).await?);
    }
    if wanted(13) {
        // The chat's closed loop on one embedded instance: rooms in memory,
        // then on the data file (each message acknowledged once on disk).
        let memory = throughput(
            "13a chat throughput, embedded, rooms in memory",
            Proto::Chat,
            Target::Embedded,
        );
        let memory = memory.run(&lab).await?;
        let data = lab.dir.join("durable");
        let durable = Flow {
            env: vec![("DATA_DIR".into(), data.display().to_string())],
            ..throughput(
                "13a chat throughput, embedded, rooms on disk",
                Proto::Chat,
                Target::Embedded,
            )
        };
        let mut durable = durable.run(&lab).await?;
        let share = durable.deliveries_per_sec / memory.deliveries_per_sec.max(1.0);
        durable
            .note
            .push_str(&format!("; {:.0}% of in memory", share * 100.0));
        report(memory);
        report(durable);
        let (events, pages) = sizes.stored;
        report(stored::run(&lab, "13b a room of stored events", events, pages).await?);
        report(stored::redis_memory(&lab, "13c Redis memory per 1,000 events").await?);
    }
    if wanted(14) {
        // Scenarios 1, 3a and 3b again with writes coalesced over 10 ms:
        // CPU per delivery against latency, beside the rows above.
        let coalesced = |flow: Flow| Flow {
            env: vec![("WRITE_COALESCE_MS".into(), "10".into())],
            ..flow
        };
        let fanout = |name, proto| flow(name, proto, fan, 1, Pacing::Rate(200), Layout::Alternate);
        let closed_loop = throughput(
            "14c chat throughput (3b), coalesced",
            Proto::Chat,
            Target::TwoInstances,
        );
        for f in [
            fanout(
                "14a relay fan-out (1), writes coalesced over 10 ms",
                Proto::Relay,
            ),
            fanout("14b chat fan-out (3a), coalesced", Proto::Chat),
            closed_loop,
        ] {
            report(coalesced(f).run(&lab).await?);
        }
    }
    drop(lab);
    if wanted(7) {
        let cluster = Lab::start_cluster(bin.clone(), dir.join("cluster"))?;
        let f = throughput(
            "7a relay throughput, cluster",
            Proto::Relay,
            Target::TwoInstances,
        );
        report(f.run(&cluster).await?);
        let f = throughput(
            "7b chat throughput, cluster",
            Proto::Chat,
            Target::TwoInstances,
        );
        report(f.run(&cluster).await?);
    }
    if wanted(11) {
        let cluster = Lab::start_cluster(bin.clone(), dir.join("spread"))?;
        let name = "11 cluster spread";
        report(spread::run(&cluster, name, spread::rooms(args.quick)).await?);
    }
    measure::print_table(&rows);
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

//! The scenarios, one at a time: each runs in a lab of its own (Redis,
//! the servers it starts) against one server binary.

use crate::client::Proto;
use crate::flow::{Flow, Layout, Pacing, Target};
use crate::lab::Lab;
use crate::measure::Row;
use crate::{hooks, idle, recovery, spread, stored, storm, Sizes, WINDOW};
use std::path::Path;

/// Every scenario, in the order they run (the cluster ones last).
pub const ALL: [u8; 14] = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 13, 14, 7, 11];

/// Runs `scenario` against `bin`; each row's name gets `[label]` when the
/// label is not empty (a run that compares binaries).
pub async fn run(
    scenario: u8,
    sizes: &Sizes,
    quick: bool,
    bin: &Path,
    dir: &Path,
    label: &str,
) -> anyhow::Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    let mut report = |mut row: Row| {
        if row.deliveries > 0 {
            row.server_cpu_us_per_delivery = row.server_cpu_s * 1e6 / row.deliveries as f64;
        }
        if !label.is_empty() {
            row.scenario = format!("{} [{label}]", row.scenario);
        }
        println!("{}", serde_json::to_string(&row).expect("rows serialize"));
        rows.push(row);
    };
    let wanted = |n: u8| n == scenario;
    // The cluster scenarios start a cluster of their own.
    let mut lab = match scenario {
        7 | 11 => Lab::start_cluster(bin.to_owned(), dir.join(format!("cluster{scenario}")))?,
        _ => Lab::start(bin.to_owned(), dir.to_owned())?,
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
    if wanted(7) {
        let cluster = &lab;
        let f = throughput(
            "7a relay throughput, cluster",
            Proto::Relay,
            Target::TwoInstances,
        );
        report(f.run(cluster).await?);
        let f = throughput(
            "7b chat throughput, cluster",
            Proto::Chat,
            Target::TwoInstances,
        );
        report(f.run(cluster).await?);
    }
    if wanted(11) {
        let name = "11 cluster spread";
        report(spread::run(&lab, name, spread::rooms(quick)).await?);
    }
    drop(lab);
    Ok(rows)
}

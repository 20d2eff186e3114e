//! The setting every scenario runs in: one private Redis (or Redis Cluster)
//! for the whole run,
//! fresh server instances per scenario (so each starts from the same
//! memory), unique room and action names, and the resources spent.

use crate::measure::Row;
use crate::procs::{Redis, Server, Usage};
use std::path::PathBuf;
use std::time::Duration;

pub struct Lab {
    pub bin: PathBuf,
    /// Logs and Redis's working directory.
    pub dir: PathBuf,
    pub redis: Redis,
}

/// Resources at one moment: both servers' CPU time and memory, Redis's CPU.
#[derive(Clone, Copy)]
pub struct Spent {
    servers: Usage,
    redis_cpu: Duration,
    /// This load generator's own CPU time: the clients share the cores.
    clients_cpu: Duration,
}

impl Spent {
    pub fn rss_kib(&self) -> u64 {
        self.servers.rss_kib
    }
}

impl Lab {
    pub fn start(bin: PathBuf, dir: PathBuf) -> anyhow::Result<Lab> {
        let redis = Redis::start(&dir)?;
        Ok(Lab { bin, dir, redis })
    }

    /// The same, through a three-master Redis Cluster.
    pub fn start_cluster(bin: PathBuf, dir: PathBuf) -> anyhow::Result<Lab> {
        let redis = Redis::start_cluster(&dir)?;
        Ok(Lab { bin, dir, redis })
    }

    pub fn servers(&self, n: usize, scenario: &str) -> anyhow::Result<Vec<Server>> {
        self.servers_with(n, scenario, &[])
    }

    /// Instances through the lab's Redis, with these extra settings.
    pub fn servers_with(
        &self,
        n: usize,
        scenario: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Vec<Server>> {
        (0..n)
            .map(|i| self.server(Some(&self.redis), scenario, i, env))
            .collect()
    }

    /// One instance on its embedded broker, without Redis.
    pub fn embedded(&self, scenario: &str) -> anyhow::Result<Vec<Server>> {
        self.embedded_with(scenario, &[])
    }

    /// The same, with these extra settings.
    pub fn embedded_with(
        &self,
        scenario: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Vec<Server>> {
        Ok(vec![self.server(None, scenario, 0, env)?])
    }

    fn server(
        &self,
        redis: Option<&Redis>,
        scenario: &str,
        i: usize,
        env: &[(String, String)],
    ) -> anyhow::Result<Server> {
        let slug: String = scenario
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Server::start(&self.bin, redis, &self.dir, &format!("{slug}-{i}"), env)
    }

    /// A room or action name no earlier scenario used.
    pub fn topic(&self, scenario: &str) -> String {
        let slug: String = scenario
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(40)
            .collect();
        format!("{slug}-{}", crate::client::now_us())
    }

    pub fn usage(&self, servers: &[Server]) -> anyhow::Result<Spent> {
        let mut total = Usage::default();
        for server in servers {
            let usage = server.usage()?;
            total.cpu += usage.cpu;
            total.rss_kib += usage.rss_kib;
        }
        Ok(Spent {
            servers: total,
            redis_cpu: self.redis.usage()?.cpu,
            clients_cpu: Usage::of(std::process::id())?.cpu,
        })
    }

    pub fn spent(&self, row: &mut Row, before: Spent, after: Spent) {
        row.server_cpu_s = (after.servers.cpu.saturating_sub(before.servers.cpu)).as_secs_f64();
        row.redis_cpu_s = (after.redis_cpu.saturating_sub(before.redis_cpu)).as_secs_f64();
        row.client_cpu_s = (after.clients_cpu.saturating_sub(before.clients_cpu)).as_secs_f64();
        row.server_rss_mib = after.servers.rss_kib as f64 / 1024.0;
    }
}

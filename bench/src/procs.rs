//! The processes under test: a private redis-server on a free port (or a
//! private three-master Redis Cluster) and server instances, each logging to a file in the run's directory, and
//! what they spend, read from /proc so the load generator's own work is not
//! counted.

use anyhow::{bail, Context};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A process stopped when dropped: asked with SIGTERM (a server drains and
/// leaves Redis clean), killed if it takes longer than its grace period.
struct Owned(Child);

const STOP_TIMEOUT: Duration = Duration::from_secs(15);

impl Drop for Owned {
    fn drop(&mut self) {
        let asked = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while asked && Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Redis {
    pub port: u16,
    /// None while restarting.
    process: Option<Owned>,
    /// The other masters of a cluster (the first is `port`).
    others: Vec<(u16, Owned)>,
}

/// The masters of the benchmark's cluster.
const CLUSTER_MASTERS: usize = 3;

impl Redis {
    pub fn start(dir: &Path) -> anyhow::Result<Redis> {
        // A port found free can be taken before redis-server binds it.
        for _ in 0..5 {
            let port = free_port()?;
            if let Some(process) = Self::spawn(dir, port, false)? {
                return Ok(Redis {
                    port,
                    process: Some(process),
                    others: Vec::new(),
                });
            }
        }
        bail!("redis-server did not start on a free port")
    }

    /// A Redis Cluster of three masters (no replicas), nodes in `dir`.
    pub fn start_cluster(dir: &Path) -> anyhow::Result<Redis> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut nodes = Vec::new();
        while nodes.len() < CLUSTER_MASTERS {
            let port = free_port()?;
            // The cluster bus listens on port + 10000.
            if port >= 55000 || TcpListener::bind(("127.0.0.1", port + 10000)).is_err() {
                continue;
            }
            if let Some(process) = Self::spawn(dir, port, true)? {
                nodes.push((port, process));
            }
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for (port, _) in &nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let status = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run redis-cli: install it (scripts/setup.sh --test)")?;
        anyhow::ensure!(status.success(), "redis-cli --cluster create failed");
        let ports: Vec<u16> = nodes.iter().map(|(port, _)| *port).collect();
        let deadline = Instant::now() + START_TIMEOUT;
        while !ports.iter().all(|&port| cluster_ok(port)) {
            anyhow::ensure!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (port, first) = nodes.remove(0);
        Ok(Redis {
            port,
            process: Some(first),
            others: nodes,
        })
    }

    fn spawn(dir: &Path, port: u16, cluster: bool) -> anyhow::Result<Option<Owned>> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir);
        if cluster {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run redis-server: install it (scripts/setup.sh --test)")?;
        let mut process = Owned(child);
        Ok(wait_for(&mut process, || redis_ping(port))?.then_some(process))
    }

    /// Stops redis-server, waits, and starts an empty one on the same port
    /// (a single Redis only).
    pub fn restart(&mut self, dir: &Path, down_for: Duration) -> anyhow::Result<()> {
        anyhow::ensure!(self.others.is_empty(), "a cluster is not restarted");
        self.process = None; // stopped on drop
        std::thread::sleep(down_for);
        let process = Self::spawn(dir, self.port, false)?
            .with_context(|| format!("redis-server did not restart on port {}", self.port))?;
        self.process = Some(process);
        Ok(())
    }

    /// Every master's port (the only one of a single Redis first).
    pub fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.others.iter().map(|(port, _)| *port))
            .collect()
    }

    /// REDIS_URL: every master of a cluster, comma-separated.
    pub fn url(&self) -> String {
        self.ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The CPU time of every node.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let process = self
            .process
            .as_ref()
            .context("redis-server is restarting")?;
        let mut usage = Usage::of(process.0.id())?;
        for (_, node) in &self.others {
            let node = Usage::of(node.0.id())?;
            usage.cpu += node.cpu;
            usage.rss_kib += node.rss_kib;
        }
        Ok(usage)
    }
}

fn cluster_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 512];
    stream.write_all(b"CLUSTER INFO\r\n").is_ok()
        && stream
            .read(&mut reply)
            .is_ok_and(|n| String::from_utf8_lossy(&reply[..n]).contains("cluster_state:ok"))
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Polls `ready` until it holds; false if the process exited first.
fn wait_for(process: &mut Owned, ready: impl Fn() -> bool) -> anyhow::Result<bool> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(true);
        }
        if process.0.try_wait()?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

pub struct Server {
    pub http_port: u16,
    pub relay_port: u16,
    /// The admin port (metrics, server API); 0 for `minrelay`.
    pub admin_port: u16,
    process: Owned,
}

impl Server {
    /// Starts an instance with its default settings but the per-connection
    /// rate and connection limits, which the scenarios exceed on purpose,
    /// and `env`; without `redis`, on its embedded broker.
    pub fn start(
        bin: &Path,
        redis: Option<&Redis>,
        dir: &Path,
        name: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Server> {
        let (http_port, relay_port, admin_port) = (free_port()?, free_port()?, free_port()?);
        let log = dir.join(format!("{name}.log"));
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(bin);
        if let Some(redis) = redis {
            command.env("REDIS_URL", redis.url());
        }
        // The in-memory embedded mode unless `env` says otherwise.
        command.env("DATA_DIR", "memory");
        command.envs(env.iter().map(|(name, value)| (name, value)));
        let child = command
            .current_dir(dir) // no stray .env
            .env("BIND", "127.0.0.1")
            .env("PORT", http_port.to_string())
            .env("RELAY_PORT", relay_port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .env("CHAT_RATE_LIMIT_PER_SEC", "1000000")
            .env("CHAT_RATE_LIMIT_BURST", "1000000")
            .env("RELAY_RATE_LIMIT_PER_SEC", "1000000")
            .env("RELAY_RATE_LIMIT_BURST", "1000000")
            .env("RELAY_BYTES_PER_SEC", "4000000000")
            .env("MAX_CONNECTIONS", "1000000")
            .env("MAX_CONNECTIONS_PER_IP", "1000000")
            .env("NEW_ROOMS_PER_MIN", "1000000")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut process = Owned(child);
        let up = || {
            TcpStream::connect(("127.0.0.1", http_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", relay_port)).is_ok()
        };
        if !wait_for(&mut process, up)? {
            bail!("{name} did not start: see {}", log.display());
        }
        Ok(Server {
            http_port,
            relay_port,
            admin_port,
            process,
        })
    }

    /// Starts `minrelay` (next to this program) on a free port: the
    /// relay to compare with.
    pub fn minimal(dir: &Path) -> anyhow::Result<Server> {
        let bin = std::env::current_exe()?.with_file_name("minrelay");
        let port = free_port()?;
        let log = dir.join("minrelay.log");
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&bin)
            .arg(port.to_string())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot run {}: build it first", bin.display()))?;
        let mut process = Owned(child);
        if !wait_for(&mut process, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })? {
            bail!("minrelay did not start: see {}", log.display());
        }
        Ok(Server {
            http_port: port,
            relay_port: port,
            admin_port: 0,
            process,
        })
    }

    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.process.0.id())
    }

    /// The allocator's heap in use, in KiB, from the server's metrics
    /// (`heap_bytes`): what its data takes, where the resident size also
    /// counts the free memory the allocator keeps. `None` from a server
    /// that does not publish it (an older build).
    pub async fn heap_kib(&self) -> Option<u64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        let line = text
            .lines()
            .find(|line| line.starts_with(r#"heap_bytes{state="in_use"}"#))?;
        let bytes: f64 = line.rsplit(' ').next()?.parse().ok()?;
        Some(bytes as u64 / 1024)
    }
}

/// CPU time used so far and resident memory now.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        // Fields after the command name, which may contain spaces.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
            bail!("cannot read CPU time from /proc/{pid}/stat");
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc status")?;
        Ok(Usage {
            // USER_HZ is 100 on Linux.
            cpu: Duration::from_millis((user + system) * 10),
            rss_kib,
        })
    }
}

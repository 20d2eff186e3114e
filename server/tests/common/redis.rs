//! A private Redis for each test: one redis-server on a free port, or a
//! Redis Cluster of several masters (`TEST_REDIS=cluster`), stopped on drop.

use super::WAIT;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private Redis, stopped on drop: one redis-server, or a Redis Cluster
/// of three masters when `TEST_REDIS=cluster` (the whole suite runs
/// against either; `scripts/test.sh` runs both).
pub struct Redis {
    /// The first node's port (the only one on a single Redis).
    pub port: u16,
    nodes: Vec<Node>,
    replicas: usize,
    /// Cluster nodes keep their cluster configuration here.
    dir: Option<tempdir::Dir>,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

pub fn cluster_mode() -> bool {
    std::env::var("TEST_REDIS").is_ok_and(|v| v == "cluster")
}

/// A port free for a cluster node: its port + 10000 (the cluster bus)
/// must be free too.
fn free_node_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl Redis {
    pub fn start() -> Redis {
        if cluster_mode() {
            return Redis::cluster(3, 0);
        }
        for _ in 0..5 {
            let mut redis = Redis::stopped();
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start redis-server (is it installed?)");
    }

    /// A Redis Cluster of `masters` masters with `replicas` replicas each.
    pub fn cluster(masters: usize, replicas: usize) -> Redis {
        for _ in 0..3 {
            let mut redis = Redis::stopped_cluster(masters * (1 + replicas), replicas);
            if redis.spawn() {
                return redis;
            }
        }
        panic!("could not start a Redis Cluster (is redis-server 7 installed?)");
    }

    /// A Redis that is not running yet, on a port reserved now (a cluster's
    /// ports with `TEST_REDIS=cluster`).
    pub fn stopped() -> Redis {
        if cluster_mode() {
            return Redis::stopped_cluster(3, 0);
        }
        let port = free_port();
        Redis {
            port,
            nodes: vec![Node { port, child: None }],
            replicas: 0,
            dir: None,
        }
    }

    fn stopped_cluster(nodes: usize, replicas: usize) -> Redis {
        let nodes: Vec<Node> = (0..nodes)
            .map(|_| Node {
                port: free_node_port(),
                child: None,
            })
            .collect();
        Redis {
            port: nodes[0].port,
            nodes,
            replicas,
            dir: Some(tempdir::Dir::new()),
        }
    }

    pub fn is_cluster(&self) -> bool {
        self.dir.is_some()
    }

    /// REDIS_URL: every node, comma-separated, for a cluster.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Starts every node (and forms the cluster the first time); false if
    /// a port was taken meanwhile.
    pub fn spawn(&mut self) -> bool {
        for index in 0..self.nodes.len() {
            if !self.spawn_node(index) {
                self.stop();
                return false;
            }
        }
        if let Some(dir) = &self.dir {
            if !dir.path().join("created").exists() {
                let mut create = Command::new("redis-cli");
                create.arg("--cluster").arg("create");
                for port in self.ports() {
                    create.arg(format!("127.0.0.1:{port}"));
                }
                let status = create
                    .args(["--cluster-replicas", &self.replicas.to_string()])
                    .arg("--cluster-yes")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("redis-cli on PATH");
                assert!(status.success(), "redis-cli --cluster create");
                std::fs::write(dir.path().join("created"), "").unwrap();
            }
            return self.wait_cluster_ok();
        }
        true
    }

    fn spawn_node(&mut self, index: usize) -> bool {
        let port = self.nodes[index].port;
        let mut command = Command::new("redis-server");
        command.args(["--port", &port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(dir) = &self.dir {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                // Fast failover for the tests, whatever the replica's
                // last contact with its master (a loaded machine may
                // delay it).
                .args(["--cluster-node-timeout", "1000"])
                .args(["--cluster-replica-validity-factor", "0"])
                .arg("--dir")
                .arg(dir.path());
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.nodes[index].child = Some(child);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(mut conn) = node_connection(port) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return true;
                }
            }
            if let Some(Ok(Some(_))) = self.nodes[index].child.as_mut().map(Child::try_wait) {
                return false; // exited: port taken
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until every running node sees the cluster whole, and every
    /// running replica is in sync with its master (a replica that never
    /// synced does not take over).
    fn wait_cluster_ok(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                let Ok(mut conn) = node_connection(n.port) else {
                    return false;
                };
                let cluster: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .unwrap_or_default();
                cluster.contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn stop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill_node(index);
        }
    }

    /// kill -9 of one node.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again, empty, and waits for the cluster to be
    /// whole.
    pub fn restart_node(&mut self, index: usize) {
        assert!(self.spawn_node(index), "the node restarts on its port");
        assert!(self.wait_cluster_ok(), "the cluster is whole again");
    }

    /// Waits until the running nodes serve every slot again (after a
    /// failover).
    pub fn wait_serving(&self) {
        if !self.wait_cluster_ok() {
            let nodes: Vec<String> = self.on_every_node(redis::cmd("CLUSTER").arg("NODES"));
            panic!(
                "the cluster does not serve every slot:\n{}",
                nodes.join("\n")
            );
        }
    }

    /// Restarts every node, empty (a cluster keeps its shape).
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "redis-server restarts on its port");
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let mut conn = self.connection().expect("redis up");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        let shards: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut conn)
            .expect("CLUSTER SLOTS");
        for shard in shards {
            let (Some(redis::Value::Int(from)), Some(redis::Value::Int(to))) =
                (shard.first(), shard.get(1))
            else {
                continue;
            };
            if (*from..=*to).contains(&i64::from(slot)) {
                if let Some(redis::Value::Array(master)) = shard.get(2) {
                    if let Some(redis::Value::Int(port)) = master.get(1) {
                        return *port as u16;
                    }
                }
            }
        }
        panic!("no master serves slot {slot}");
    }

    pub fn node_index(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// A connection to the first running node (any node answers the
    /// commands the tests send through it, or redirects them:
    /// use [`Redis::query`] for keys).
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .unwrap_or(&self.nodes[0]);
        node_connection(node.port)
    }

    /// Runs a command on the node holding its key.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        if self.is_cluster() {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some())
                .map(|n| format!("redis://127.0.0.1:{}", n.port))
                .collect();
            let mut conn = redis::cluster::ClusterClient::new(nodes)
                .and_then(|c| c.get_connection())
                .expect("cluster up");
            cmd.query(&mut conn).expect("a cluster command")
        } else {
            cmd.query(&mut self.connection().expect("redis up"))
                .expect("a Redis command")
        }
    }

    /// Runs a command on every running master (every node: replicas of a
    /// cluster refuse most of them, their answer is skipped).
    pub fn on_every_node<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Vec<T> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter_map(|n| cmd.query(&mut node_connection(n.port).ok()?).ok())
            .collect()
    }

    pub fn hkeys(&self, key: &str) -> Vec<String> {
        let mut fields: Vec<String> = self.query(redis::cmd("HKEYS").arg(key));
        fields.sort();
        fields
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .on_every_node::<Vec<String>>(redis::cmd("KEYS").arg(pattern))
            .into_iter()
            .flatten()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The pub/sub channels (sharded ones in a cluster) matching `pattern`
    /// that somebody is subscribed to.
    pub fn subscribed_channels(&self, pattern: &str) -> Vec<String> {
        let kind = if self.is_cluster() {
            "SHARDCHANNELS"
        } else {
            "CHANNELS"
        };
        self.on_every_node::<Vec<String>>(redis::cmd("PUBSUB").arg(kind).arg(pattern))
            .into_iter()
            .flatten()
            .collect()
    }
}

fn node_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

/// The key names the server uses (`REDIS_PREFIX` "chat").
pub fn keys() -> server::broker::redis::keys::Keys {
    server::broker::redis::keys::Keys::new("chat")
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    /// A private directory, removed on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!("chat-test-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

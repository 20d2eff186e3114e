//! Test harness: a real redis-server on a free port, real server processes
//! (the built binary, on ephemeral ports), real WebSocket clients.
#![allow(dead_code)] // each test file uses a different part of the harness

use app::protocol::{ClientMessage, Position, ServerEvent};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(10);

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

    /// Kills the pub/sub connections (every node's); returns how many.
    pub fn kill_pubsub_clients(&self) -> usize {
        self.on_every_node::<usize>(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
            .into_iter()
            .sum()
    }
}

fn node_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

/// The key names the server uses (`REDIS_PREFIX` "chat").
pub fn keys() -> server::store::keys::Keys {
    server::store::keys::Keys::new("chat")
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

mod tempdir {
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

/// A server process, killed on drop.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub relay: Option<SocketAddr>,
    /// The private admin port (metrics).
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(redis: Option<&Redis>, env: &[(&str, &str)]) -> Server {
        Server::spawn_configured(Command::new(env!("CARGO_BIN_EXE_server")), redis, env)
    }

    /// Like `start`, with a command that runs the server binary (under
    /// `prlimit`, say).
    pub fn spawn_configured(
        mut command: Command,
        redis: Option<&Redis>,
        env: &[(&str, &str)],
    ) -> Server {
        command
            .env("BIND", "127.0.0.1")
            .env("PORT", "0")
            .env("RELAY_PORT", "0")
            .env("ADMIN_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("REDIS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(redis) = redis {
            command.env("REDIS_URL", redis.url());
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let server = Self::spawn(command);
        if let Some(redis) = redis {
            // The suite runs against the kind of Redis it was asked for.
            let wanted = if redis.is_cluster() {
                "using a Redis Cluster"
            } else {
                "using one Redis"
            };
            assert!(
                server
                    .logs
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(wanted)),
                "the server logs {wanted:?}"
            );
        }
        server
    }

    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("server binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let listening = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|json| json["message"] == "listening");
                // Recorded before it is announced, so tests can read it back.
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                if let Some(json) = listening {
                    let _ = tx.send(json);
                }
            }
        });
        let Ok(listening) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("the server did not say \"listening\" (it needs RUST_LOG at info)");
        };
        let http = listening["http"].as_str().unwrap().parse().unwrap();
        let relay = listening["relay"].as_str().map(|a| a.parse().unwrap());
        let admin = listening["admin"].as_str().unwrap().parse().unwrap();
        Server {
            child,
            http,
            relay,
            admin,
            logs,
        }
    }

    /// This process's instance id, from its "listening" log line.
    pub fn instance_id(&self) -> String {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let line = logs
            .iter()
            .find(|l| l.contains("\"listening\""))
            .expect("listening line");
        let json: Value = serde_json::from_str(line).unwrap();
        json["instance"].as_str().unwrap().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn chat_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.http)
    }

    pub fn relay_url(&self) -> String {
        format!("ws://{}/relay", self.http)
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    /// A GET on the private admin port (`/metrics`, `/healthz`).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    pub async fn health(&self) -> Value {
        serde_json::from_str(&self.get("/healthz").await.1).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server said, warnings first.
        if std::thread::panicking() {
            let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- server {} log (last 40 lines) ---", self.http);
            for line in logs.iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A minimal HTTP/1.1 GET, enough for /healthz and /metrics.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    // Chunked bodies: keep only the payload lines.
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("")
    } else {
        body.to_owned()
    };
    (status, body)
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket client.
pub struct Client {
    ws: Socket,
}

#[derive(Debug)]
pub enum Received {
    Text(String),
    Close(Option<u16>),
}

impl Client {
    /// A client over a socket opened by hand (to send raw frames first).
    pub fn from_socket(ws: Socket) -> Client {
        Client { ws }
    }

    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends unless the connection is already gone.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next text frame or close, skipping pings; panics after `WAIT`.
    pub async fn receive(&mut self) -> Received {
        self.receive_within(WAIT)
            .await
            .expect("a frame before the timeout")
    }

    pub async fn receive_within(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => return Some(Received::Text(text.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Close(frame.map(|f: CloseFrame| f.code.into())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Received::Close(None)),
            }
        }
    }

    pub async fn json(&mut self) -> Value {
        match self.receive().await {
            Received::Text(text) => serde_json::from_str(&text).expect("JSON frame"),
            Received::Close(code) => panic!("closed ({code:?}) while waiting for a frame"),
        }
    }

    /// Waits for the close frame, skipping text frames; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Received::Close(code) = self.receive().await {
                return code;
            }
        }
    }

    /// Waits for the close frame, skipping text frames; its code and reason.
    pub async fn close_reason(&mut self) -> Option<(u16, String)> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (f.code.into(), f.reason.to_string()));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Opens a WebSocket with extra request headers (e.g. `Origin`), from a
/// given local address if any (another loopback address is another
/// client); a refused upgrade gives its HTTP status and body.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Result<Client, (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = url.into_client_request().expect("a ws:// URL");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        request
            .headers_mut()
            .append(name, value.parse().expect("a header value"));
    }
    let uri = request.uri();
    let host = uri.host().expect("a host").trim_matches(['[', ']']);
    let server = SocketAddr::new(
        host.parse().expect("an IP host"),
        uri.port_u16().unwrap_or(80),
    );
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .unwrap();
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .expect("a local address");
    }
    let stream = socket
        .connect(server)
        .await
        .expect("the server accepts TCP");
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(body).into_owned(),
            ))
        }
        Err(err) => panic!("connect {url}: {err}"),
    }
}

/// A chat client that speaks the protocol through `app::protocol` types.
pub struct Chat {
    pub client: Client,
    pub session: Uuid,
    /// The stream position the history frame gave.
    pub position: Position,
    /// The history frame's `recovered` flag.
    pub recovered: bool,
}

impl Chat {
    /// Opens a socket to the room and reads the history and count it gets first.
    pub async fn open(server: &Server, query: &str) -> (Chat, Vec<ServerEvent>, u64) {
        Chat::try_open(&server.chat_url(query))
            .await
            .expect("the chat socket opens")
    }

    /// Like `open`, by URL; None if the connection is refused or closed
    /// before its first two frames (a server that is restarting).
    pub async fn try_open(url: &str) -> Option<(Chat, Vec<ServerEvent>, u64)> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let mut client = Client { ws };
        let mut next = async || match client.receive_within(WAIT).await? {
            Received::Text(text) => Some(serde_json::from_str::<ServerEvent>(&text).unwrap()),
            Received::Close(_) => None,
        };
        let (history, position, recovered) = match next().await? {
            ServerEvent::History {
                events,
                epoch,
                offset,
                recovered,
            } => (events, Position { epoch, offset }, recovered),
            other => panic!("expected history first, got {other:?}"),
        };
        let count = match next().await? {
            ServerEvent::Count { count } => count,
            other => panic!("expected count second, got {other:?}"),
        };
        let chat = Chat {
            client,
            session: Uuid::new_v4(),
            position,
            recovered,
        };
        Some((chat, history, count))
    }

    /// Opens a socket to the default room and joins as `pseudo`.
    pub async fn join(server: &Server, pseudo: &str) -> Chat {
        Chat::join_query(server, "", pseudo).await
    }

    /// Opens a socket to `room` and joins it as `pseudo`.
    pub async fn join_room(server: &Server, room: &str, pseudo: &str) -> Chat {
        Chat::join_query(server, &format!("?room={room}"), pseudo).await
    }

    async fn join_query(server: &Server, query: &str, pseudo: &str) -> Chat {
        let (mut chat, _, _) = Chat::open(server, query).await;
        chat.send(&ClientMessage::Join {
            pseudo: pseudo.into(),
            session: Some(chat.session),
        })
        .await;
        chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
            .await;
        chat
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        self.client
            .send_text(&serde_json::to_string(msg).unwrap())
            .await;
    }

    pub async fn say(&mut self, text: &str) {
        self.send(&ClientMessage::Say { text: text.into() }).await;
    }

    pub async fn event(&mut self) -> ServerEvent {
        serde_json::from_value(self.client.json().await).expect("a server event")
    }

    /// Skips events until one matches.
    pub async fn expect(&mut self, wanted: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        loop {
            let event = self.event().await;
            if wanted(&event) {
                return event;
            }
        }
    }

    pub async fn expect_count(&mut self, count: u64) {
        self.expect(|e| *e == ServerEvent::Count { count }).await;
    }

    pub async fn expect_message(&mut self) -> app::protocol::ChatMessage {
        match self.expect(|e| matches!(e, ServerEvent::Message(_))).await {
            ServerEvent::Message(m) => m,
            _ => unreachable!(),
        }
    }

    pub async fn expect_error(&mut self) -> app::protocol::ErrorCode {
        match self
            .expect(|e| matches!(e, ServerEvent::Error { .. }))
            .await
        {
            ServerEvent::Error { code, .. } => code,
            _ => unreachable!(),
        }
    }

    /// Collects chat messages until `n` arrived.
    pub async fn messages(&mut self, n: usize) -> Vec<app::protocol::ChatMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.expect_message().await);
        }
        out
    }

    /// Asserts that no chat message arrives for a while.
    pub async fn no_message_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.receive_within(left).await {
                None => return,
                Some(Received::Text(text)) => {
                    let event: ServerEvent = serde_json::from_str(&text).unwrap();
                    assert!(
                        !matches!(event, ServerEvent::Message(_)),
                        "unexpected {event:?}"
                    );
                }
                Some(Received::Close(code)) => panic!("closed: {code:?}"),
            }
        }
    }
}

/// The texts of the chat messages among events (e.g. a history).
pub fn texts(events: &[ServerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

/// The HTTP status with which a WebSocket upgrade was refused.
pub async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

//! The server as its users run it: the built binary in a process of its
//! own, on ephemeral ports read from its "listening" log line. For what
//! only a process shows: signals, reloads, kill -9, resource limits.

use super::{http_get, Endpoint, Redis};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
            // In the process unless a test gives it a directory: test
            // servers run side by side.
            .env("DATA_DIR", "memory")
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

    /// The JSON log lines so far whose message is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<Value> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|json| json["message"] == message)
            .collect()
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
            // The server's own lines: the Redis client's may be thousands
            // (a reconnect loop) and would hide them.
            let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            let (client, own): (Vec<&String>, Vec<&String>) = logs
                .iter()
                .partition(|line| line.contains(r#""log.target":"redis::"#));
            eprintln!(
                "--- server {} log (last 40 of its lines; {} lines of the Redis client left out) ---",
                self.http,
                client.len()
            );
            for line in own.iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
        }
    }
}

impl Endpoint for Server {
    fn http(&self) -> SocketAddr {
        self.http
    }
}

/// The resident memory of a process, in KiB.
pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

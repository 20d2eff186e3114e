//! Servers in this process: started on port 0 with `server::start`, their
//! addresses read from the value it returns. Several of them can share one
//! in-memory broker, and then behave as instances sharing a Redis: that is
//! how multi-instance behaviour is tested in milliseconds.

use super::{Endpoint, Redis};
use clap::Parser;
use server::broker::memory::Shared;
use server::config::Config;
use server::{Backing, Listeners};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// One in-process instance; stopped (drained) with [`Instance::stop`], or
/// when the test's runtime ends.
pub struct Instance {
    pub running: server::Running,
    shutdown: CancellationToken,
}

impl Instance {
    /// An instance on the `shared` memory, on ephemeral loopback ports,
    /// with these extra command-line settings.
    pub async fn start(shared: &Shared, settings: &[&str]) -> Instance {
        Instance::with(Backing::Memory(shared.clone()), settings).await
    }

    async fn with(backing: Backing, settings: &[&str]) -> Instance {
        let mut args = vec![
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--relay-port",
            "0",
            "--admin-port",
            "0",
        ];
        args.extend_from_slice(settings);
        let config = Config::try_parse_from(args).expect("valid settings");
        let mut listeners = Listeners::bind(&config).expect("free ports");
        // RELAY_PORT 0 means no relay port; the test wants one, anywhere.
        let anywhere = "127.0.0.1:0".parse().expect("an address");
        listeners.relay = Some(server::http::listener::bind(anywhere, false).expect("a port"));
        let shutdown = CancellationToken::new();
        let running = server::start(listeners, config, backing, shutdown.clone())
            .await
            .expect("the instance starts");
        Instance { running, shutdown }
    }

    /// An instance as `Server::start(redis, env)` starts a process, in
    /// this one: the same settings (`("MAX_MESSAGE_BYTES", "4096")` is
    /// `--max-message-bytes 4096`), on a Redis or on memory of its own.
    pub async fn configured(redis: Option<&Redis>, env: &[(&str, &str)]) -> Instance {
        Instance::sharing(redis, &Shared::default(), env).await
    }

    /// Two instances sharing their state: on the Redis given (a cluster
    /// with `TEST_REDIS=cluster`), else on one memory; `env` as
    /// [`Instance::configured`] takes it.
    pub async fn pair(redis: Option<&Redis>, env: &[(&str, &str)]) -> (Instance, Instance) {
        let shared = Shared::default();
        (
            Instance::sharing(redis, &shared, env).await,
            Instance::sharing(redis, &shared, env).await,
        )
    }

    /// Like [`Instance::configured`]; without Redis, on `shared`.
    async fn sharing(redis: Option<&Redis>, shared: &Shared, env: &[(&str, &str)]) -> Instance {
        let mut flags: Vec<String> = env
            .iter()
            .flat_map(|(name, value)| {
                let flag = format!("--{}", name.to_lowercase().replace('_', "-"));
                [flag, (*value).to_owned()]
            })
            .collect();
        let backing = match redis {
            Some(redis) => {
                flags.extend(["--redis-url".to_owned(), redis.url()]);
                Backing::Configured
            }
            None => Backing::Memory(shared.clone()),
        };
        let settings: Vec<&str> = flags.iter().map(String::as_str).collect();
        let instance = Instance::with(backing, &settings).await;
        if redis.is_some() {
            // As a load balancer would: clients come once the instance
            // follows the other instances (its subscriptions are up), not
            // while its Redis connections are still being made.
            let ready = || async { instance.health().await["redis"] == "ok" };
            super::eventually("the instance's Redis link is up", super::WAIT, ready).await;
        }
        instance
    }

    /// Several instances on one shared memory.
    pub async fn several(shared: &Shared, count: usize) -> Vec<Instance> {
        let mut instances = Vec::with_capacity(count);
        for _ in 0..count {
            instances.push(Instance::start(shared, &[]).await);
        }
        instances
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        super::http_get(self.running.http, path).await
    }

    pub async fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/healthz").await.1).expect("health is JSON")
    }

    /// The relay's own port.
    pub fn relay_port_url(&self) -> String {
        let relay = self.running.relay.expect("a relay port");
        format!("ws://{relay}/")
    }

    /// A clean stop: sockets closed with 1012, entries removed from the
    /// shared broker.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.stopped().await.expect("a clean stop");
    }
}

impl Endpoint for Instance {
    fn http(&self) -> SocketAddr {
        self.running.http
    }
}

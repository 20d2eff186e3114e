//! The wiring of one instance: every part is built here from the
//! configuration and handed the narrow handles it needs, and the
//! background tasks are started, supervised.

use super::drain::Drain;
use super::Backing;
use crate::admission::capacity::Capacity;
use crate::admission::{Guard, Policy};
use crate::api::Api;
use crate::auth::Verifier;
use crate::broker::memory::{MemoryBroker, Shared};
use crate::broker::redis::{RedisBroker, Settings};
use crate::broker::{Broker, Inbox};
use crate::chat::{self, Chat, Counts, Feeds, Inbound};
use crate::config::{AuthMode, Config};
use crate::fanout::Hub;
use crate::http::health::Monitor;
use crate::http::serve::Door;
use crate::presence::{membership, Presence};
use crate::relay::Relay;
use crate::supervise::{self, Restarts};
use crate::webhook::Webhooks;
use crate::{http, metrics, ws};
use axum::Router;
use governor::Quota;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Connections the admin port holds at once (scrapers, health checks).
const ADMIN_CONNECTIONS: usize = 64;

/// A built instance, ready to serve.
pub struct Parts {
    pub instance: Uuid,
    pub broker: Arc<dyn Broker>,
    pub guard: Arc<Guard>,
    pub public: Router,
    pub relay_port: Router,
    pub admin: Router,
    pub drain: Drain,
}

impl Parts {
    pub async fn build(
        config: &Config,
        backing: Backing,
        http_addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Parts> {
        let instance = Uuid::new_v4();
        let restarts = Arc::new(Restarts::default());
        let tasks = TaskTracker::new();
        let hub = Arc::new(Hub::default());
        let feeds = Feeds::new(hub.clone());
        let counts = Arc::new(Counts::default());
        let inbox: Arc<dyn Inbox> = Arc::new(Inbound {
            hub: hub.clone(),
            feeds: feeds.clone(),
            counts: counts.clone(),
        });
        let broker = broker(config, backing, instance, inbox, &restarts, &shutdown).await?;
        supervise::spawn("stream-repairs", restarts.clone(), shutdown.clone(), {
            let (feeds, broker, shutdown) = (feeds.clone(), broker.clone(), shutdown.clone());
            move || feeds.clone().repair_loop(broker.clone(), shutdown.clone())
        });
        let (events, presence_events) = mpsc::unbounded_channel();
        let presence = Arc::new(Presence::new(broker.clone(), events));
        let guard = Arc::new(Guard::new(policy(config)));
        let webhooks = webhooks(config, &broker, &restarts, &shutdown, &tasks)?;
        let outbox = webhooks.as_ref().map(|webhooks| webhooks.outbox());
        let chat = Chat::new(chat::Parts {
            instance,
            broker: broker.clone(),
            presence: presence.clone(),
            hub: hub.clone(),
            feeds,
            counts,
            guard: guard.clone(),
            auth: verifier(config, config.chat_auth)?,
            limits: chat_limits(config, &shutdown),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            outbox: outbox.clone(),
        });
        chat.spawn_tasks(presence_events, &restarts);
        let relay = Arc::new(Relay {
            instance,
            broker: broker.clone(),
            presence: presence.clone(),
            hub: hub.clone(),
            guard: guard.clone(),
            auth: verifier(config, config.relay_auth)?,
            limits: relay_limits(config, &shutdown),
            outbound_queue: config.outbound_queue as usize,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            outbox,
        });
        let monitor = Arc::new(Monitor {
            instance,
            started: Instant::now(),
            hub,
            broker: broker.clone(),
            restarts: restarts.clone(),
            shutdown: shutdown.clone(),
            metrics: metrics::install(),
        });
        supervise::spawn("instance-line", restarts.clone(), shutdown.clone(), {
            let monitor = monitor.clone();
            move || monitor.clone().announce()
        });
        let ttl = config.heartbeat_ttl();
        membership::start(presence.clone(), broker.clone(), ttl, restarts, shutdown).await;
        Ok(Parts {
            instance,
            public: http::public(&chat, &relay, &monitor, &config.site_root, http_addr),
            relay_port: http::relay_port(&relay),
            admin: http::admin(
                &monitor,
                Arc::new(Api {
                    chat: chat.clone(),
                    relay: relay.clone(),
                    started: monitor.started,
                    key: config.api_key.clone(),
                }),
                http::AdminHosts(config.admin_hosts.clone()),
            ),
            drain: Drain {
                tasks,
                broker: broker.clone(),
                presence,
                chat,
                grace: config.shutdown_grace(),
            },
            broker,
            guard,
        })
    }

    /// The public and relay ports share the instance's connection limits.
    pub fn door(&self, name: &'static str, config: &Config) -> Door {
        let guard = self.guard.clone();
        Door {
            name,
            header_timeout: config.header_timeout(),
            admit: Box::new(move |peer| guard.connect(peer)),
        }
    }
}

/// The admin port has places of its own: a flood on the public ports does
/// not keep monitoring out.
pub fn admin_door(config: &Config) -> Door {
    let capacity = Capacity::new(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS);
    Door {
        name: "admin",
        admit: Box::new(move |peer| capacity.acquire(peer)),
        header_timeout: config.header_timeout(),
    }
}

/// How long a new process waits for the old one (a reload) to let the data
/// file go.
const HANDOVER_WAIT: Duration = Duration::from_secs(30);

async fn broker(
    config: &Config,
    backing: Backing,
    instance: Uuid,
    inbox: Arc<dyn Inbox>,
    restarts: &Arc<Restarts>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn Broker>> {
    let ttl = config.heartbeat_ttl();
    let shared = match (backing, &config.redis_url) {
        (Backing::Memory(shared), _) => shared,
        (Backing::Configured, None) if config.data_dir == "memory" => {
            Shared::in_memory(config.retention())
        }
        (Backing::Configured, None) => {
            let dir = std::path::PathBuf::from(&config.data_dir);
            let (port, retention) = (config.port, config.retention());
            let open = move || Shared::durable(&dir, port, HANDOVER_WAIT, retention);
            tokio::task::spawn_blocking(open).await??
        }
        (Backing::Configured, Some(url)) => {
            let settings = Settings {
                url,
                ca_cert: &config.redis_ca_cert,
                prefix: &config.redis_prefix,
                instance,
                ttl,
                retention: config.retention(),
            };
            let redis = RedisBroker::start(settings, inbox, restarts.clone(), shutdown.clone());
            return Ok(Arc::new(redis.await?));
        }
    };
    Ok(Arc::new(MemoryBroker::join(&shared, instance, ttl, inbox)))
}

/// The webhook deliverer, running, when `WEBHOOK_URL` is set.
fn webhooks(
    config: &Config,
    broker: &Arc<dyn Broker>,
    restarts: &Arc<Restarts>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Option<Arc<Webhooks>>> {
    let (Some(url), Some(secret)) = (&config.webhook_url, &config.webhook_secret) else {
        return Ok(None);
    };
    let (broker, stop) = (broker.clone(), shutdown.clone());
    let webhooks = Webhooks::new(broker, url.clone(), secret.clone(), stop, tasks.clone())?;
    supervise::spawn("webhooks", restarts.clone(), shutdown.clone(), {
        let webhooks = webhooks.clone();
        move || webhooks.clone().run()
    });
    // The address may hold credentials: only its host is logged.
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    tracing::info!(host, "webhooks on");
    Ok(Some(webhooks))
}

fn policy(config: &Config) -> Policy {
    Policy {
        allowed_origins: config.allowed_origins.clone(),
        public_origins: config.public_origins.clone(),
        chat_require_origin: config.chat_require_origin,
        relay_require_origin: config.relay_require_origin,
        proxy_header: config.trusted_proxy_header.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        max_connections: config.max_connections as usize,
        max_connections_per_ip: config.max_connections_per_ip as usize,
    }
}

fn verifier(config: &Config, mode: AuthMode) -> anyhow::Result<Option<Verifier>> {
    match mode {
        AuthMode::Off => Ok(None),
        AuthMode::Required => Ok(Some(Verifier::new(
            config.auth_jwt_secret.as_deref(),
            config.auth_jwt_public_key.as_deref(),
            crate::auth::Binding {
                issuer: config.auth_jwt_issuer.clone(),
                audience: config.auth_jwt_audience.clone(),
            },
        )?)),
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn chat_limits(config: &Config, shutdown: &CancellationToken) -> chat::Limits {
    chat::Limits {
        socket: ws::Limits {
            max_message_bytes: config.max_message_bytes,
            keepalive: ws::Keepalive::start(config.ping_interval(), shutdown.clone()),
            coalesce: config.write_coalesce(),
            frames: Quota::per_second(nonzero(config.chat_rate_limit_per_sec))
                .allow_burst(nonzero(config.chat_rate_limit_burst)),
            bytes: None,
        },
        outbound_queue: config.outbound_queue as usize,
        renames: Quota::per_minute(nonzero(config.rename_limit_per_min)),
        joins: Quota::per_minute(nonzero(config.join_limit_per_min)),
        new_rooms: Quota::per_minute(nonzero(config.new_rooms_per_min)),
        actions: Quota::per_second(nonzero(config.chat_rate_limit_per_sec))
            .allow_burst(nonzero(config.chat_rate_limit_burst)),
    }
}

fn relay_limits(config: &Config, shutdown: &CancellationToken) -> ws::Limits {
    ws::Limits {
        max_message_bytes: config.max_message_bytes,
        keepalive: ws::Keepalive::start(config.ping_interval(), shutdown.clone()),
        coalesce: config.write_coalesce(),
        frames: Quota::per_second(nonzero(config.relay_rate_limit_per_sec))
            .allow_burst(nonzero(config.relay_rate_limit_burst)),
        bytes: Some(Quota::per_second(nonzero(config.relay_bytes_per_sec))),
    }
}

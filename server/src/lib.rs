//! The chat and action-relay server.
//!
//! - [`config`]: settings from flags, environment and `.env`.
//! - [`listener`]: listening sockets (SO_REUSEPORT for zero-downtime reloads).
//! - [`hub`]: this process's connections by topic, bounded queues, fan-out;
//!   [`kind`]: chat or relay.
//! - [`bus`]: delivery to the other instances (in-process, or Redis pub/sub),
//!   frames wrapped in an [`envelope`].
//! - [`stream`]: every room as a stream with positions (memory or Redis),
//!   and the per-room feeds that deliver it in order.
//! - [`store`]: presence, nicknames and relay registry (memory or Redis).
//! - [`membership`]: this instance's entries in Redis, kept alive and
//!   registered again when Redis lost them.
//! - [`counts`]: coalesced participant-count pushes.
//! - [`serve`]: the accept loop and each connection's HTTP life (limits at
//!   accept time, header timeout).
//! - [`guard`]: admission of a connection and of an upgrade: [`origin`]
//!   check, connection limits ([`capacity`], per [`client_ip`]).
//! - [`socket`]: one WebSocket's life: limits ([`throttle`]), keepalive,
//!   close handshake.
//! - [`auth`]: relay access tokens (JWT).
//! - [`chat`], [`relay`]: the two protocols; [`nickname`]: when two
//!   nicknames are the same to a reader.
//! - [`health`], [`metrics`]: `/healthz` and `/metrics`.
//! - [`supervise`]: restarts the background tasks the instance needs.
//! - [`logging`]: tracing subscriber, text or JSON.
//! - [`redis_client`]: the Redis client (TLS, credentials), the
//!   password-free form of its URL, and the link's status.

pub mod auth;
pub mod bus;
pub mod capacity;
pub mod chat;
pub mod client_ip;
pub mod config;
pub mod counts;
pub mod envelope;
pub mod guard;
pub mod health;
pub mod hub;
pub mod kind;
pub mod listener;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod nickname;
pub mod origin;
pub mod redis_client;
pub mod relay;
pub mod serve;
pub mod socket;
pub mod store;
pub mod stream;
pub mod supervise;
pub mod throttle;

use anyhow::Context;
use app::protocol::ServerEvent;
use axum::extract::ws::Utf8Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::routing::get;
use axum::Router;
use bus::{Backend, Bus};
use capacity::Capacity;
use config::Config;
use counts::Counts;
use guard::Guard;
use hub::Hub;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use metrics_exporter_prometheus::PrometheusHandle;
use redis_client::redact;
use redis_client::RedisStatus;
use serve::{serve, Door};
use socket::Limits;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{keys::Keys, RedisStore, Store};
use stream::{feed::Feeds, RedisStreams, Streams};
use supervise::Restarts;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use uuid::Uuid;

/// Everything the handlers share, behind one `Arc`.
pub struct AppState {
    pub config: Config,
    pub limits: Limits,
    /// Who may open a WebSocket, and how many are open.
    pub guard: Guard,
    /// This process's id in Redis and in bus envelopes.
    pub instance: Uuid,
    pub started: Instant,
    pub bus: Bus,
    pub store: Store,
    pub streams: Arc<Streams>,
    pub counts: Arc<Counts>,
    /// Cancelled on SIGTERM/SIGINT: every socket closes with 1012.
    pub shutdown: CancellationToken,
    /// Every WebSocket task, so shutdown can wait for their cleanup (axum's
    /// graceful shutdown does not wait for upgraded connections).
    pub tasks: TaskTracker,
    pub metrics: PrometheusHandle,
    /// Restarts of the supervised background tasks, for `/healthz`.
    pub restarts: Arc<Restarts>,
    /// Relay access tokens, when `RELAY_AUTH=required`.
    pub relay_auth: Option<auth::Verifier>,
    /// Chat access tokens, when `CHAT_AUTH=required`.
    pub chat_auth: Option<auth::Verifier>,
    /// Rooms opened per client address (`NEW_ROOMS_PER_MIN`).
    pub new_rooms: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
}

impl AppState {
    /// The participants of a room changed: recount here and everywhere.
    pub async fn presence_changed(&self, room: &str) {
        self.counts.mark(room);
        self.bus.presence_changed(room).await;
    }
}

/// Serializes a server event once; the bytes go to every recipient.
pub fn encode(event: &ServerEvent) -> Utf8Bytes {
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_string(event)
        .expect("server events serialize")
        .into()
}

/// The `id` of an encoded chat or system event, read without decoding the
/// rest of it.
pub fn event_id(frame: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<Uuid>,
    }
    serde_json::from_str::<Id>(frame).ok()?.id
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds the ports, serves until `shutdown` is cancelled, then drains:
/// closes every socket with 1012, waits for their cleanup (bounded by the
/// grace period) and removes this instance from Redis.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let http_addr = config.http_addr();
    let http = listener::bind(http_addr, config.reuse_port).with_context(|| {
        format!("cannot listen on {http_addr}: set PORT (or BIND) to a free port")
    })?;
    let relay = match config.relay_addr() {
        Some(addr) => Some(listener::bind(addr, config.reuse_port).with_context(|| {
            format!(
                "cannot listen on {addr}: set RELAY_PORT to a free port, or 0 to disable the relay"
            )
        })?),
        None => None,
    };
    let admin_addr = config.admin_addr();
    let admin = listener::bind(admin_addr, config.reuse_port).with_context(|| {
        format!("cannot listen on {admin_addr}: set ADMIN_PORT to a free port (one per instance on a host)")
    })?;
    let http_addr = http.local_addr()?;
    let relay_addr = relay.as_ref().map(TcpListener::local_addr).transpose()?;
    let admin_addr = admin.local_addr()?;

    let app = state(config, shutdown.clone()).await?;
    let redis = app.store.redis().cloned();
    tracing::info!(
        http = %http_addr,
        relay = relay_addr.map(|a| a.to_string()),
        admin = %admin_addr,
        instance = %app.instance,
        redis = app.config.redis_url.as_deref().map(redact),
        "listening"
    );

    let mut servers = tokio::task::JoinSet::new();
    let site = web_routes(&app, http_addr);
    servers.spawn(serve(http, site, door(&app, "public"), shutdown.clone()));
    // The admin port has places of its own: a flood on the public ports
    // does not keep monitoring out.
    let admin_door = Door {
        name: "admin",
        admit: Box::new({
            let capacity = Capacity::new(ADMIN_CONNECTIONS, ADMIN_CONNECTIONS);
            move |peer| capacity.acquire(peer)
        }),
        header_timeout: app.config.header_timeout(),
    };
    servers.spawn(serve(
        admin,
        admin_routes(&app),
        admin_door,
        shutdown.clone(),
    ));
    if let Some(relay) = relay {
        let relay_routes = Router::new()
            .fallback(get(relay::upgrade))
            .with_state(app.clone());
        servers.spawn(serve(
            relay,
            relay_routes,
            door(&app, "relay"),
            shutdown.clone(),
        ));
    }
    while let Some(result) = servers.join_next().await {
        result.context("server task failed")??;
    }

    // Everything below fits in the grace period.
    let deadline = Instant::now() + app.config.shutdown_grace();
    app.tasks.close();
    if tokio::time::timeout_at(deadline.into(), app.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = app.tasks.len(),
            "grace period over; closing the rest"
        );
    }
    if let Some(redis) = redis {
        leave_cluster(&app, &redis, deadline).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long closed clients get to reconnect to another instance and reclaim
/// their nickname before this instance's entries are removed.
const RECLAIM_WINDOW: Duration = Duration::from_secs(2);
/// Time kept for removing this instance from Redis.
const CLEANUP_TIME: Duration = Duration::from_secs(1);

/// Removes this instance's entries from Redis once its clients had a moment
/// to reconnect elsewhere; only those who did not are announced as gone.
/// Done by `deadline`, whatever Redis does.
async fn leave_cluster(app: &AppState, redis: &RedisStore, deadline: Instant) {
    let reclaim_until = (Instant::now() + RECLAIM_WINDOW).min(deadline - CLEANUP_TIME);
    tokio::time::sleep_until(reclaim_until.into()).await;
    let cleanup = async {
        let departed = app.store.depart(redis).await?;
        for (room, pseudo) in &departed {
            chat::announce_departure(app, room, pseudo).await;
        }
        Ok::<usize, ::redis::RedisError>(departed.len())
    };
    let until = deadline.max(Instant::now() + CLEANUP_TIME);
    match tokio::time::timeout_at(until.into(), cleanup).await {
        Ok(Ok(departed)) => tracing::info!(departed, "removed this instance from Redis"),
        _ => tracing::warn!("could not remove this instance from Redis; its entries expire"),
    }
}

/// Connections the admin port holds at once (scrapers, health checks).
const ADMIN_CONNECTIONS: usize = 64;

/// The public and relay ports share the instance's connection limits.
fn door(app: &Arc<AppState>, name: &'static str) -> Door {
    let app = app.clone();
    Door {
        name,
        header_timeout: app.config.header_timeout(),
        admit: Box::new(move |peer| app.guard.connect(peer)),
    }
}

async fn state(config: Config, shutdown: CancellationToken) -> anyhow::Result<Arc<AppState>> {
    let instance = Uuid::new_v4();
    let hub = Arc::new(Hub::default());
    let counts = Arc::new(Counts::default());
    let tasks = TaskTracker::new();
    let restarts = Arc::new(Restarts::default());
    let (backend, feeds, store, streams) = match &config.redis_url {
        None => {
            let memory = bus::memory::MemoryBus::default();
            supervise::spawn("memory-bus", restarts.clone(), shutdown.clone(), {
                let (memory, hub) = (memory.clone(), hub.clone());
                move || memory.clone().pump(instance, hub.clone())
            });
            let streams = Arc::new(Streams::memory());
            let feeds = Feeds::new(hub.clone(), streams.clone());
            (Backend::Memory(memory), feeds, Store::new(None), streams)
        }
        Some(url) => {
            let target = redis_client::Target::from_url(url, &config.redis_ca_cert).await?;
            match target {
                redis_client::Target::Single(_) => {
                    tracing::info!(redis = %redact(url), "using one Redis")
                }
                redis_client::Target::Cluster { .. } => {
                    tracing::info!(redis = %redact(url), "using a Redis Cluster (sharded pub/sub)")
                }
            }
            let keys = Keys::new(&config.redis_prefix);
            let status = Arc::new(RedisStatus::new(bus::redis::shard_count(&target)));
            let redis = RedisStore::new(
                target.commands()?,
                keys.clone(),
                instance,
                config.heartbeat_ttl(),
                status.clone(),
            );
            let streams = Arc::new(Streams::Redis(RedisStreams::new(
                redis.connection(),
                keys.clone(),
                instance,
                status.clone(),
            )));
            let feeds = Feeds::new(hub.clone(), streams.clone());
            let supervisor = bus::redis::Supervisor {
                target,
                address: redact(url),
                keys,
                instance,
                feeds: feeds.clone(),
                counts: counts.clone(),
                status,
                shutdown: shutdown.clone(),
                held: Default::default(),
            };
            let (bus, subscribers) = bus::redis::RedisBus::start(redis.connection(), supervisor);
            for subscriber in subscribers {
                supervise::spawn(
                    "redis-pubsub",
                    restarts.clone(),
                    shutdown.clone(),
                    move || subscriber.clone().run(),
                );
            }
            (Backend::Redis(bus), feeds, Store::new(Some(redis)), streams)
        }
    };
    let verifier = || {
        auth::Verifier::new(
            config.auth_jwt_secret.as_deref(),
            config.auth_jwt_public_key.as_deref(),
        )
    };
    let relay_auth = match config.relay_auth {
        config::AuthMode::Off => None,
        config::AuthMode::Required => Some(verifier()?),
    };
    let chat_auth = match config.chat_auth {
        config::AuthMode::Off => None,
        config::AuthMode::Required => Some(verifier()?),
    };
    let limits = Limits::from_config(&config);
    let app = Arc::new(AppState {
        relay_auth,
        chat_auth,
        new_rooms: governor::RateLimiter::keyed(limits.new_rooms),
        limits,
        guard: Guard::from_config(&config),
        config,
        instance,
        started: Instant::now(),
        bus: Bus::new(instance, feeds, backend),
        store,
        streams,
        counts,
        shutdown,
        tasks,
        metrics: metrics::install(),
        restarts: restarts.clone(),
    });
    supervise::spawn("stream-repairs", restarts.clone(), app.shutdown.clone(), {
        let feeds = app.bus.feeds().clone();
        move || feeds.clone().repair_loop()
    });
    supervise::spawn("counts", restarts.clone(), app.shutdown.clone(), {
        let app = app.clone();
        move || counts::run(app.clone())
    });
    if let Some(redis) = app.store.redis().cloned() {
        membership::start(app.clone(), redis).await;
    }
    Ok(app)
}

/// The private admin endpoints: metrics, and health for whoever monitors
/// the instance from inside.
fn admin_routes(app: &Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics_text))
        .route("/healthz", get(health::healthz))
        .with_state(app.clone())
}

/// The page (server-rendered Leptos app and its static files), the chat
/// socket, the relay on `/relay`, and health for load balancers. Metrics
/// are on the admin port only.
fn web_routes(app: &Arc<AppState>, addr: SocketAddr) -> Router {
    let options = leptos_options(&app.config, addr);
    // Rendering a page spawns tasks on Leptos's executor: tokio. (An error
    // only says it was set already: the tests start several servers.)
    let _ = any_spawner::Executor::init_tokio();
    // The chat page for `/` and `/r/<room>`; the page itself reads its room
    // from the URL.
    let page = leptos_axum::render_app_to_stream_with_context(
        {
            let options = options.clone();
            move || provide_context(options.clone())
        },
        {
            let options = options.clone();
            move || app::shell(options.clone())
        },
    );
    // Pages change with every release: always revalidated.
    let no_cache = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    let site = Router::new()
        .route("/", get(page.clone()))
        .route("/r/{room}", get(page))
        .layer(no_cache)
        // The pages are rendered per request: compressed on the way out.
        .layer(CompressionLayer::new())
        // The site's other files (the icon); anything else is not found.
        .fallback_service(
            ServeDir::new(options.site_root.as_ref()).not_found_service(get(not_found)),
        );
    Router::new()
        .route("/ws", get(chat::upgrade))
        .route("/relay", get(relay::upgrade))
        .route("/healthz", get(health::healthz))
        .with_state(app.clone())
        .nest_service("/pkg", static_files(&options))
        .merge(site)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Page not found.")
}

/// The WASM, JS and CSS: the build's brotli or gzip copy when the browser
/// takes it (`cargo leptos build --release --precompress` writes them), and
/// cached for a year when their names carry a content hash.
fn static_files(options: &LeptosOptions) -> Router {
    let dir = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let cache = if options.hash_files {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Router::new()
        .fallback_service(ServeDir::new(dir).precompressed_br().precompressed_gzip())
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache),
        ))
}

/// Under `cargo leptos watch` the Leptos settings (live-reload port, ...)
/// come from its environment; a plain run uses the built site's layout.
fn leptos_options(config: &Config, addr: SocketAddr) -> LeptosOptions {
    let from_cargo_leptos = std::env::var_os("LEPTOS_OUTPUT_NAME")
        .and_then(|_| leptos::config::get_configuration(None).ok())
        .map(|conf| conf.leptos_options);
    let mut options =
        from_cargo_leptos.unwrap_or_else(|| LeptosOptions::builder().output_name("chat").build());
    options.site_root = config.site_root.as_str().into();
    options.site_addr = addr;
    // A release build names its files with their hashes, listed in a file
    // next to the binary; pages must then link those names.
    let hashes = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(options.hash_file.as_ref())));
    options.hash_files = hashes.is_some_and(|file| file.exists());
    let plain_js = std::path::Path::new(options.site_root.as_ref())
        .join(options.site_pkg_dir.as_ref())
        .join(format!("{}.js", options.output_name));
    if !options.hash_files && !plain_js.exists() {
        tracing::warn!(
            site = %options.site_root,
            "no {} next to the server binary, and no unhashed files in the site: \
             pages will not load their script; copy the build's hash file along with the binary",
            options.hash_file
        );
    }
    options
}

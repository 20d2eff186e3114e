//! Settings, from command-line flags or environment variables (a `.env` file
//! in the working directory is read first, without overriding the real
//! environment). `clap` gives every option its variable, default and `--help`
//! text in one place; `.env.example` documents the same list.

use crate::admission::client_ip::{parse_net, ProxyHeader};
use crate::admission::origin::AllowedOrigin;
use crate::admission::InvalidSetting;
use crate::broker::retention::{MaxAge, Retention};
use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "server",
    version,
    about = "Real-time chat and WebSocket action relay, scaled out through Redis"
)]
pub struct Config {
    /// Address the public ports (chat, relay) listen on.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port of the web chat (page, /ws, /relay, /healthz). 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 4100)]
    pub port: u16,

    /// Port of the plain WebSocket action relay (any path). 0 disables it.
    #[arg(long, env = "RELAY_PORT", default_value_t = 8080)]
    pub relay_port: u16,

    /// Port of the admin endpoints (/metrics, /healthz): give each instance on a host its own. 0 picks a free port.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 9100)]
    pub admin_port: u16,

    /// Address the admin port listens on: keep it private (default: this machine only).
    #[arg(long, env = "ADMIN_BIND", default_value = "127.0.0.1")]
    pub admin_bind: IpAddr,

    /// Names the admin port answers to besides IP addresses and localhost, comma-separated (e.g. the name a proxy or a monitoring system uses); requests naming it otherwise are refused (DNS rebinding).
    #[arg(long, env = "ADMIN_HOSTS", value_delimiter = ',')]
    pub admin_hosts: Vec<String>,

    /// Key of the server API on the admin port (`Authorization: apikey <key>`), at least 16 characters. Unset: the API answers callers on this machine only, and ADMIN_BIND must be a loopback address.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Backend address the room events and relay registrations are POSTed to, one event per request, at least once, in order per room (docs/api.md). Unset: no webhooks.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Key of the webhooks' HMAC-SHA256 signature (X-Webhook-Signature: t=<unix time>,v1=<hex HMAC of "<t>.<body>">), at least 16 characters; required with WEBHOOK_URL.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Directory where the embedded default (no REDIS_URL) keeps its rooms on disk, in one file (rooms.redb): history, moderation and slow mode survive restarts and reloads. memory keeps them in the process only (gone at a restart: for tests).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: String,

    /// A room's events older than this are trimmed (30d, 12h, 90s...; forever keeps them): catch-up, scroll-back and webhooks read what is retained.
    #[arg(long, env = "HISTORY_MAX_AGE", default_value = "30d", value_parser = crate::broker::retention::parse_age)]
    pub history_max_age: MaxAge,

    /// A room keeps at most this many of its newest events. Unset: no count limit on the embedded default (the disk holds them), 1000 with Redis (its memory holds them).
    #[arg(long, env = "HISTORY_MAX_EVENTS", value_parser = clap::value_parser!(u64).range(100..))]
    pub history_max_events: Option<u64>,

    /// Redis to scale out through, e.g. redis://127.0.0.1:6379, or rediss://user:password@host:6380 for TLS and an ACL user; a Redis Cluster: one node, or several comma-separated (found by itself). Unset: embedded single-instance mode.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// CA certificate (PEM file) that signed the Redis server's certificate, for rediss:// URLs. system = the machine's trusted roots.
    #[arg(long, env = "REDIS_CA_CERT", default_value = "system")]
    pub redis_ca_cert: String,

    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,

    /// Seconds an instance's entries live in Redis without a refresh; a dead instance's clients are removed after it.
    #[arg(long, env = "HEARTBEAT_TTL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub heartbeat_ttl_secs: u64,

    /// Largest WebSocket message accepted, in bytes (larger ones are closed with code 1009).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Frames waiting to be written to one client; a client this far behind is disconnected.
    /// Room for a burst (a thousand people joining at once is a thousand frames).
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub outbound_queue: u64,

    /// Chat: messages per second one connection, and one person across their connections, may send, on average (sized for people).
    #[arg(long, env = "CHAT_RATE_LIMIT_PER_SEC", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_rate_limit_per_sec: u32,

    /// Chat: messages one connection may send in a burst above the average rate.
    #[arg(long, env = "CHAT_RATE_LIMIT_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_rate_limit_burst: u32,

    /// Relay: messages per second one connection may send, on average (sized for programs: telemetry, game state, sensors).
    #[arg(long, env = "RELAY_RATE_LIMIT_PER_SEC", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_rate_limit_per_sec: u32,

    /// Relay: messages one connection may send in a burst above the average rate.
    #[arg(long, env = "RELAY_RATE_LIMIT_BURST", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_rate_limit_burst: u32,

    /// Relay: bytes per second one connection may send, on average; also its burst (at least MAX_MESSAGE_BYTES).
    #[arg(long, env = "RELAY_BYTES_PER_SEC", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_bytes_per_sec: u32,

    /// Nickname changes one person (token subject or anonymous session) may make per minute, across their connections (also the burst).
    #[arg(long, env = "RENAME_LIMIT_PER_MIN", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub rename_limit_per_min: u32,

    /// Join attempts one person (token subject or anonymous session) may make per minute, across their connections and reconnects (also the burst).
    #[arg(long, env = "JOIN_LIMIT_PER_MIN", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub join_limit_per_min: u32,

    /// Rooms one client address may open per minute (be the first to join a room with nobody in it), so that nobody floods the room list.
    #[arg(long, env = "NEW_ROOMS_PER_MIN", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub new_rooms_per_min: u32,

    /// Pages allowed to open WebSockets (chat and relay), comma-separated: self (the page's own host), https://host[:port], or * (any site).
    #[arg(long, env = "ALLOWED_ORIGINS", default_value = "self", value_delimiter = ',', value_parser = AllowedOrigin::parse)]
    pub allowed_origins: Vec<AllowedOrigin>,

    /// The origins this server is reached at (https://chat.example.com, comma-separated): "self" in ALLOWED_ORIGINS means these, localhost and IP addresses; a browser's socket addressed to any other name is refused (DNS rebinding).
    #[arg(long, env = "PUBLIC_ORIGINS", value_delimiter = ',', value_parser = public_origin)]
    pub public_origins: Vec<AllowedOrigin>,

    /// Refuse chat sockets without an Origin header (browsers always send one; other programs may not).
    #[arg(long, env = "CHAT_REQUIRE_ORIGIN", default_value_t = false, action = clap::ArgAction::Set)]
    pub chat_require_origin: bool,

    /// Refuse relay sockets without an Origin header.
    #[arg(long, env = "RELAY_REQUIRE_ORIGIN", default_value_t = false, action = clap::ArgAction::Set)]
    pub relay_require_origin: bool,

    /// Relay access tokens: off (anybody may register any action, as the original) or required (a JWT in the registration's "token" or an Authorization: Bearer header).
    #[arg(long, env = "RELAY_AUTH", default_value = "off")]
    pub relay_auth: AuthMode,

    /// Chat access tokens: off (anonymous chat) or required (a JWT in the socket URL's ?token=; its name claim is the nickname, its rooms claim limits the rooms).
    #[arg(long, env = "CHAT_AUTH", default_value = "off")]
    pub chat_auth: AuthMode,

    /// Secret for HS256 access tokens.
    #[arg(long, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,

    /// PEM file with the public key for RS256, ES256 or EdDSA access tokens.
    #[arg(long, env = "AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<std::path::PathBuf>,

    /// Access tokens must carry this iss claim (unset: not checked).
    #[arg(long, env = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// Access tokens must carry this aud claim (unset: not checked).
    #[arg(long, env = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// TCP connections (HTTP and WebSocket, public and relay ports) open at once on this instance; more are refused with HTTP 503 as they are accepted.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// TCP connections open at once from one client address (IPv6: one /64); more are refused with HTTP 429 as they are accepted. Behind a TRUSTED_PROXIES proxy, its WebSockets count per forwarded address instead.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// Header in which a reverse proxy passes the client's address (e.g. X-Forwarded-For; the right-most address counts), believed only from TRUSTED_PROXIES. none = the TCP peer address.
    #[arg(long, env = "TRUSTED_PROXY_HEADER", default_value = "none", value_parser = ProxyHeader::parse)]
    pub trusted_proxy_header: ProxyHeader,

    /// Addresses or CIDR ranges of the reverse proxies whose TRUSTED_PROXY_HEADER is believed, comma-separated.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "127.0.0.1,::1", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,

    /// Seconds a connection gets to send a request's headers; an idle keep-alive connection is closed after as long.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout_secs: u64,

    /// Seconds between keepalive pings; a client silent for two intervals is dropped.
    #[arg(long, env = "PING_INTERVAL_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_interval_secs: u64,

    /// Milliseconds a connection's writes are held apart while frames trickle in, so that several leave in one packet (0: every frame at once).
    #[arg(long, env = "WRITE_COALESCE_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub write_coalesce_ms: u64,

    /// Seconds a SIGTERM/SIGINT waits for connections to close before exiting.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Let a new process bind the same port while the old one drains (zero-downtime reload).
    #[arg(long, env = "REUSE_PORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub reuse_port: bool,

    /// Where the built site (pkg/ with the WASM, JS and CSS) is, relative to the working directory.
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: String,

    /// Log format: text for people, json for log pipelines. Level from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Off,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One entry of `PUBLIC_ORIGINS`: an exact origin only.
fn public_origin(value: &str) -> Result<AllowedOrigin, InvalidSetting> {
    match AllowedOrigin::parse(value)? {
        exact @ AllowedOrigin::Exact(_) => Ok(exact),
        _ => Err(InvalidSetting::PublicOrigin(value.to_owned())),
    }
}

mod validate;

/// Events a room keeps in Redis by default: about 0.4 MB of Redis memory per
/// room of 200-character messages (docs/scaling.md).
const REDIS_MAX_EVENTS: u64 = 1000;

pub use validate::ConfigError;

impl Config {
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.admin_bind, self.admin_port)
    }

    pub fn relay_addr(&self) -> Option<SocketAddr> {
        (self.relay_port != 0).then(|| SocketAddr::new(self.bind, self.relay_port))
    }

    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_secs(self.heartbeat_ttl_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    pub fn write_coalesce(&self) -> Duration {
        Duration::from_millis(self.write_coalesce_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// What rooms keep: with Redis, 1000 events unless told otherwise.
    pub fn retention(&self) -> Retention {
        let redis_default = self.redis_url.as_ref().map(|_| REDIS_MAX_EVENTS);
        Retention {
            max_age: self.history_max_age.0,
            max_events: self.history_max_events.or(redis_default),
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("server").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_the_original() {
        let c = parse(&[]);
        assert_eq!(c.port, 4100);
        assert_eq!(c.relay_port, 8080);
        assert_eq!(c.bind.to_string(), "0.0.0.0");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let c = parse(&["--redis-url", "nope://x"]);
        assert!(c.validate().unwrap_err().to_string().contains("REDIS_URL"));
        let c = parse(&[
            "--redis-url",
            "redis://u:secret@h:1",
            "--redis-ca-cert",
            "ca.pem",
        ]);
        let error = c.validate().unwrap_err().to_string();
        assert!(
            error.contains("REDIS_CA_CERT") && !error.contains("secret"),
            "{error}"
        );
        let c = parse(&["--redis-url", "rediss://h:1/#insecure"]);
        assert!(c.validate().unwrap_err().to_string().contains("#insecure"));
        let c = parse(&["--redis-prefix", "a b"]);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("REDIS_PREFIX"));
        let c = parse(&["--port", "9000", "--relay-port", "9000"]);
        assert!(c.validate().unwrap_err().to_string().contains("RELAY_PORT"));
        assert!(Config::try_parse_from(["server", "--port", "x"]).is_err());
        for (flag, bad) in [
            ("--allowed-origins", "chat.example.com"),
            ("--allowed-origins", "https://chat.example.com/path"),
            ("--trusted-proxy-header", "bad header"),
            ("--trusted-proxies", "10.0.0.0/99"),
        ] {
            assert!(
                Config::try_parse_from(["server", flag, bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bad_redis_url_is_reported_without_its_password() {
        // Parses as a URL, but the database number is not a number.
        let c = parse(&["--redis-url", "redis://user:hunter2@h:1/x"]);
        let error = c.validate().unwrap_err().to_string();
        assert!(error.contains("REDIS_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

//! Settings, from command-line flags or environment variables (a `.env` file
//! in the working directory is read first, without overriding the real
//! environment). `clap` gives every option its variable, default and `--help`
//! text in one place; `.env.example` documents the same list.

use clap::{Parser, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "server",
    version,
    about = "Real-time chat and WebSocket action relay, scaled out through Redis"
)]
pub struct Config {
    /// Address to listen on (both ports).
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,

    /// Port of the web chat (page, /ws, /relay, /healthz, /metrics). 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 4100)]
    pub port: u16,

    /// Port of the plain WebSocket action relay (any path). 0 disables it.
    #[arg(long, env = "RELAY_PORT", default_value_t = 8080)]
    pub relay_port: u16,

    /// Redis to scale out through, e.g. redis://127.0.0.1:6379. Unset: embedded single-instance mode.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,

    /// Seconds an instance's heartbeat lives in Redis; a dead instance's clients are swept after it.
    #[arg(long, env = "HEARTBEAT_TTL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub heartbeat_ttl_secs: u64,

    /// Largest WebSocket message accepted, in bytes (larger ones are closed with code 1009).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    pub max_message_bytes: u64,

    /// Frames waiting to be written to one client; a client this far behind is disconnected.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub outbound_queue: u64,

    /// Messages per second one connection may send, on average.
    #[arg(long, env = "RATE_LIMIT_PER_SEC", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_sec: u32,

    /// Messages one connection may send in a burst above the average rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,

    /// Seconds between keepalive pings; a client silent for two intervals is dropped.
    #[arg(long, env = "PING_INTERVAL_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_interval_secs: u64,

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
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Checks what clap cannot: returns the message naming the setting to fix.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.as_str())
                .map_err(|e| format!("REDIS_URL {url:?} is not a valid Redis URL: {e}"))?;
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !prefix_ok {
            return Err(format!(
                "REDIS_PREFIX {:?} must be non-empty letters, digits, '-', '_' or '.'",
                self.redis_prefix
            ));
        }
        if self.relay_port != 0 && self.relay_port == self.port {
            return Err(format!(
                "RELAY_PORT and PORT are both {}: give the relay its own port, or 0 to disable it",
                self.port
            ));
        }
        Ok(())
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
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
        assert!(c.validate().unwrap_err().contains("REDIS_URL"));
        let c = parse(&["--redis-prefix", "a b"]);
        assert!(c.validate().unwrap_err().contains("REDIS_PREFIX"));
        let c = parse(&["--port", "9000", "--relay-port", "9000"]);
        assert!(c.validate().unwrap_err().contains("RELAY_PORT"));
        assert!(Config::try_parse_from(["server", "--port", "x"]).is_err());
    }
}

//! The Redis client from `REDIS_URL` (plain `redis://`, or `rediss://` over
//! TLS, with an optional password or ACL user) and `REDIS_CA_CERT`, and the
//! URL's printable form: the password never reaches a log line or an error;
//! and the link's status, as the tasks that use it see it.

use crate::metrics;
use anyhow::Context;
use redis::{Client, TlsCertificates};
use std::sync::atomic::{AtomicBool, Ordering};

/// A client for `url`; over TLS, the server's certificate must chain to
/// `ca_cert` (a PEM file), or to the machine's trusted roots for `system`.
pub fn client(url: &str, ca_cert: &str) -> anyhow::Result<Client> {
    let plain =
        Client::open(url).with_context(|| format!("REDIS_URL {} is invalid", redact(url)))?;
    if !matches!(
        plain.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    ) {
        return Ok(plain);
    }
    // rustls needs a crypto provider chosen once per process; an error
    // only means one is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root_cert = match ca_cert {
        "system" => None,
        path => {
            Some(std::fs::read(path).with_context(|| format!("cannot read REDIS_CA_CERT {path}"))?)
        }
    };
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert,
    };
    Client::build_with_tls(url, certificates).with_context(|| {
        format!(
            "cannot set up TLS for REDIS_URL {} (is REDIS_CA_CERT a PEM certificate?)",
            redact(url)
        )
    })
}

/// The URL without its password or query (which may carry one, as in
/// `redis+unix:///s?pass=...`), for logs and errors. The user name stays:
/// it tells which ACL user was tried.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let shown = match authority.rsplit_once('@') {
        // A password may hold '@' or ':' unescaped: cut at the last '@'
        // and keep what precedes the first ':' as the user.
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    if scheme.is_empty() {
        format!("{shown}{path}")
    } else {
        format!("{scheme}://{shown}{path}")
    }
}

/// The two halves of the Redis link, set by the tasks that use them.
pub struct RedisStatus {
    pubsub: AtomicBool,
    commands: AtomicBool,
    /// A change was made locally only: Redis must be resynced.
    stale: AtomicBool,
}

impl Default for RedisStatus {
    /// Commands are presumed to work until one fails, so that the first
    /// clients are registered in Redis rather than locally; pub/sub is down
    /// until its connection is made.
    fn default() -> Self {
        RedisStatus {
            pubsub: AtomicBool::new(false),
            commands: AtomicBool::new(true),
            stale: AtomicBool::new(false),
        }
    }
}

impl RedisStatus {
    pub fn set_pubsub(&self, up: bool) {
        self.pubsub.store(up, Ordering::Relaxed);
        metrics::redis_up(self.is_up());
    }

    pub fn set_commands(&self, up: bool) {
        self.commands.store(up, Ordering::Relaxed);
        metrics::redis_up(self.is_up());
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// True (once) if a change was made locally only since the last call.
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::Relaxed)
    }

    pub fn commands_up(&self) -> bool {
        self.commands.load(Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.pubsub.load(Ordering::Relaxed) && self.commands.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_wherever_they_are() {
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(
            redact("rediss://alice:p@ss:w@h:1"),
            "rediss://alice:***@h:1"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&pass=pw"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redact("rediss://h:1/#insecure"), "rediss://h:1/");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = super::client("rediss://:pw@127.0.0.1:1", "/nonexistent/ca.pem").unwrap_err();
        let error = format!("{error:#}");
        assert!(error.contains("REDIS_CA_CERT"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
    }
}

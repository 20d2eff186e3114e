//! What clap cannot check: settings that are well-formed one by one but
//! cannot work together, or that would be ignored in silence.

use super::Config;
use crate::broker::redis::client::redact;

/// A setting that cannot work, in a message that names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_owned())
    }
}

impl Config {
    /// Checks what clap cannot; the error names the setting to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_redis()?;
        self.validate_retired()?;
        if u64::from(self.relay_bytes_per_sec) < self.max_message_bytes {
            return Err(ConfigError(format!(
                "RELAY_BYTES_PER_SEC ({}) must be at least MAX_MESSAGE_BYTES ({}): \
                 a message of the largest size must fit in one second's budget",
                self.relay_bytes_per_sec, self.max_message_bytes
            )));
        }
        self.validate_api()?;
        self.validate_webhook()?;
        self.validate_ports()
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.redis_url else {
            if self.redis_ca_cert != "system" {
                return Err(ConfigError::from(
                    "REDIS_CA_CERT is set, but REDIS_URL is not",
                ));
            }
            return self.validate_prefix();
        };
        // Several nodes, comma-separated, for a Redis Cluster.
        let mut tls = false;
        let mut insecure = false;
        for node in url.split(',').map(str::trim) {
            // Never the whole URL: it may hold a password.
            let node_info = redis::Client::open(node).map_err(|e| {
                ConfigError(format!(
                    "REDIS_URL {} is not a valid Redis URL: {e}",
                    redact(node)
                ))
            })?;
            if let redis::ConnectionAddr::TcpTls {
                insecure: no_check, ..
            } = node_info.get_connection_info().addr()
            {
                tls = true;
                insecure |= *no_check;
            }
        }
        if insecure {
            return Err(ConfigError::from(
                "REDIS_URL: #insecure (no certificate check) is not supported; \
                 give a private CA in REDIS_CA_CERT",
            ));
        }
        if self.redis_ca_cert != "system" && !tls {
            return Err(ConfigError::from(
                "REDIS_CA_CERT is set, but REDIS_URL is not a rediss:// (TLS) URL",
            ));
        }
        self.validate_prefix()
    }

    fn validate_prefix(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.redis_prefix.is_empty()
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if prefix_ok {
            return Ok(());
        }
        Err(ConfigError(format!(
            "REDIS_PREFIX {:?} must be non-empty letters, digits, '-', '_' or '.'",
            self.redis_prefix
        )))
    }

    /// Settings of older versions that would now be ignored in silence.
    fn validate_retired(&self) -> Result<(), ConfigError> {
        for (old, new) in [
            (
                "RATE_LIMIT_PER_SEC",
                "CHAT_RATE_LIMIT_PER_SEC and RELAY_RATE_LIMIT_PER_SEC",
            ),
            (
                "RATE_LIMIT_BURST",
                "CHAT_RATE_LIMIT_BURST and RELAY_RATE_LIMIT_BURST",
            ),
        ] {
            if std::env::var_os(old).is_some() {
                return Err(ConfigError(format!(
                    "{old} is no longer read: the chat and the relay have their own limits, {new}"
                )));
            }
        }
        Ok(())
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.webhook_url else {
            return Ok(());
        };
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(url).is_err() {
            return Err(ConfigError(format!(
                "WEBHOOK_URL {url:?} must be an http:// or https:// address"
            )));
        }
        match &self.webhook_secret {
            Some(secret) if secret.chars().count() >= 16 => Ok(()),
            _ => Err("WEBHOOK_SECRET (at least 16 characters) is required with WEBHOOK_URL: the backend checks each request's signature with it".into()),
        }
    }

    fn validate_api(&self) -> Result<(), ConfigError> {
        match &self.api_key {
            Some(key) if key.chars().count() < 16 => {
                Err("API_KEY must be at least 16 characters: it is all that guards the server API".into())
            }
            None if !self.admin_bind.is_loopback() => Err(ConfigError(format!(
                "ADMIN_BIND {} is reachable from other machines but API_KEY is unset: set API_KEY, or keep the admin port on a loopback address",
                self.admin_bind
            ))),
            _ => Ok(()),
        }
    }

    fn validate_ports(&self) -> Result<(), ConfigError> {
        if self.admin_port != 0
            && self.admin_bind == self.bind
            && [self.port, self.relay_port].contains(&self.admin_port)
        {
            return Err(ConfigError(format!(
                "ADMIN_PORT {} is also PORT or RELAY_PORT: give the admin endpoints their own port",
                self.admin_port
            )));
        }
        if self.relay_port != 0 && self.relay_port == self.port {
            return Err(ConfigError(format!(
                "RELAY_PORT and PORT are both {}: give the relay its own port, or 0 to disable it",
                self.port
            )));
        }
        Ok(())
    }
}

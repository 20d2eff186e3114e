//! The Redis client from `REDIS_URL` (plain `redis://`, or `rediss://` over
//! TLS, with an optional password or ACL user) and `REDIS_CA_CERT`: one
//! standalone Redis, or a Redis Cluster (found by asking the node, or
//! because the URL lists several nodes); the URL's printable form (the
//! password never reaches a log line or an error).

use anyhow::Context;
use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, ProtocolVersion, RedisFuture, TlsCertificates, Value};
use std::sync::Arc;
use std::time::Duration;

/// Bounds on every command, so that an outage fails fast instead of
/// stalling clients.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where REDIS_URL leads.
// Built once per process: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Target {
    Single(Client),
    Cluster {
        commands: ClusterClient,
        pubsub: ClusterClient,
    },
}

impl Target {
    /// A cluster when REDIS_URL lists several nodes (comma-separated) or
    /// when its one node says `cluster_enabled:1`. A single node that does
    /// not answer at start is taken for a standalone Redis: the server
    /// starts without it, and serves alone until it answers.
    pub async fn from_url(url: &str, ca_cert: &str) -> anyhow::Result<Target> {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        let mut clients = Vec::new();
        for node in &nodes {
            clients.push(client(node, ca_cert)?);
        }
        if nodes.len() == 1 && !cluster_enabled(&clients[0]).await {
            return Ok(Target::Single(clients.remove(0)));
        }
        let cluster = |protocol| -> anyhow::Result<ClusterClient> {
            let mut builder = ClusterClientBuilder::new(nodes.iter().copied())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .use_protocol(protocol);
            if let Some(root_cert) = ca_file(ca_cert, url)? {
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                });
            }
            builder.build().with_context(|| {
                format!(
                    "REDIS_URL {} is not a valid list of Redis Cluster nodes \
                     (they must share one password and one scheme)",
                    redact(url)
                )
            })
        };
        Ok(Target::Cluster {
            commands: cluster(ProtocolVersion::RESP2)?,
            // Sharded subscriptions deliver their messages as RESP3 pushes.
            pubsub: cluster(ProtocolVersion::RESP3)?,
        })
    }

    /// The connection for commands: connects on first use and reconnects
    /// by itself, so an unreachable Redis at start does not stop the server.
    pub fn commands(&self) -> anyhow::Result<Commands> {
        Ok(match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Commands::Single(
                    ConnectionManager::new_lazy_with_config(client.clone(), config)
                        .context("cannot set up the Redis connection (REDIS_URL)")?,
                )
            }
            Target::Cluster { commands, .. } => {
                Commands::Cluster(Arc::new(ClusterCommands::new(commands.clone())))
            }
        })
    }
}

async fn cluster_enabled(client: &Client) -> bool {
    let info = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
    })
    .await;
    matches!(info, Ok(Ok(info)) if info.contains("cluster_enabled:1"))
}

/// One connection for commands, whichever kind of Redis: the code that
/// uses it reads the same for both.
#[derive(Clone)]
pub enum Commands {
    Single(ConnectionManager),
    Cluster(Arc<ClusterCommands>),
}

impl Commands {
    /// Replaces the cluster connection with a new one, which finds the
    /// cluster from the nodes in REDIS_URL on its first command (a
    /// connection to one Redis reconnects by itself).
    ///
    /// redis-rs (1.8, and 2.0's release candidates) can lose its way: when
    /// none of the nodes it listed after a slot refresh answered (a whole
    /// cluster restarted, its nodes going down one after the other during
    /// the refresh), its map of nodes is empty, and from then on it only
    /// refreshes the slots from that empty map, in a busy loop, and never
    /// asks the nodes it was given. Only a new connection gets out of it.
    pub fn renew(&self) {
        if let Commands::Cluster(cluster) = self {
            *cluster.current.write() = connect(&cluster.client);
        }
    }
}

/// The cluster connection in use, replaceable (see [`Commands::renew`]):
/// each command takes the current one, so the replaced connection and its
/// task end once its commands in flight are answered.
pub struct ClusterCommands {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
}

impl ClusterCommands {
    fn new(client: ClusterClient) -> Self {
        let current = RwLock::new(connect(&client));
        ClusterCommands { client, current }
    }

    fn current(&self) -> ClusterConnection {
        self.current.read().clone()
    }
}

/// Connects on first use, so an unreachable cluster does not hold anything up.
fn connect(client: &ClusterClient) -> ClusterConnection {
    client.get_pending_async_connection_with_config(
        ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT),
    )
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(conn) => conn.req_packed_command(cmd),
            Commands::Cluster(cluster) => {
                let mut conn = cluster.current();
                Box::pin(async move { conn.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(cluster) => {
                let mut conn = cluster.current();
                Box::pin(async move { conn.req_packed_commands(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(conn) => conn.get_db(),
            Commands::Cluster(cluster) => cluster.current().get_db(),
        }
    }
}

/// Sharded pub/sub in a Redis Cluster (delivered by the channel's shard
/// alone), plain pub/sub on one Redis.
pub fn publish_command(conn: &Commands) -> &'static str {
    match conn {
        Commands::Single(_) => "PUBLISH",
        Commands::Cluster(_) => "SPUBLISH",
    }
}

/// The CA certificate to trust for `rediss://`, unless it is the system's.
fn ca_file(ca_cert: &str, url: &str) -> anyhow::Result<Option<Vec<u8>>> {
    if ca_cert == "system" || !url.trim_start().starts_with("rediss://") {
        return Ok(None);
    }
    std::fs::read(ca_cert)
        .map(Some)
        .with_context(|| format!("cannot read REDIS_CA_CERT {ca_cert}"))
}

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
    let root_cert = ca_file(ca_cert, url)?;
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
    url.split(',')
        .map(|node| redact_node(node.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_node(url: &str) -> String {
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
        assert_eq!(
            redact("redis://:a@h:1, redis://:b@h:2"),
            "redis://:***@h:1,redis://:***@h:2"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let error = super::client("rediss://:pw@127.0.0.1:1", "/nonexistent/ca.pem").unwrap_err();
        let error = format!("{error:#}");
        assert!(error.contains("REDIS_CA_CERT"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
    }
}

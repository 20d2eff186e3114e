//! Serving a listening socket: the accept loop and each connection's
//! HTTP/1.1 life. Limits are applied before a byte is read, so that one
//! client cannot take the process's open files (slowloris):
//!
//! - every TCP connection takes a place ([`capacity`](crate::admission::capacity)) as
//!   it is accepted and keeps it as long as its socket is open, upgraded to
//!   a WebSocket or not; a connection without a place gets a one-line HTTP
//!   refusal and is closed;
//! - request headers must arrive within `HEADER_TIMEOUT_SECS`; hyper starts
//!   that timer again while a keep-alive connection waits for its next
//!   request, so idle connections are closed after as long;
//! - when accepting fails for want of files or memory, the loop waits
//!   (growing up to a second) instead of spinning, and says so once.
//!
//! HTTP/2 is not served: browsers speak it only over TLS, which a reverse
//! proxy in front ends.

use crate::admission::capacity::{Full, Slot};
use crate::metrics;
use crate::ws::Tcp;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How one listener admits and times its connections.
pub struct Door {
    /// `public`, `relay` or `admin`, for logs and metrics.
    pub name: &'static str,
    /// A place for a connection from this address, or why there is none.
    pub admit: Box<dyn Fn(IpAddr) -> Result<Slot, Full> + Send + Sync>,
    pub header_timeout: Duration,
}

/// Refused connections being closed politely at once; past this many, the
/// rest are dropped without a word.
const REFUSALS_AT_ONCE: usize = 256;
/// How long a refused connection may take to read its refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// The longest wait between two accepts when the process is out of files.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `routes` on `listener` until `shutdown`, then stops accepting and
/// waits for the connections in flight to finish their requests (upgraded
/// sockets are the handlers' to close).
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    door: Door,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let door = Arc::new(door);
    let connections = TaskTracker::new();
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut failing = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                failing.recovered(door.name);
                accepted
            }
            Err(err) => {
                if let Some(pause) = failing.failed(door.name, &err) {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                continue;
            }
        };
        match (door.admit)(peer.ip()) {
            Ok(slot) => {
                // Frames are batched by the writer already: Nagle's wait for
                // the peer's (delayed) ACK would only add up to 40 ms.
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(port = door.name, %peer, error = %err, "cannot set TCP_NODELAY");
                }
                let held = Tcp { stream, slot };
                connections.spawn(connection(
                    held,
                    peer,
                    routes.clone(),
                    door.clone(),
                    shutdown.clone(),
                ));
            }
            Err(full) => {
                metrics::connection_refused(door.name, full.label());
                tracing::debug!(port = door.name, %peer, reason = full.label(), "connection refused");
                refuse(stream, full, &refusals);
            }
        }
    }
    // A reloaded process on the same port takes the new connections.
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn connection(
    stream: Tcp,
    peer: SocketAddr,
    routes: Router,
    door: Arc<Door>,
    shutdown: CancellationToken,
) {
    // Handlers read the peer address (`ConnectInfo`) as with `axum::serve`.
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(routes.clone(), request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(door.header_timeout);
    let mut serving = pin!(http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades());
    let result = tokio::select! {
        result = serving.as_mut() => result,
        () = shutdown.cancelled() => {
            serving.as_mut().graceful_shutdown();
            serving.await
        }
    };
    if let Err(err) = result {
        // Timeouts and resets are the client's business.
        tracing::debug!(port = door.name, %peer, %err, "connection ended");
    }
}

/// Writes the refusal and closes; the client's request, if any, is read and
/// thrown away first, or the kernel would answer it with a reset that may
/// overtake the refusal.
fn refuse(stream: TcpStream, full: Full, refusals: &Arc<Semaphore>) {
    let status = match full {
        Full::Instance => "503 Service Unavailable",
        Full::Address => "429 Too Many Requests",
    };
    let reason = full.reason();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    );
    // A fresh socket's send buffer is empty: the refusal fits at once.
    if stream.try_write(response.as_bytes()).is_err() {
        return;
    }
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        drop(permit);
    });
}

/// Consecutive accept failures: said once, waited on with a growing pause.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
}

impl AcceptFailures {
    /// How long to wait before the next accept, if at all.
    fn failed(&mut self, port: &str, err: &io::Error) -> Option<Duration> {
        // A client that gave up between its handshake and our accept.
        if matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return None;
        }
        self.count += 1;
        if self.count == 1 {
            tracing::error!(
                port,
                %err,
                "cannot accept connections (out of open files or memory?); \
                 waiting, and accepting again as soon as some close"
            );
        }
        let exponent = self.count.min(7) as u32;
        Some((Duration::from_millis(8) * 2u32.pow(exponent)).min(MAX_ACCEPT_BACKOFF))
    }

    fn recovered(&mut self, port: &str) {
        if self.count > 0 {
            tracing::warn!(port, failures = self.count, "accepting connections again");
            self.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_back_off_up_to_a_second_and_start_over_after_a_success() {
        let mut failing = AcceptFailures::default();
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10)
            .map(|_| failing.failed("test", &emfile).unwrap())
            .collect();
        assert_eq!(pauses[0], Duration::from_millis(16));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], MAX_ACCEPT_BACKOFF);
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(failing.failed("test", &reset), None);
        failing.recovered("test");
        assert_eq!(
            failing.failed("test", &emfile),
            Some(Duration::from_millis(16))
        );
    }
}

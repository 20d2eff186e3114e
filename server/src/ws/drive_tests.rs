//! A connection driven over TCP: the keepalive, kept by the writer (pings
//! go out, a client that answers them stays, a silent one is closed, even
//! while its writer waits on a socket the client does not read), and what
//! an idle connection holds.

use super::*;
use crate::admission::capacity::Capacity;
use bytes::Bytes;
use futures::SinkExt;
use std::num::NonZeroU32;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// Short, for a quick test, but long enough that a test task kept waiting
/// on a busy machine still answers within two intervals.
const PING: Duration = Duration::from_millis(500);

struct Quiet;

impl Handler for Quiet {
    const KIND: Kind = Kind::Relay;

    async fn on_text(&mut self, _: Utf8Bytes) -> Option<CloseReason> {
        None
    }

    fn refusal(&self, _: Refusal) -> Utf8Bytes {
        "refused".into()
    }
}

/// A server connection driven with a short ping, and its client's socket.
async fn connection() -> (
    tokio::task::JoinHandle<String>,
    Peer,
    WebSocketStream<TcpStream>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (stream, peer_addr) = accepted.unwrap();
    // Small buffers: a client that does not read blocks the writer soon.
    socket2::SockRef::from(&stream)
        .set_send_buffer_size(4096)
        .unwrap();
    let client = client.unwrap();
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(4096)
        .unwrap();
    let slot = Capacity::new(10, 10).acquire(peer_addr.ip()).unwrap();
    let conn = Conn::new(Tcp { stream, slot }, Bytes::new(), 1 << 20);
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let (peer, queue) = Peer::new(Kind::Relay, 1024);
    let outbound = Outbound {
        peer: peer.clone(),
        queue,
        preamble: Preamble::default(),
    };
    let driven = tokio::spawn(async move {
        let limits = Limits {
            max_message_bytes: 1 << 20,
            keepalive: Keepalive::start(PING, Default::default()),
            coalesce: Duration::ZERO,
            frames: Quota::per_second(NonZeroU32::new(1000).unwrap()),
            bytes: None,
        };
        drive(conn, outbound, Quiet, &limits).await.0
    });
    (driven, peer, client)
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_and_a_silent_one_is_closed() {
    let (driven, _peer, mut client) = connection().await;
    // Reading answers the pings (tungstenite queues the pongs, sent with
    // the next write or flush).
    let mut pings = 0;
    while pings < 4 {
        match client.next().await.unwrap().unwrap() {
            tungstenite::Message::Ping(_) => {
                pings += 1;
                client.flush().await.unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!driven.is_finished(), "answered four pings, still open");
    // Silent from now on: closed within two or three intervals.
    let reason = timeout(Duration::from_secs(10), driven).await;
    assert_eq!(reason.unwrap().unwrap(), "ping timeout");
}

#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_while_its_writer_waits() {
    let (driven, peer, _client) = connection().await;
    // More than the socket buffers hold: the writer waits on the socket.
    let big: Utf8Bytes = "x".repeat(500_000).into();
    assert!(peer.send(big));
    let reason = timeout(Duration::from_secs(10), driven).await;
    assert_eq!(reason.unwrap().unwrap(), "ping timeout");
}

/// What every idle connection holds for its life besides its socket and
/// its session (a debug build's figures, 168 and 416 bytes, with some
/// room; 296 and 1,064 with a timer and a split socket, and arguments kept
/// twice): the writer, and the future that reads and writes.
#[test]
fn the_writer_and_the_reader_stay_small() {
    let writer = std::mem::size_of::<write::Writer>();
    assert!(writer <= 192, "writer: {writer} bytes");
    fn output<A, B, C, D, E, F>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    let connection = output(run::<Box<Conn>, Quiet>);
    assert!(connection <= 464, "reader and writer: {connection} bytes");
}

//! The connection's frames as a client (tungstenite) reads and sends them,
//! over a real TCP connection.

use super::*;
use crate::admission::capacity::Capacity;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{self, Role};
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<TcpStream>;

async fn pair() -> (Box<Conn>, Client) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let (stream, peer) = accepted.unwrap();
    // A small send buffer: large frames are written in many parts.
    socket2::SockRef::from(&stream)
        .set_send_buffer_size(4096)
        .unwrap();
    let slot = Capacity::new(10, 10).acquire(peer.ip()).unwrap();
    let conn = Conn::new(Tcp { stream, slot }, Bytes::new(), 1 << 20);
    let client = WebSocketStream::from_raw_socket(client.unwrap(), Role::Client, None).await;
    (conn, client)
}

#[tokio::test]
async fn frames_of_every_length_arrive_whole_and_no_buffer_is_kept() {
    let (mut conn, mut client) = pair().await;
    // Every header length (7, 16 and 64 bits), and more than the socket
    // takes at once: written in parts.
    let texts: Vec<String> = [0, 125, 126, 65_535, 65_536, 3_000_000]
        .iter()
        .enumerate()
        .map(|(n, &len)| char::from(b'a' + n as u8).to_string().repeat(len))
        .collect();
    let sent = texts.clone();
    let writing = tokio::spawn(async move {
        for text in sent {
            conn.feed(Message::Text(text.into())).await.unwrap();
        }
        conn.flush().await.unwrap();
        conn
    });
    for text in &texts {
        match client.next().await.unwrap().unwrap() {
            protocol::Message::Text(got) => assert!(got.as_str() == text, "{} bytes", text.len()),
            other => panic!("{other:?}"),
        }
    }
    let conn = writing.await.unwrap();
    assert!(conn.queued.is_empty());
    assert!(
        conn.queued.capacity() == 0,
        "the queue's room is given back"
    );
}

#[tokio::test]
async fn a_ping_is_answered_while_nothing_else_is_written() {
    let (mut conn, mut client) = pair().await;
    client
        .send(protocol::Message::Ping(Bytes::from_static(b"there?")))
        .await
        .unwrap();
    assert!(matches!(conn.next().await, Some(Ok(Message::Ping(_)))));
    match client.next().await.unwrap().unwrap() {
        protocol::Message::Pong(data) => assert_eq!(&data[..], b"there?"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_message_in_fragments_is_read_whole() {
    let (mut conn, mut client) = pair().await;
    let first = Frame::message(&b"{\"part\":"[..], OpCode::Data(Data::Text), false);
    let last = Frame::message(&b"1}"[..], OpCode::Data(Data::Continue), true);
    client.feed(protocol::Message::Frame(first)).await.unwrap();
    client.feed(protocol::Message::Frame(last)).await.unwrap();
    client.flush().await.unwrap();
    match conn.next().await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "{\"part\":1}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_close_frame_carries_its_code_and_reason_and_ends_sending() {
    let (mut conn, mut client) = pair().await;
    let frame = CloseFrame {
        code: 4001,
        reason: "replaced by a newer connection".into(),
    };
    conn.send(Message::Close(Some(frame))).await.unwrap();
    assert!(conn.send(Message::Text("late".into())).await.is_err());
    match client.next().await.unwrap().unwrap() {
        protocol::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "replaced by a newer connection");
        }
        other => panic!("{other:?}"),
    }
}

/// A ping that comes while the writer waits for a congested socket: the
/// pong goes out with the writer's frames, and the writer is woken when
/// the socket drains (a socket wakes only the last task that waited to
/// write: the reader must not take that place from it).
#[tokio::test]
async fn a_ping_during_a_congested_write_leaves_the_writer_awake() {
    let (conn, mut client) = pair().await;
    let (mut sink, mut stream) = conn.split();
    let writing = tokio::spawn(async move {
        for _ in 0..64 {
            sink.feed(Message::Text("x".repeat(100_000).into()))
                .await
                .unwrap();
        }
        sink.flush().await.unwrap();
    });
    let reading = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!writing.is_finished(), "the socket is full");
    client
        .send(protocol::Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (mut texts, mut pongs) = (0, 0);
    while texts < 64 || pongs < 1 {
        match client.next().await.unwrap().unwrap() {
            protocol::Message::Text(_) => texts += 1,
            protocol::Message::Pong(_) => pongs += 1,
            other => panic!("{other:?}"),
        }
    }
    tokio::time::timeout(std::time::Duration::from_secs(5), writing)
        .await
        .expect("the writer finished its flush")
        .unwrap();
    reading.abort();
}

/// A client that pings and never reads makes one pong wait, not one per
/// ping: each waiting pong is replaced by the newest.
#[tokio::test]
async fn pings_from_a_client_that_does_not_read_leave_one_pong_waiting() {
    use futures::FutureExt;
    let (mut conn, mut client) = pair().await;
    // More than the sockets buffer (16 MiB): the frames wait in the queue
    // once the first pong's write fills the socket.
    for _ in 0..16 {
        let frame = Message::Text("x".repeat(1 << 20).into());
        assert!(conn.feed(frame).now_or_never().is_some());
    }
    for n in 0..100u8 {
        client
            .send(protocol::Message::Ping(Bytes::from(vec![n])))
            .await
            .unwrap();
        assert!(matches!(conn.next().await, Some(Ok(Message::Ping(_)))));
    }
    assert!(
        conn.queued.iter().any(|f| !f.is_pong()),
        "the socket is full"
    );
    let pongs: Vec<_> = conn.queued.iter().filter(|f| f.is_pong()).collect();
    assert_eq!(pongs.len(), 1);
    assert_eq!(pongs[0].payload(), [99]);
}

//! Real WebSocket clients: a raw one, and a chat client that speaks the
//! protocol through `app::protocol` types.

use super::{Endpoint, WAIT};
use app::protocol::{ClientMessage, Position, ServerEvent};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket client.
pub struct Client {
    ws: Socket,
}

#[derive(Debug)]
pub enum Received {
    Text(String),
    Close(Option<u16>),
}

impl Client {
    /// A client over a socket opened by hand (to send raw frames first).
    pub fn from_socket(ws: Socket) -> Client {
        Client { ws }
    }

    /// Connects with Nagle's algorithm off, as browsers do: each frame
    /// leaves when it is sent.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends unless the connection is already gone.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next text frame or close, skipping pings; panics after `WAIT`.
    pub async fn receive(&mut self) -> Received {
        self.receive_within(WAIT)
            .await
            .expect("a frame before the timeout")
    }

    pub async fn receive_within(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => return Some(Received::Text(text.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Close(frame.map(|f: CloseFrame| f.code.into())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Received::Close(None)),
            }
        }
    }

    pub async fn json(&mut self) -> Value {
        match self.receive().await {
            Received::Text(text) => serde_json::from_str(&text).expect("JSON frame"),
            Received::Close(code) => panic!("closed ({code:?}) while waiting for a frame"),
        }
    }

    /// Waits for the close frame, skipping text frames; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Received::Close(code) = self.receive().await {
                return code;
            }
        }
    }

    /// Waits for the close frame, skipping text frames; its code and reason.
    pub async fn close_reason(&mut self) -> Option<(u16, String)> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Close(frame)) => {
                    return frame.map(|f| (f.code.into(), f.reason.to_string()));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Opens a WebSocket with extra request headers (e.g. `Origin`), from a
/// given local address if any (another loopback address is another
/// client); a refused upgrade gives its HTTP status and body.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
    from: Option<IpAddr>,
) -> Result<Client, (u16, String)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = url.into_client_request().expect("a ws:// URL");
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        request
            .headers_mut()
            .append(name, value.parse().expect("a header value"));
    }
    let uri = request.uri();
    let host = uri.host().expect("a host").trim_matches(['[', ']']);
    let server = SocketAddr::new(
        host.parse().expect("an IP host"),
        uri.port_u16().unwrap_or(80),
    );
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .unwrap();
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .expect("a local address");
    }
    let stream = socket
        .connect(server)
        .await
        .expect("the server accepts TCP");
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(body).into_owned(),
            ))
        }
        Err(err) => panic!("connect {url}: {err}"),
    }
}

/// A chat client that speaks the protocol through `app::protocol` types.
pub struct Chat {
    pub client: Client,
    pub session: Uuid,
    /// The stream position the history frame gave.
    pub position: Position,
    /// The history frame's `recovered` flag.
    pub recovered: bool,
}

impl Chat {
    /// Opens a socket to the room and reads the history and count it gets first.
    pub async fn open(server: &impl Endpoint, query: &str) -> (Chat, Vec<ServerEvent>, u64) {
        Chat::try_open(&server.chat_url(query))
            .await
            .expect("the chat socket opens")
    }

    /// Like `open`, by URL; None if the connection is refused or closed
    /// before its first two frames (a server that is restarting).
    pub async fn try_open(url: &str) -> Option<(Chat, Vec<ServerEvent>, u64)> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        Chat::opened(Client { ws }).await
    }

    /// A chat on a socket opened otherwise (with headers: `try_connect`),
    /// once its history and count came.
    pub async fn from_client(client: Client) -> Chat {
        Chat::opened(client)
            .await
            .expect("the history and the count")
            .0
    }

    async fn opened(mut client: Client) -> Option<(Chat, Vec<ServerEvent>, u64)> {
        let mut next = async || match client.receive_within(WAIT).await? {
            Received::Text(text) => Some(serde_json::from_str::<ServerEvent>(&text).unwrap()),
            Received::Close(_) => None,
        };
        // A long catch-up comes in several history frames (`more`), each
        // of at most 200 events.
        let (mut history, mut recovered, mut pages) = (Vec::new(), true, 0);
        let position = loop {
            match next().await? {
                ServerEvent::History {
                    events,
                    epoch,
                    offset,
                    recovered: page_recovered,
                    more,
                } => {
                    assert!(
                        events.len() <= 200,
                        "a history frame of {} events",
                        events.len()
                    );
                    history.extend(events);
                    recovered &= page_recovered;
                    pages += 1;
                    if !more {
                        break Position { epoch, offset };
                    }
                }
                other => panic!("expected history first, got {other:?} after {pages} pages"),
            }
        };
        let count = match next().await? {
            ServerEvent::Count { count } => count,
            other => panic!("expected count second, got {other:?}"),
        };
        let chat = Chat {
            client,
            session: Uuid::new_v4(),
            position,
            recovered,
        };
        Some((chat, history, count))
    }

    /// Opens a socket that the server refuses at once (a ban): its only
    /// frame (an error, never the room's history) and its close code.
    pub async fn refused(server: &impl Endpoint, query: &str) -> (ServerEvent, Option<u16>) {
        let url = server.chat_url(query);
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("the socket opens");
        let mut client = Client { ws };
        let first = match client.receive_within(WAIT).await {
            Some(Received::Text(text)) => serde_json::from_str::<ServerEvent>(&text).unwrap(),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(
            matches!(first, ServerEvent::Error { .. }),
            "a refusal, not {first:?}"
        );
        (first, client.closed().await)
    }

    /// Opens a socket to the default room and joins as `pseudo`.
    pub async fn join(server: &impl Endpoint, pseudo: &str) -> Chat {
        Chat::join_query(server, "", pseudo).await
    }

    /// Opens a socket to `room` and joins it as `pseudo`.
    pub async fn join_room(server: &impl Endpoint, room: &str, pseudo: &str) -> Chat {
        Chat::join_query(server, &format!("?room={room}"), pseudo).await
    }

    /// Opens a socket to the default room and joins as `pseudo` in the
    /// session given (the same person as every other connection of it).
    pub async fn join_session(server: &impl Endpoint, pseudo: &str, session: Uuid) -> Chat {
        Chat::join_with(server, "", pseudo, session).await
    }

    /// Opens a socket with this query (`?room=…`, `?token=…`) and joins as
    /// `pseudo`.
    pub async fn join_query(server: &impl Endpoint, query: &str, pseudo: &str) -> Chat {
        Chat::join_with(server, query, pseudo, Uuid::new_v4()).await
    }

    async fn join_with(server: &impl Endpoint, query: &str, pseudo: &str, session: Uuid) -> Chat {
        let (mut chat, _, _) = Chat::open(server, query).await;
        chat.session = session;
        chat.send(&ClientMessage::Join {
            pseudo: pseudo.into(),
            session: Some(chat.session),
        })
        .await;
        chat.expect(|e| matches!(e, ServerEvent::Joined { .. }))
            .await;
        chat
    }

    pub async fn send(&mut self, msg: &ClientMessage) {
        self.client
            .send_text(&serde_json::to_string(msg).unwrap())
            .await;
    }

    pub async fn say(&mut self, text: &str) {
        self.send(&ClientMessage::Say {
            text: text.into(),
            id: None,
        })
        .await;
    }

    pub async fn event(&mut self) -> ServerEvent {
        serde_json::from_value(self.client.json().await).expect("a server event")
    }

    /// Skips events until one matches.
    pub async fn expect(&mut self, wanted: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
        loop {
            let event = self.event().await;
            if wanted(&event) {
                return event;
            }
        }
    }

    pub async fn expect_count(&mut self, count: u64) {
        self.expect(|e| *e == ServerEvent::Count { count }).await;
    }

    pub async fn expect_message(&mut self) -> app::protocol::ChatMessage {
        match self.expect(|e| matches!(e, ServerEvent::Message(_))).await {
            ServerEvent::Message(m) => m,
            _ => unreachable!(),
        }
    }

    pub async fn expect_error(&mut self) -> app::protocol::ErrorCode {
        match self
            .expect(|e| matches!(e, ServerEvent::Error { .. }))
            .await
        {
            ServerEvent::Error { code, .. } => code,
            _ => unreachable!(),
        }
    }

    /// Collects chat messages until `n` arrived.
    pub async fn messages(&mut self, n: usize) -> Vec<app::protocol::ChatMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.expect_message().await);
        }
        out
    }
}

/// The texts of the chat messages among events (e.g. a history).
pub fn texts(events: &[ServerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Message(m) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

/// The HTTP status with which a WebSocket upgrade was refused.
/// 101 when the socket opens, else the HTTP status of the refusal.
pub async fn upgrade_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP answer, got {other}"),
    }
}

pub async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

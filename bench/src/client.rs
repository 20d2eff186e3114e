//! Real WebSocket clients of both protocols, and the probe each test message
//! carries: who sent it, its sequence number and when it was sent.

use anyhow::{bail, Context};
use app::protocol::{ClientMessage, ServerEvent};
use app::relay::{Registration, RelayReply};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Test messages are padded to this many bytes (relay frame, chat text).
pub const PAYLOAD_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Relay,
    Chat,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Relay => "relay",
            Proto::Chat => "chat",
        }
    }
}

/// Microseconds since the load generator started: senders and receivers
/// share the clock, so a delivery's latency is `now - t`.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

async fn open(url: &str, origin: Option<&str>) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin)?);
    }
    // Not the 128 KiB default, which tungstenite zero-fills before every
    // read: room for a batch of small frames.
    let config = WebSocketConfig::default().read_buffer_size(2 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(ws)
}

/// A relay client registered on `action`.
pub async fn relay(port: u16, action: &str) -> anyhow::Result<Ws> {
    let mut ws = open(&format!("ws://127.0.0.1:{port}/"), None).await?;
    let registration = Registration {
        action,
        token: None,
    };
    ws.send(Message::text(registration.encode())).await?;
    let reply = next_text(&mut ws).await?;
    match RelayReply::decode(&reply) {
        Some(RelayReply::Registered { .. }) => Ok(ws),
        Some(RelayReply::Error { error }) => bail!("relay registration refused: {error}"),
        None => bail!("not a reply to the relay registration: {reply}"),
    }
}

/// A chat socket on `room`, opened like a browser on that page would.
pub async fn chat(port: u16, room: &str) -> anyhow::Result<Ws> {
    let origin = format!("http://127.0.0.1:{port}");
    open(
        &format!("ws://127.0.0.1:{port}/ws?room={room}"),
        Some(&origin),
    )
    .await
}

/// The text of a frame the load generator sends.
pub fn to_json(frame: &impl Serialize) -> String {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_string(frame).expect("frames serialize")
}

pub async fn send_join(ws: &mut Ws, pseudo: &str) -> anyhow::Result<()> {
    let join = ClientMessage::Join {
        pseudo: pseudo.to_owned(),
        session: None,
    };
    Ok(ws.send(Message::text(to_json(&join))).await?)
}

/// Reads until the server confirms the join; the latest count seen on the
/// way and how many frames were read.
pub async fn await_joined(ws: &mut Ws) -> anyhow::Result<(Option<u64>, u64)> {
    let mut count = None;
    let mut frames = 0;
    loop {
        let text = next_text(ws).await?;
        frames += 1;
        let event: ServerEvent =
            serde_json::from_str(&text).with_context(|| format!("not a chat event: {text}"))?;
        match event {
            ServerEvent::Joined { .. } => return Ok((count, frames)),
            ServerEvent::Count { count: now } => count = Some(now),
            ServerEvent::Error { code, message, .. } => {
                bail!("join refused ({}): {message}", code.as_str())
            }
            _ => {}
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            return Ok(text.as_str().to_owned());
        }
    }
    bail!("the server closed the connection")
}

/// What a test message says about itself.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub struct Probe {
    /// Sender index.
    pub s: usize,
    /// Sequence number, from 0, per sender.
    pub n: u64,
    /// Send time, from [`now_us`].
    pub t: u64,
}

/// A probe as a relay frame: the load generator's own payload, which the
/// relay forwards as is. `p` pads it to [`PAYLOAD_BYTES`].
#[derive(Serialize)]
struct RelayProbe<'a> {
    s: usize,
    n: u64,
    t: u64,
    p: &'a str,
}

impl Probe {
    /// The frame a client sends for this probe, padded to [`PAYLOAD_BYTES`].
    pub fn frame(self, proto: Proto) -> String {
        let Probe { s, n, t } = self;
        match proto {
            Proto::Relay => {
                let bare = to_json(&RelayProbe { s, n, t, p: "" });
                let pad = "x".repeat(PAYLOAD_BYTES.saturating_sub(bare.len()));
                to_json(&RelayProbe { s, n, t, p: &pad })
            }
            Proto::Chat => {
                let head = format!("{s} {n} {t} ");
                let pad = PAYLOAD_BYTES.saturating_sub(head.len());
                let text = format!("{head}{}", "x".repeat(pad));
                to_json(&ClientMessage::Say { text, id: None })
            }
        }
    }

    /// The probe in a frame a client received, if it carries one.
    pub fn read(proto: Proto, frame: &str) -> Option<Probe> {
        match proto {
            Proto::Relay => serde_json::from_str(frame).ok(),
            Proto::Chat => {
                let event: EventView = serde_json::from_str(frame).ok()?;
                if event.kind != Kind::Message {
                    return None;
                }
                let mut words = event
                    .text?
                    .split(' ')
                    .map(str::parse::<u64>)
                    .collect::<Vec<_>>();
                words.truncate(3);
                match words[..] {
                    [Ok(s), Ok(n), Ok(t)] => Some(Probe {
                        s: s as usize,
                        n,
                        t,
                    }),
                    _ => None,
                }
            }
        }
    }
}

/// The kinds of [`ServerEvent`] the scenarios tell apart while they run.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Message,
    Count,
    #[serde(other)]
    Other,
}

/// The fields of a [`ServerEvent`] that the scenarios read from every
/// frame, borrowed from it: receivers read many thousand frames a second,
/// and a whole `ServerEvent` would allocate each of its strings. The test
/// `the_view_reads_what_the_server_writes` keeps it in step with the
/// protocol's types.
#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(rename = "type")]
    kind: Kind,
    /// A message's text.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// A count event's count.
    #[serde(default)]
    count: Option<u64>,
}

/// The participant count in a chat frame, if it is a count event.
pub fn count_of(frame: &str) -> Option<u64> {
    let event: EventView = serde_json::from_str(frame).ok()?;
    (event.kind == Kind::Count).then_some(event.count).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::protocol::{ChatMessage, ErrorCode, RoomSummary, SystemKind, SystemMessage};

    fn message(text: &str) -> ServerEvent {
        ServerEvent::Message(ChatMessage {
            epoch: "e".into(),
            offset: 1,
            id: Default::default(),
            author: "a".into(),
            author_id: "1".into(),
            text: text.into(),
            ts: 1,
            deleted: false,
            edited: false,
            server: false,
        })
    }

    #[test]
    fn probes_round_trip_through_what_the_server_sends() {
        let probe = Probe {
            s: 3,
            n: 12345,
            t: 987654321,
        };
        let relay = probe.frame(Proto::Relay);
        assert_eq!(relay.len(), PAYLOAD_BYTES);
        assert_eq!(app::relay::check_frame(&relay), Ok(()));
        assert_eq!(Probe::read(Proto::Relay, &relay), Some(probe));

        let ClientMessage::Say { text, .. } =
            ClientMessage::decode(&probe.frame(Proto::Chat)).unwrap()
        else {
            panic!("a probe is a say");
        };
        assert_eq!(text.len(), PAYLOAD_BYTES);
        let event = to_json(&message(&text));
        assert_eq!(Probe::read(Proto::Chat, &event), Some(probe));
        let count = to_json(&ServerEvent::Count { count: 7 });
        assert_eq!(count_of(&count), Some(7));
        assert_eq!(Probe::read(Proto::Chat, &count), None);
        assert_eq!(count_of(&event), None);
    }

    #[test]
    fn the_view_reads_what_the_server_writes() {
        let system = ServerEvent::System(SystemMessage {
            epoch: String::new(),
            offset: 0,
            id: Default::default(),
            kind: SystemKind::Joined,
            pseudo: "b".into(),
            previous: None,
            others: Vec::new(),
            more: 0,
            ts: 2,
            by: None,
            until: None,
            seconds: None,
        });
        let events = [
            // Escapes make serde_json hand over an owned copy.
            message("1 2 3 \"quoted\" é"),
            ServerEvent::Count { count: 7 },
            system.clone(),
            ServerEvent::Joined {
                pseudo: "a".into(),
                session: Default::default(),
                room: "r".into(),
                moderation: false,
                moderator: false,
            },
            ServerEvent::Error {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                until: None,
                retry_after_ms: None,
            },
            ServerEvent::Typing { pseudo: "b".into() },
            ServerEvent::Online {
                names: vec!["a".into()],
                more: 3,
            },
            ServerEvent::OnlineChanged {
                added: vec![],
                removed: vec!["a".into()],
                more: 0,
            },
            ServerEvent::Rooms {
                rooms: vec![RoomSummary {
                    name: "r".into(),
                    count: 4,
                    activity: 5,
                }],
            },
            // The events inside a history are not the frame's own fields.
            ServerEvent::History {
                epoch: "e".into(),
                offset: 2,
                recovered: true,
                events: vec![message("1 2 3"), system],
                more: false,
            },
        ];
        for event in events {
            let frame = to_json(&event);
            let view: EventView = serde_json::from_str(&frame).unwrap();
            let expected = match &event {
                ServerEvent::Message(m) => (Kind::Message, Some(m.text.as_str()), None),
                ServerEvent::Count { count } => (Kind::Count, None, Some(*count)),
                _ => (Kind::Other, None, None),
            };
            assert_eq!(
                (view.kind, view.text.as_deref(), view.count),
                expected,
                "{frame}"
            );
        }
    }
}

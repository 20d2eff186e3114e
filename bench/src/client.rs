//! Real WebSocket clients of both protocols, and the probe each test message
//! carries: who sent it, its sequence number and when it was sent.

use anyhow::{bail, Context};
use app::protocol::ClientMessage;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
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
    let register = serde_json::json!({ "action": action }).to_string();
    ws.send(Message::text(register)).await?;
    let reply = next_text(&mut ws).await?;
    if !reply.contains("\"registered\"") {
        bail!("relay registration refused: {reply}");
    }
    Ok(ws)
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

pub async fn send_join(ws: &mut Ws, pseudo: &str) -> anyhow::Result<()> {
    let join = ClientMessage::Join {
        pseudo: pseudo.to_owned(),
        session: None,
    };
    Ok(ws
        .send(Message::text(serde_json::to_string(&join)?))
        .await?)
}

/// Reads until the server confirms the join; the latest count seen on the way.
pub async fn await_joined(ws: &mut Ws) -> anyhow::Result<Option<u64>> {
    let mut count = None;
    loop {
        let text = next_text(ws).await?;
        let frame: ChatFrame = serde_json::from_str(&text)?;
        match frame.kind.as_ref() {
            "joined" => return Ok(count),
            "count" => count = frame.count,
            "error" => bail!("join refused: {text}"),
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

impl Probe {
    /// The frame a client sends for this probe, padded to [`PAYLOAD_BYTES`].
    pub fn frame(self, proto: Proto) -> String {
        let Probe { s, n, t } = self;
        match proto {
            Proto::Relay => {
                let head = format!(r#"{{"s":{s},"n":{n},"t":{t},"p":""#);
                let pad = PAYLOAD_BYTES.saturating_sub(head.len() + 2);
                format!("{head}{}\"}}", "x".repeat(pad))
            }
            Proto::Chat => {
                let head = format!("{s} {n} {t} ");
                let pad = PAYLOAD_BYTES.saturating_sub(head.len());
                let text = format!("{head}{}", "x".repeat(pad));
                // A struct of strings: serializing it cannot fail.
                serde_json::to_string(&ClientMessage::Say { text }).unwrap_or_default()
            }
        }
    }

    /// The probe in a frame a client received, if it carries one.
    pub fn read(proto: Proto, frame: &str) -> Option<Probe> {
        match proto {
            Proto::Relay => serde_json::from_str(frame).ok(),
            Proto::Chat => {
                let frame: ChatFrame = serde_json::from_str(frame).ok()?;
                let mut words = frame
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
                .filter(|_| frame.kind == "message")
            }
        }
    }
}

/// The fields of a chat server event that the scenarios look at.
#[derive(Deserialize)]
pub struct ChatFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub count: Option<u64>,
}

/// The participant count in a chat frame, if it is a count event.
pub fn count_of(frame: &str) -> Option<u64> {
    let frame: ChatFrame = serde_json::from_str(frame).ok()?;
    (frame.kind == "count").then_some(frame.count).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_through_what_the_server_sends() {
        let probe = Probe {
            s: 3,
            n: 12345,
            t: 987654321,
        };
        let relay = probe.frame(Proto::Relay);
        assert_eq!(relay.len(), PAYLOAD_BYTES);
        assert_eq!(Probe::read(Proto::Relay, &relay), Some(probe));

        let say: serde_json::Value = serde_json::from_str(&probe.frame(Proto::Chat)).unwrap();
        let text = say["text"].as_str().unwrap();
        assert_eq!(text.len(), PAYLOAD_BYTES);
        let event = serde_json::json!({
            "type": "message", "id": "00000000-0000-0000-0000-000000000000",
            "author": "a", "text": text, "ts": 1
        });
        assert_eq!(Probe::read(Proto::Chat, &event.to_string()), Some(probe));
        assert_eq!(count_of(r#"{"type":"count","count":7}"#), Some(7));
        assert_eq!(
            Probe::read(Proto::Chat, r#"{"type":"count","count":7}"#),
            None
        );
    }
}

//! What the unit tests of the protocols share: a socket made of two
//! channels, and an instance's parts on an in-memory broker, so that a
//! session's rules are checked without a network.

use crate::admission::client_ip::ProxyHeader;
use crate::admission::{Guard, Policy};
use crate::broker::memory::{MemoryBroker, Shared};
use crate::broker::{Broker, Envelope, Inbox};
use crate::fanout::{Hub, Topic};
use crate::presence::{Event, Presence};
use axum::extract::ws::{Message, Utf8Bytes};
use futures::channel::mpsc;
use futures::{Sink, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use uuid::Uuid;

/// The server's end of a socket whose other end is a [`Remote`].
pub struct Duplex {
    incoming: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
    outgoing: mpsc::UnboundedSender<Message>,
}

/// The client's end.
pub struct Remote {
    pub send: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    pub received: mpsc::UnboundedReceiver<Message>,
}

pub fn socket() -> (Duplex, Remote) {
    let (send, incoming) = mpsc::unbounded();
    let (outgoing, received) = mpsc::unbounded();
    (Duplex { incoming, outgoing }, Remote { send, received })
}

impl Stream for Duplex {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.incoming).poll_next(cx)
    }
}

impl Sink<Message> for Duplex {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_ready(cx)
            .map_err(axum::Error::new)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.outgoing)
            .start_send(item)
            .map_err(axum::Error::new)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_flush(cx)
            .map_err(axum::Error::new)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_close(cx)
            .map_err(axum::Error::new)
    }
}

impl Remote {
    pub fn text(&self, text: &str) {
        let _ = self.send.unbounded_send(Ok(Message::Text(text.into())));
    }

    pub fn binary(&self, bytes: &'static [u8]) {
        let _ = self.send.unbounded_send(Ok(Message::Binary(bytes.into())));
    }

    /// The next text frame; `Err` with the close code if it closed instead.
    pub async fn next(&mut self) -> Result<Utf8Bytes, Option<u16>> {
        let wait = Duration::from_secs(5);
        loop {
            let message = tokio::time::timeout(wait, self.received.next()).await;
            match message.expect("a frame in time") {
                Some(Message::Text(text)) => return Ok(text),
                Some(Message::Close(frame)) => return Err(frame.map(|f| f.code)),
                Some(_) => continue,
                None => return Err(None),
            }
        }
    }
}

/// One instance's shared parts on an in-memory broker.
pub struct Parts {
    pub instance: Uuid,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<Presence>,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    pub guard: Arc<Guard>,
}

/// Hands other instances' frames to the hub (what the relay needs).
pub struct HubInbox(pub Arc<Hub>);

impl Inbox for HubInbox {
    fn room_event(&self, _room: &str, _frame: Utf8Bytes) {}

    fn frame(&self, topic: &Topic, envelope: &Envelope) {
        self.0.deliver(topic, &envelope.frame, envelope.except);
    }

    fn presence_changed(&self, _room: &str) {}

    fn missed(&self, _room: &str) {}

    fn reconnected(&self) {}
}

/// An instance's parts on the `shared` memory, around its `hub`, with
/// what other instances send going to `inbox`.
pub fn parts(shared: &Shared, hub: Arc<Hub>, inbox: Arc<dyn Inbox>) -> Parts {
    let instance = Uuid::new_v4();
    let ttl = Duration::from_secs(10);
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::join(shared, instance, ttl, inbox));
    let (tell, events) = tokio::sync::mpsc::unbounded_channel();
    let presence = Arc::new(Presence::new(broker.clone(), tell));
    let guard = Arc::new(Guard::new(Policy {
        allowed_origins: Vec::new(),
        public_origins: Vec::new(),
        chat_require_origin: false,
        relay_require_origin: false,
        proxy_header: ProxyHeader::parse("none").expect("no proxy header"),
        trusted_proxies: Vec::new(),
        max_connections: 100,
        max_connections_per_ip: 100,
    }));
    Parts {
        instance,
        hub,
        broker,
        presence,
        events,
        guard,
    }
}

/// The size of a connection's task running `session`, holding a `P`.
pub fn task_size<F, Fut, P>(_: &F) -> usize
where
    F: FnOnce(Box<crate::ws::Conn>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    P: Send + 'static,
{
    fn output<A, B, C, D, R>(_: impl FnOnce(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    output(crate::ws::serve::<F, Fut, P>)
}

/// The size of what `make` returns (a connection's future), without
/// making one.
pub fn output_size<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

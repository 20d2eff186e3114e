//! The browser side of the chat socket (compiled only with `hydrate`).
//!
//! One task owns the WebSocket for the life of the page: it reconnects with
//! jittered exponential backoff, rejoins with the same nickname and session,
//! asks for the events it missed, and sends what the person typed in order.
//! Frames typed while the socket is down wait in the queue instead of being
//! lost. Switching rooms opens a socket to the new room at once.

use crate::event_reader::read_event;
use crate::protocol::{ClientMessage, ErrorCode, Position, ServerEvent, TYPING_SHOWN_MS};
use crate::state::{ChatState, Status};
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::future::{self, Either};
use futures::{stream, SinkExt, StreamExt};
use gloo_net::websocket::{futures::WebSocket, Message};
use gloo_timers::future::sleep;
use leptos::prelude::{GetUntracked, Set};
use std::time::Duration;
use uuid::Uuid;

const SESSION_KEY: &str = "chat.session";
const PSEUDO_KEY: &str = "chat.pseudo";
const TOKEN_KEY: &str = "chat.token";
const MAX_BACKOFF_MS: f64 = 10_000.0;
/// A connection that stayed up this long resets the backoff.
const STABLE_MS: f64 = 5_000.0;

/// The handle the page uses to send frames.
#[derive(Clone)]
pub struct Connection {
    outbox: UnboundedSender<Command>,
}

pub enum Command {
    Send(ClientMessage),
    /// `state.room` changed: leave the old room's socket for the new one.
    Switch,
    /// The person asks to talk again after this page stopped (another tab
    /// took over, or a moderator removed them).
    Resume,
}

impl Connection {
    pub fn send(&self, msg: ClientMessage) {
        // The receiver lives as long as the page, so this cannot fail.
        let _ = self.outbox.unbounded_send(Command::Send(msg));
    }

    pub fn switch_room(&self) {
        let _ = self.outbox.unbounded_send(Command::Switch);
    }

    pub fn resume(&self) {
        let _ = self.outbox.unbounded_send(Command::Resume);
    }
}

/// Starts the socket task. A nickname kept from before a reload is rejoined
/// at once.
pub fn connect(state: ChatState) -> Connection {
    let (outbox, queue) = unbounded();
    leptos::task::spawn_local(run(state, queue, stored(PSEUDO_KEY)));
    Connection { outbox }
}

/// The per-tab session token: survives reloads of the tab (sessionStorage),
/// so the server lets this tab reclaim its nickname from a stale socket.
pub fn session() -> Uuid {
    if let Some(id) = stored(SESSION_KEY).and_then(|s| crate::protocol::parse_uuid(&s)) {
        return id;
    }
    let id = Uuid::new_v4();
    store(SESSION_KEY, Some(&id.to_string()));
    id
}

enum Event {
    Frame(Message),
    Closed,
    Outgoing(Command),
}

/// How a connection ended.
enum Ended {
    /// The person moved to another room: its socket opens at once.
    Switched,
    /// The socket closed or could not open: the next one waits a while.
    Closed,
}

/// What the socket task keeps from one connection to the next.
struct Carried {
    session: Uuid,
    /// The nickname to take again on every (re)connection.
    pseudo: Option<String>,
    /// Frames whose send failed or that were typed while the socket was
    /// down: sent first, in order, on the next connection.
    waiting: Vec<ClientMessage>,
    /// Why messages were held back, told once the new room is joined (the
    /// join would clear it otherwise).
    held_back: Option<String>,
    /// Messages sent on this room's connections and not yet acknowledged:
    /// sent again on the next connection. Each has an id, so a message that
    /// did get through is not doubled (the server acknowledges the repeat).
    unacked: Vec<ClientMessage>,
}

async fn run(state: ChatState, mut queue: UnboundedReceiver<Command>, saved: Option<String>) {
    let mut carried = Carried {
        session: session(),
        pseudo: saved,
        waiting: Vec::new(),
        held_back: None,
        unacked: Vec::new(),
    };
    let mut failures: u32 = 0;
    loop {
        state.status.set(Status::Connecting);
        let opened = js_sys::Date::now();
        let room = state.room.get_untracked();
        let ended = match WebSocket::open(&socket_url(&room, state.since())) {
            Ok(socket) => converse(state, socket, &mut queue, &mut carried).await,
            Err(_) => Ended::Closed,
        };
        if state.ended.get_untracked() {
            // Another tab has the nickname, or a moderator removed this
            // person: reconnecting on its own would take it back, or be
            // refused. The page waits for the person.
            state.status.set(Status::Disconnected);
            if !stopped(state, &mut queue, &mut carried).await {
                return;
            }
            failures = 0;
            continue;
        }
        if let Ended::Switched = ended {
            // Dropping the socket closed it; the new room's opens at once.
            // What the old room did not acknowledge is not sent to the new.
            carried.unacked.clear();
            failures = 0;
            continue;
        }
        state.status.set(Status::Disconnected);
        // A connection that lasted is a fresh start; one the server keeps
        // closing at once must not be retried in a tight loop.
        failures = if js_sys::Date::now() - opened > STABLE_MS {
            1
        } else {
            failures.saturating_add(1)
        };
        if !pause(state, &mut queue, backoff(failures), &mut carried).await {
            // The page is gone.
            return;
        }
    }
}

/// One connection, from the rejoin to its end: server events go to the
/// page, what the person sends goes out in order.
async fn converse(
    state: ChatState,
    socket: WebSocket,
    queue: &mut UnboundedReceiver<Command>,
    carried: &mut Carried,
) -> Ended {
    let (mut sink, incoming) = socket.split();
    state.reconnected();
    if carried.pseudo.is_none() {
        if let Some(notice) = carried.held_back.take() {
            state.error.set(Some(notice));
        }
    }
    let mut rejoining = false;
    if let Some(pseudo) = carried.pseudo.clone() {
        let join = ClientMessage::Join {
            pseudo,
            session: Some(carried.session),
        };
        rejoining = sink.send(encode(&join)).await.is_ok();
    }
    let incoming = incoming
        .filter_map(|frame| async move { frame.ok().map(Event::Frame) })
        .chain(stream::once(async { Event::Closed }));
    // What may have been lost with the last connection goes first, then
    // what was typed meanwhile: in the order it was typed.
    let unacked = carried.unacked.drain(..);
    let retry: Vec<Command> = unacked
        .chain(carried.waiting.drain(..))
        .map(Command::Send)
        .collect();
    let outgoing = stream::iter(retry).chain(queue.by_ref());
    let mut events = std::pin::pin!(stream::select(incoming, outgoing.map(Event::Outgoing)));
    while let Some(event) = events.next().await {
        match event {
            Event::Frame(Message::Text(text)) => {
                state.status.set(Status::Connected);
                if let Some(event) = js_sys::JSON::parse(&text)
                    .ok()
                    .and_then(|frame| read_event(&frame))
                {
                    carried.apply(state, event, &mut rejoining);
                }
            }
            Event::Frame(Message::Bytes(_)) => {}
            Event::Outgoing(Command::Switch) => return Ended::Switched,
            Event::Outgoing(Command::Resume) => {}
            Event::Outgoing(Command::Send(msg)) => {
                if let ClientMessage::Say { text, id } = &msg {
                    state.sent(text);
                    if id.is_some() {
                        carried.unacked.push(msg.clone());
                    }
                }
                if sink.send(encode(&msg)).await.is_err() {
                    carried.waiting.push(msg);
                    break;
                }
            }
            Event::Closed => break,
        }
    }
    Ended::Closed
}

impl Carried {
    /// Keeps a frame for the next connection; a message shows as
    /// "sending" meanwhile.
    fn wait(&mut self, state: ChatState, msg: ClientMessage) {
        if let ClientMessage::Say { text, .. } = &msg {
            state.sent(text);
        }
        self.waiting.push(msg);
    }

    /// Shows a server event, and follows the nickname: kept once the
    /// server confirms it, dropped when a rejoin finds it taken.
    fn apply(&mut self, state: ChatState, event: ServerEvent, rejoining: &mut bool) {
        let stored = match &event {
            ServerEvent::Ack { id, .. } => Some(*id),
            ServerEvent::Message(m) => Some(m.id),
            _ => None,
        };
        if let Some(stored) = stored {
            self.unacked.retain(
                |msg| !matches!(msg, ClientMessage::Say { id: Some(id), .. } if *id == stored),
            );
        }
        let joined = matches!(&event, ServerEvent::Joined { .. });
        let typist = match &event {
            ServerEvent::Typing { pseudo } => Some(pseudo.clone()),
            _ => None,
        };
        let error = state.apply(event);
        if let Some(pseudo) = typist {
            hide_typing_later(state, pseudo);
        }
        if joined {
            if let Some(notice) = self.held_back.take() {
                state.error.set(Some(notice));
            }
            *rejoining = false;
            self.pseudo = state.me.get_untracked();
            store(PSEUDO_KEY, self.pseudo.as_deref());
        } else if *rejoining
            && matches!(
                error,
                Some(ErrorCode::PseudoTaken | ErrorCode::InvalidPseudo)
            )
        {
            // Somebody took the nickname while we were away.
            *rejoining = false;
            self.pseudo = None;
            state.me.set(None);
            store(PSEUDO_KEY, None);
        }
    }
}

/// Waits until the person resumes (or moves to another room); what they
/// send meanwhile waits. `false` when the page is gone.
async fn stopped(
    state: ChatState,
    queue: &mut UnboundedReceiver<Command>,
    carried: &mut Carried,
) -> bool {
    loop {
        match queue.next().await {
            Some(Command::Resume) => break,
            Some(Command::Switch) => {
                carried.unacked.clear();
                break;
            }
            Some(Command::Send(msg)) => carried.wait(state, msg),
            None => return false,
        }
    }
    state.ended.set(false);
    state.error.set(None);
    true
}

/// Waits before the next connection. Waiting keeps what is typed
/// meanwhile; a room switch ends it: the person asked for that room now.
/// `false` when the page is gone.
async fn pause(
    state: ChatState,
    queue: &mut UnboundedReceiver<Command>,
    delay: Duration,
    carried: &mut Carried,
) -> bool {
    let mut delay = std::pin::pin!(sleep(delay));
    loop {
        match future::select(delay.as_mut(), queue.next()).await {
            Either::Left(_) => return true,
            Either::Right((Some(Command::Switch), _)) => {
                carried.unacked.clear();
                carried.held_back = hold_back_messages(state, &mut carried.waiting);
                return true;
            }
            Either::Right((Some(Command::Send(msg)), _)) => carried.wait(state, msg),
            Either::Right((Some(Command::Resume), _)) => {}
            Either::Right((None, _)) => return false,
        }
    }
}

/// Messages typed for the room being left, while the socket was down, are
/// not sent to the next one: the first goes back into the composer.
/// Returns what to tell the person.
fn hold_back_messages(state: ChatState, waiting: &mut Vec<ClientMessage>) -> Option<String> {
    let texts: Vec<String> = waiting
        .iter()
        .filter_map(|msg| match msg {
            ClientMessage::Say { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    waiting.retain(|msg| !matches!(msg, ClientMessage::Say { .. }));
    let first = texts.first()?;
    state.returned.set(Some(first.clone()));
    Some(format!(
        "Not sent ({} typed while offline): you changed rooms before the connection came back",
        texts.len()
    ))
}

fn encode(msg: &ClientMessage) -> Message {
    Message::Text(msg.to_frame())
}

/// 0.5 s, 1 s, 2 s ... capped at 10 s, with full jitter so that a restarted
/// server is not hit by every client at the same instant.
fn backoff(failures: u32) -> Duration {
    let ceiling = (500.0 * 2f64.powi(failures.min(10) as i32 - 1)).min(MAX_BACKOFF_MS);
    let ms = ceiling / 2.0 + js_sys::Math::random() * ceiling / 2.0;
    Duration::from_millis(ms as u64)
}

/// Hides `pseudo`'s typing indicator unless another typing frame from them
/// came meanwhile.
fn hide_typing_later(state: ChatState, pseudo: String) {
    let Some(stamp) = state.typing_stamp(&pseudo) else {
        return;
    };
    leptos::task::spawn_local(async move {
        sleep(Duration::from_millis(TYPING_SHOWN_MS)).await;
        state.typing_expired(&pseudo, stamp);
    });
}

fn socket_url(room: &str, since: Option<Position>) -> String {
    let location = web_sys::window().expect("a browser window").location();
    let secure = location.protocol().map(|p| p == "https:").unwrap_or(false);
    let host = location.host().unwrap_or_default();
    let mut url = format!(
        "{}://{host}/ws?room={room}",
        if secure { "wss" } else { "ws" }
    );
    if let Some(position) = since {
        url.push_str("&since=");
        url.push_str(&position.to_query());
    }
    if let Some(token) = token() {
        url.push_str("&token=");
        url.push_str(&token);
    }
    url
}

/// The access token a backend gave this tab (`?token=` on the page's
/// address, when the server requires tokens), kept for the tab's life.
/// JWTs are URL-safe as they are.
fn token() -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    // The browser reads the query: no string searching in the WASM.
    let given = web_sys::UrlSearchParams::new_with_str(&search)
        .ok()
        .and_then(|params| params.get("token"))
        .filter(|token| !token.is_empty());
    if let Some(token) = &given {
        store(TOKEN_KEY, Some(token));
    }
    given.or_else(|| stored(TOKEN_KEY))
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

fn stored(key: &str) -> Option<String> {
    storage()?.get_item(key).ok()?
}

fn store(key: &str, value: Option<&str>) {
    if let Some(storage) = storage() {
        let _ = match value {
            Some(v) => storage.set_item(key, v),
            None => storage.remove_item(key),
        };
    }
}

/// Follows the tab's visibility: messages that arrive while it is hidden
/// count in the title.
pub fn watch_visibility(state: ChatState) {
    use wasm_bindgen::{closure::Closure, JsCast};
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    state.set_hidden(document.hidden());
    let watched = document.clone();
    let changed = Closure::<dyn Fn()>::new(move || state.set_hidden(watched.hidden()));
    document.set_onvisibilitychange(Some(changed.as_ref().unchecked_ref()));
    // The page lives as long as the document: so does the listener.
    changed.forget();
}

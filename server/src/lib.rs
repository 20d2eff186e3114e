//! The chat and action-relay server.
//!
//! # The path of one chat message
//!
//! 1. [`http::serve`] accepts the TCP connection (its place taken in
//!    [`admission::capacity`]); [`chat::upgrade`] admits the WebSocket
//!    ([`admission`]: origin, limits, token) and starts its session.
//! 2. [`ws`] reads the frame, applies the size and rate limits, and hands
//!    the text to the chat session (`chat/session.rs`), which checks it
//!    (`app::protocol`).
//! 3. `chat/announce.rs` encodes it once and appends it to the room's
//!    stream through the [`broker::Broker`]: one step gives it the room's
//!    next offset, stores it and publishes it to every instance
//!    ([`broker::memory`], or `broker/redis/streams.rs` and its Lua script).
//! 4. Each instance's room feed (`chat/feed.rs`, `chat/sequencer.rs`) gets
//!    it, from its own append or from the broker's [`broker::Inbox`]
//!    (`instance/inbound.rs`), and hands it out in offset order to the
//!    [`fanout::Hub`], which queues the same bytes for every connection of
//!    the room; each connection's writer (`ws/write.rs`) sends it.
//!
//! # The path of one relay frame
//!
//! [`relay::upgrade`] → [`ws`] (limits) → the relay session
//! (`relay/session.rs`: registered? valid JSON?) → [`fanout::Hub`] for this
//! instance's other clients of the action, and [`broker::Broker::publish`]
//! for the other instances, whose [`broker::Inbox`] hands the bytes to
//! their hub unparsed.
//!
//! # The rest
//!
//! - [`instance`]: wiring, background tasks and drain of one instance;
//!   [`config`]: settings from flags, environment and `.env`.
//! - [`presence`]: who is in which room and which relay clients are
//!   registered, kept in the broker and mirrored locally.
//! - [`auth`]: access tokens (JWT); [`identity`]: who a participant is
//!   apart from their name (authorship, sanctions, rate limits);
//!   [`nickname`]: when two nicknames are the same to a reader; [`clock`]:
//!   the wall clock.
//! - [`webhook`]: every room event and relay registration POSTed to the
//!   backend, at least once, in order per room.
//! - [`metrics`], [`logging`], [`supervise`] (restarts the background
//!   tasks the instance needs); [`kind`]: chat or relay; [`memory`]: the
//!   process gives freed memory back.

pub mod admission;
pub mod api;
pub mod auth;
pub mod broker;
pub mod chat;
pub mod clock;
pub mod config;
pub mod fanout;
pub mod http;
pub mod identity;
pub mod instance;
pub mod kind;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod nickname;
pub mod presence;
pub mod relay;
pub mod supervise;
pub mod webhook;
pub mod ws;

#[cfg(test)]
mod testing;

pub use instance::{run, start, Backing, Listeners, Running};

//! The shared crate: the chat wire protocol and its validation rules, and,
//! with the `ui` feature, the Leptos UI. The server builds it with `ssr`,
//! the browser with `hydrate` (both include `ui`); programs that only speak
//! the protocol use it without features.
//!
//! - [`protocol`]: message types (tagged by `"type"`) and the nickname,
//!   message and room rules, used on both sides of the socket.
//! - [`event_reader`]: server frames read without serde, for the browser.
//! - [`relay`]: the action relay's frames (registration, replies) and the
//!   rules for them.
//! - [`state`]: what the page shows, and how each server event changes it.
//! - [`ui`]: the page components and the HTML shell.
//! - [`nav`]: the room a URL names, and moving between rooms in place.
//! - `client` (browser only): the reconnecting WebSocket task.

// The page's view types nest deeply.
#![recursion_limit = "256"]

#[cfg(feature = "hydrate")]
mod client;
pub mod event_reader;
#[cfg(feature = "ui")]
pub mod nav;
pub mod protocol;
pub mod relay;
#[cfg(feature = "ui")]
pub mod state;
#[cfg(feature = "ui")]
pub mod ui;

#[cfg(feature = "ssr")]
pub use ui::shell;
#[cfg(feature = "ui")]
pub use ui::App;

//! Which room the page shows, from its URL, and moving between rooms in
//! place: links and the room form push a history entry, back and forward
//! come back through `popstate`. A router would do the same for a WASM
//! about a tenth heavier.

use crate::protocol::{valid_room, DEFAULT_ROOM};
use leptos::prelude::*;

/// The page's path for a room: `/` for `general`, `/r/<room>` otherwise.
pub fn room_path(room: &str) -> String {
    if room == DEFAULT_ROOM {
        "/".to_owned()
    } else {
        format!("/r/{room}")
    }
}

/// The room a URL names: `/r/<room>`, or `/?room=<room>` (older links), or
/// `general`. `query` is what follows the `?`, if anything.
pub fn room_of_url(path: &str, query: &str) -> String {
    let named = path
        .strip_prefix("/r/")
        .or_else(|| query.split('&').find_map(|pair| pair.strip_prefix("room=")));
    // Valid room names need no percent-decoding: anything else is invalid.
    named
        .filter(|room| valid_room(room))
        .unwrap_or(DEFAULT_ROOM)
        .to_owned()
}

/// The room of the page being rendered (server) or shown (browser).
pub fn room_of_page() -> String {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>()
            .map(|parts| room_of_url(parts.uri.path(), parts.uri.query().unwrap_or_default()))
            .unwrap_or_else(|| DEFAULT_ROOM.to_owned())
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        let location = web_sys::window().expect("a browser window").location();
        let path = location.pathname().unwrap_or_default();
        let search = location.search().unwrap_or_default();
        room_of_url(&path, search.trim_start_matches('?'))
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        DEFAULT_ROOM.to_owned()
    }
}

/// The room the URL names, kept in step with the browser's history.
#[derive(Clone, Copy)]
pub struct Nav {
    pub room: RwSignal<String>,
}

impl Nav {
    pub fn new() -> Self {
        let nav = Nav {
            room: RwSignal::new(room_of_page()),
        };
        // Back and forward: the browser already changed the URL.
        #[cfg(feature = "hydrate")]
        Effect::new(move |_| on_history_move(move || nav.room.set(room_of_page())));
        nav
    }

    /// Goes to `room`, as a new history entry.
    pub fn go(&self, room: &str) {
        if *room == *self.room.read_untracked() {
            return;
        }
        #[cfg(feature = "hydrate")]
        push_history(&room_path(room));
        self.room.set(room.to_owned());
    }

    /// A click on a link to `room`: handled in place, unless the person
    /// asked for a new tab or window (a modifier key, another button).
    pub fn follow(&self, ev: leptos::ev::MouseEvent, room: &str) {
        if ev.button() != 0 || ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key() {
            return;
        }
        ev.prevent_default();
        self.go(room);
    }
}

impl Default for Nav {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "hydrate")]
fn push_history(path: &str) {
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(path));
    }
}

#[cfg(feature = "hydrate")]
fn on_history_move(moved: impl Fn() + 'static) {
    use wasm_bindgen::{closure::Closure, JsCast};
    let Some(window) = web_sys::window() else {
        return;
    };
    let moved = Closure::<dyn Fn()>::new(moved);
    window.set_onpopstate(Some(moved.as_ref().unchecked_ref()));
    // The page lives as long as the window: so does the listener.
    moved.forget();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_room() {
        assert_eq!(room_of_url("/", ""), "general");
        assert_eq!(room_of_url("/r/rust-fr", ""), "rust-fr");
        assert_eq!(room_of_url("/", "room=b_2"), "b_2");
        assert_eq!(room_of_url("/", "x=1&room=b"), "b");
        // Invalid names (or anything needing decoding) fall back.
        assert_eq!(room_of_url("/r/a%20b", ""), "general");
        assert_eq!(room_of_url("/r/", ""), "general");
        assert_eq!(room_of_url("/", "room="), "general");
        assert_eq!(room_path("general"), "/");
        assert_eq!(room_path("b"), "/r/b");
    }
}

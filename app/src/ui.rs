//! The chat page. Rendered on the server, hydrated in the browser; the
//! socket starts only in the browser.

use crate::protocol::{ClientMessage, MessageText, Pseudo};
use crate::state::{ChatState, Entry};
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    StaticSegment,
};

/// The HTML document around the app, for server-side rendering.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/chat.css"/>
        <Title text="Chat"/>
        <Router>
            <Routes fallback=|| "Page not found.">
                <Route path=StaticSegment("") view=ChatPage/>
            </Routes>
        </Router>
    }
}

#[component]
fn ChatPage() -> impl IntoView {
    let state = ChatState::new();
    let send = outbox(state);
    let pseudo_input = RwSignal::new(String::new());
    let text_input = RwSignal::new(String::new());
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));

    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match Pseudo::parse(&pseudo_input.get_untracked()) {
            Err(reason) => state.error.set(Some(capitalize(&reason.to_string()))),
            Ok(pseudo) => {
                state.error.set(None);
                let pseudo = pseudo.as_str().to_owned();
                send(if state.me.get_untracked().is_some() {
                    ClientMessage::Rename { pseudo }
                } else {
                    ClientMessage::Join {
                        pseudo,
                        session: session(),
                    }
                });
            }
        }
    };
    let say = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match MessageText::parse(&text_input.get_untracked()) {
            Err(reason) => state.error.set(Some(capitalize(&reason.to_string()))),
            Ok(text) => {
                state.error.set(None);
                send(ClientMessage::Say {
                    text: text.into_string(),
                });
                text_input.set(String::new());
            }
        }
    };
    let joined = move || state.me.with(Option::is_some);
    // A message the server could not store goes back into the composer,
    // unless something new was typed meanwhile.
    Effect::new(move |_| {
        if let Some(text) = state.returned.get() {
            state.returned.set(None);
            if text_input.with_untracked(String::is_empty) {
                text_input.set(text);
            }
        }
    });

    view! {
        <main class="chat" data-hydrated=move || hydrated.get().to_string()>
            <header class="bar">
                <h1>"Chat"</h1>
                <span class="participants">
                    "Participants: "
                    <strong data-testid="participant-count">{move || state.count.get()}</strong>
                </span>
                <span
                    class=move || format!("status status-{}", state.status.get().label())
                    data-testid="connection-status"
                >
                    {move || state.status.get().label()}
                </span>
            </header>
            <form class="pseudo" on:submit=join>
                <label for="pseudo">
                    {move || match state.me.get() {
                        Some(me) => format!("You are {me}. New nickname:"),
                        None => "Nickname:".to_owned(),
                    }}
                </label>
                <input
                    id="pseudo"
                    data-testid="pseudo-input"
                    autocomplete="nickname"
                    placeholder="Your nickname"
                    prop:value=move || pseudo_input.get()
                    on:input=move |ev| pseudo_input.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="join-button">
                    {move || if joined() { "Change" } else { "Join" }}
                </button>
            </form>
            <Show when=move || state.error.with(Option::is_some)>
                <p class="error" role="alert" data-testid="error">
                    {move || state.error.get().unwrap_or_default()}
                </p>
            </Show>
            <Show when=move || state.unrecovered.get()>
                <p class="notice" role="status" data-testid="recovery-notice">
                    "Some earlier messages could not be recovered; the conversation resumes from here. "
                    <button type="button" on:click=move |_| state.unrecovered.set(false)>
                        "Dismiss"
                    </button>
                </p>
            </Show>
            <MessageList state/>
            <form class="compose" on:submit=say>
                <input
                    data-testid="message-input"
                    placeholder=move || {
                        if joined() { "Write a message" } else { "Join to write" }
                    }
                    disabled=move || !joined()
                    prop:value=move || text_input.get()
                    on:input=move |ev| text_input.set(event_target_value(&ev))
                />
                <button type="submit" data-testid="send-button" disabled=move || !joined()>
                    "Send"
                </button>
            </form>
        </main>
    }
}

#[component]
fn MessageList(state: ChatState) -> impl IntoView {
    let list = NodeRef::<leptos::html::Ul>::new();
    // Keep the newest entry in view.
    Effect::new(move |_| {
        state.entries.track();
        if let Some(ul) = list.get() {
            ul.set_scroll_top(ul.scroll_height());
        }
    });
    let mine = move |author: &str| {
        state
            .my_names
            .with(|names| names.iter().any(|n| n == author))
    };
    view! {
        <ul class="messages" data-testid="messages" node_ref=list>
            <For each=move || state.entries.get() key=Entry::id let:entry>
                {match entry {
                    Entry::Message(m) => {
                        let author = m.author.clone();
                        view! {
                            <li class="message" class:own=move || mine(&author) data-testid="message">
                                <span class="author" data-testid="message-author">{m.author}</span>
                                <time class="time" data-testid="message-time">{local_time(m.ts)}</time>
                                <p class="text" data-testid="message-text">{m.text}</p>
                            </li>
                        }
                            .into_any()
                    }
                    Entry::System(s) => {
                        view! {
                            <li class="system" data-testid="system-message">
                                <span>{s.text()}</span>
                                <time class="time">{local_time(s.ts)}</time>
                            </li>
                        }
                            .into_any()
                    }
                }}
            </For>
        </ul>
    }
}

/// How the page sends frames: through the socket in the browser; the server
/// renders the page but never runs its event handlers.
fn outbox(state: ChatState) -> impl Fn(ClientMessage) + Copy {
    #[cfg(feature = "hydrate")]
    {
        let connection = StoredValue::new(crate::client::connect(state));
        move |msg| connection.with_value(|c| c.send(msg))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = state;
        |_msg| {}
    }
}

fn session() -> Option<uuid::Uuid> {
    #[cfg(feature = "hydrate")]
    {
        Some(crate::client::session())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        None
    }
}

/// "hh:mm:ss" in the reader's time zone.
fn local_time(ts: u64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ts as f64));
        String::from(date.to_locale_time_string("default"))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let secs = ts / 1000;
        format!(
            "{:02}:{:02}:{:02} UTC",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        )
    }
}

fn capitalize(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

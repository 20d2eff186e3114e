//! The chat page. Rendered on the server, hydrated in the browser; the
//! socket starts only in the browser.

#[cfg(feature = "ssr")]
use crate::nav::room_of_page;
use crate::nav::{room_path, Nav};
use crate::protocol::{valid_room, ClientMessage, MessageText, Pseudo, TYPING_EVERY_MS};
use crate::state::{ChatState, Entry, Status};
use leptos::either::Either;
use leptos::prelude::*;

/// The HTML document around the app, for server-side rendering.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    // leptos_meta's title has no hydration marker in it (debug builds
    // would put one in a plain <title>{..}</title>, shown in the tab).
    use leptos_meta::{HashedStylesheet, MetaTags, Title};
    let title = page_title(&room_of_page(), 0);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="description" content="A real-time chat: pick a nickname, enter a room, talk."/>
                <meta name="theme-color" content="#1d4fb8"/>
                <Title text=title/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <AutoReload options=options.clone()/>
                <HashedStylesheet options=options.clone() id="leptos"/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The chat page of the room the URL names. The server answers only `/`
/// and `/r/<room>` with it; moving between rooms happens in place, through
/// the browser's history, without a router (it would weigh on the WASM).
#[component]
pub fn App() -> impl IntoView {
    let state = ChatState::new();
    let nav = Nav::new();
    state.room.set(nav.room.get_untracked());
    let outbox = Outbox::new(state);
    // Navigating to another room (a link, the room form, back and forward)
    // keeps the page and moves the socket.
    Effect::new(move |_| {
        let room = nav.room.get();
        if room != state.room.get_untracked() {
            state.switch_room(&room);
            outbox.switch_room();
        }
    });
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| {
        hydrated.set(true);
        watch_visibility(state);
    });
    // The server wrote the first title; the page keeps it current.
    Effect::new(move |_| set_title(&state.room.with(|room| page_title(room, state.unread.get()))));

    // The page in parts, none type-erased: `into_any` keeps every
    // way of rendering a view (async hydration included) in the WASM, and
    // cost it about a quarter of its weight. The parts of this function are
    // plain functions rather than components: as components, their props
    // and builders weighed 1.4 KB more in the WASM.
    view! {
        // `moderation` and `moderator` decide which moderation buttons show
        // (CSS): no reactive attribute per button keeps the WASM small.
        <div
            class=move || match (state.moderator.get(), state.moderation.get()) {
                (true, _) => "chat moderation moderator",
                (false, true) => "chat moderation",
                (false, false) => "chat",
            }
            data-hydrated=move || hydrated.get().to_string()
            on:click=move |ev| {
                if let Some((action, on)) = clicked(&ev) {
                    moderate(state, outbox, &action, on);
                }
            }
        >
            {header(state)}
            <div class="layout">
                <aside class="side">
                    <Rooms state nav/>
                    {room_form(state, nav)}
                    <Online state/>
                </aside>
                <main class="conversation">
                    <h2 class="room-name">
                        "# " <span data-testid="current-room">{move || state.room.get()}</span>
                    </h2>
                    {nickname_form(state, outbox)}
                    {notices(state, outbox)}
                    <MessageList state outbox/>
                    <Typing state/>
                    {composer(state, outbox)}
                </main>
            </div>
        </div>
    }
}

/// The page's title bar: the room's participant count and the state of
/// the connection.
fn header(state: ChatState) -> impl IntoView {
    view! {
        <header class="bar">
            <h1>"Chat"</h1>
            <span class="participants">
                "Participants: "
                <strong data-testid="participant-count">{move || state.count.get()}</strong>
            </span>
            <span
                class=move || format!("status status-{}", state.status.get().label())
                data-testid="connection-status"
                role="status"
            >
                {move || state.status.get().label()}
            </span>
        </header>
    }
}

/// Enters a room by name.
fn room_form(state: ChatState, nav: Nav) -> impl IntoView {
    let room_input = RwSignal::new(String::new());
    let enter_room = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = room_input.get_untracked().trim().to_owned();
        if valid_room(&name) {
            state.error.set(None);
            room_input.set(String::new());
            nav.go(&name);
        } else {
            let reason = "A room name is 1 to 64 letters, digits, '-' or '_'";
            state.error.set(Some(reason.to_owned()));
        }
    };
    view! {
        <form class="enter" on:submit=enter_room>
            <label for="room" class="visually-hidden">"Room name"</label>
            <input
                id="room"
                data-testid="room-input"
                placeholder="Room name"
                autocomplete="off"
                prop:value=move || room_input.get()
                on:input=move |ev| room_input.set(event_target_value(&ev))
            />
            <button type="submit" data-testid="room-button">"Enter"</button>
        </form>
    }
}

/// Takes a nickname in the room, or changes it once joined.
fn nickname_form(state: ChatState, outbox: Outbox) -> impl IntoView {
    let pseudo_input = RwSignal::new(String::new());
    let join = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match Pseudo::parse(&pseudo_input.get_untracked()) {
            Err(reason) => state.error.set(Some(capitalize(&reason.to_string()))),
            Ok(pseudo) => {
                state.error.set(None);
                let pseudo = pseudo.as_str().to_owned();
                outbox.send(if state.me.get_untracked().is_some() {
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
    view! {
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
                {move || if state.joined() { "Change" } else { "Join" }}
            </button>
        </form>
    }
}

/// The latest error, the notice that some messages are lost for good, and
/// why the page stopped talking to the room.
fn notices(state: ChatState, outbox: Outbox) -> impl IntoView {
    view! {
        <Show when=move || state.error.with(Option::is_some)>
            <p class="error" role="alert" data-testid="error">
                {move || state.error.get().unwrap_or_default()}
                // Once the page stopped (another tab, or removed): it waits
                // for this.
                <button
                    type="button"
                    data-testid="resume-button"
                    hidden=move || !state.ended.get()
                    on:click=move |_| outbox.resume()
                >
                    "Reconnect"
                </button>
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
    }
}

/// Writes and sends messages, and tells the others while it is used.
fn composer(state: ChatState, outbox: Outbox) -> impl IntoView {
    let text_input = RwSignal::new(String::new());
    let field = NodeRef::<leptos::html::Input>::new();
    let last_typing = StoredValue::new(0.0_f64);
    let say = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        match MessageText::parse(&text_input.get_untracked()) {
            Err(reason) => state.error.set(Some(capitalize(&reason.to_string()))),
            Ok(text) => {
                state.error.set(None);
                // An id per message: sent again after a cut, it is not doubled.
                outbox.send(ClientMessage::Say {
                    text: text.into_string(),
                    id: Some(uuid::Uuid::new_v4()),
                });
                text_input.set(String::new());
                last_typing.set_value(0.0);
            }
        }
        if let Some(input) = field.get() {
            let _ = input.focus();
        }
    };
    // Others see "is typing" while this person types: one frame every few
    // seconds at most, only when it can reach them.
    let typed = move || {
        let now = now_ms();
        let connected = state.status.get_untracked() == Status::Connected;
        let typing = !text_input.with_untracked(String::is_empty);
        if state.joined()
            && connected
            && typing
            && now - last_typing.get_value() >= TYPING_EVERY_MS as f64
        {
            last_typing.set_value(now);
            outbox.send(ClientMessage::Typing);
        }
    };
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
        <form class="compose" on:submit=say>
            <label for="message" class="visually-hidden">"Message"</label>
            <input
                id="message"
                data-testid="message-input"
                autocomplete="off"
                node_ref=field
                placeholder=move || {
                    if state.joined() { "Write a message" } else { "Join to write" }
                }
                disabled=move || !state.joined()
                prop:value=move || text_input.get()
                on:input=move |ev| {
                    text_input.set(event_target_value(&ev));
                    typed();
                }
            />
            <button type="submit" data-testid="send-button" disabled=move || !state.joined()>
                "Send"
            </button>
        </form>
    }
}

/// The busiest rooms, with their participant counts and unread marks.
#[component]
fn Rooms(state: ChatState, nav: Nav) -> impl IntoView {
    view! {
        <nav class="rooms" aria-label="Rooms">
            <h2>"Rooms"</h2>
            <ul data-testid="room-list">
                <For
                    each=move || state.rooms.get()
                    key=|room| (room.name.clone(), room.count, room.activity)
                    let:room
                >
                    {
                        let (data_room, title, href) =
                            (room.name.clone(), room.name.clone(), room_path(&room.name));
                        let target = room.name.clone();
                        let count = room.count;
                        let name = room.name.clone();
                        let current = Memo::new(move |_| state.room.with(|r| *r == name));
                        let unread = move || state.has_unread(&room);
                        view! {
                            <li data-testid="room-item" data-room=data_room class:current=move || current.get()>
                                <a
                                    href=href
                                    aria-current=move || current.get().then_some("page")
                                    on:click=move |ev| nav.follow(ev, &target)
                                >
                                    <span class="room-title">{title}</span>
                                    // The current room's own count is the freshest.
                                    <span class="room-count">
                                        {move || if current.get() { state.count.get() } else { count }}
                                    </span>
                                    <Show when=unread>
                                        <span class="unread" data-testid="unread-mark">"new"</span>
                                    </Show>
                                </a>
                            </li>
                        }
                    }
                </For>
            </ul>
        </nav>
    }
}

/// The current room's participants, by nickname; a moderator can remove,
/// mute or ban each of the others.
#[component]
fn Online(state: ChatState) -> impl IntoView {
    view! {
        <section class="online" aria-label="Online">
            <h2>"Online"</h2>
            // Moderators see the moderation buttons (CSS, see `App`), and one
            // handler serves them all: no closure per button.
            <ul data-testid="online-list">
                <For each=move || state.online.get() key=|name| name.clone() let:name>
                    {
                        // A rename gives the item a new key: drawn again.
                        let me = state.me.with_untracked(|me| me.as_deref() == Some(name.as_str()));
                        let shown = name.clone();
                        view! {
                            <li data-testid="online-item" class:me=me data-on=name>
                                <span class="name">{shown}</span>
                                <span class="moderate" inner_html=PERSON_ACTIONS></span>
                            </li>
                        }
                    }
                </For>
                <Show when=move || { state.online_more.get() > 0 }>
                    <li class="more">{move || format!("and {} more", state.online_more.get())}</li>
                </Show>
            </ul>
        </section>
    }
}

/// "alice is typing…", while somebody else types.
#[component]
fn Typing(state: ChatState) -> impl IntoView {
    let text = move || {
        state.typing.with(|typing| match typing.as_slice() {
            [] => String::new(),
            [(one, _)] => format!("{one} is typing…"),
            [(one, _), (two, _)] => format!("{one} and {two} are typing…"),
            [(one, _), rest @ ..] => format!("{one} and {} others are typing…", rest.len()),
        })
    };
    view! {
        <div class="typing" aria-live="polite">
            <Show when=move || state.typing.with(|t| !t.is_empty())>
                <span data-testid="typing-indicator">{text}</span>
            </Show>
        </div>
    }
}

#[component]
fn MessageList(state: ChatState, outbox: Outbox) -> impl IntoView {
    let list = NodeRef::<leptos::html::Div>::new();
    // A new newest entry: keep it in view. Earlier entries added above:
    // keep what the reader looks at where it was.
    let seen = StoredValue::new((None::<uuid::Uuid>, 0));
    Effect::new(move |_| {
        let last = state.entries.with(|entries| entries.last().map(Entry::id));
        if let Some(ul) = list.get() {
            let ((was_last, was_height), height) = (seen.get_value(), ul.scroll_height());
            let top = if last == was_last {
                ul.scroll_top() + height - was_height
            } else {
                height
            };
            ul.set_scroll_top(top);
            seen.set_value((last, height));
        }
    });
    // Earlier messages: asked for once per first entry, by the button or
    // by reaching the top.
    let asked = StoredValue::new(0);
    let load_earlier = move || {
        if let Some(frame @ ClientMessage::Older { before, .. }) = state.older() {
            if asked.get_value() != before {
                asked.set_value(before);
                outbox.send(frame);
            }
        }
    };
    let mine = move |author: &str| {
        state
            .my_names
            .with(|names| names.iter().any(|n| n == author))
    };
    view! {
        // Which buttons a message shows is CSS's call (see `App`): authors
        // edit and delete their own, moderators delete any, never on a
        // deleted one.
        <div
            class="messages"
            role="log"
            aria-label="Messages"
            data-testid="messages"
            // Scrolled from the keyboard too (once the beginning is shown,
            // nothing in it may take the focus).
            tabindex="0"
            node_ref=list
            on:scroll=move |_| {
                if list.get().is_some_and(|ul| ul.scroll_top() == 0) {
                    load_earlier();
                }
            }
        >
            <p class="earlier">
                <span hidden=move || !state.at_beginning() data-testid="beginning">"Beginning of the room"</span>
                <button type="button" hidden=move || state.at_beginning() data-testid="load-earlier" on:click=move |_| load_earlier()>
                    "Load earlier messages"
                </button>
                <span class="visually-hidden" role="status">
                    {move || match state.pages.get() {
                        0 => String::new(),
                        n => format!("Earlier messages loaded ({n})"),
                    }}
                </span>
            </p>
            <For each=move || state.entries.get() key=Entry::key let:entry>
                {match entry {
                    Entry::Message(m) => {
                        let author = m.author.clone();
                        let id = m.id;
                        let text = if m.deleted { "message deleted".to_owned() } else { m.text };
                        Either::Left(view! {
                            <div class="message" class:own=move || mine(&author) class:deleted=m.deleted class:server=m.server data-testid="message" data-on=id.to_string()>
                                <span class="author" data-testid="message-author">{m.author}</span>
                                <time class="time" data-testid="message-time">{local_time(m.ts)}</time>
                                <span class="edited" data-testid="edited-mark" hidden=!m.edited>"(edited)"</span>
                                <p class="text" data-testid="message-text">{text}</p>
                                <span class="actions" inner_html=MESSAGE_ACTIONS></span>
                            </div>
                        })
                    }
                    Entry::System(s) => {
                        Either::Right(view! {
                            <div class="system" data-testid="system-message">
                                <span>{s.text()}</span>
                                <time class="time">{local_time(s.ts)}</time>
                            </div>
                        })
                    }
                }}
            </For>
            // Sent, not yet stored: shown until their echo comes, one per
            // line (a single text keeps the WASM small).
            // ("sending…" comes from the CSS; empty, it is not shown.)
            <p class="message own pending" data-testid="pending-message">
                {move || state.in_flight.with(|texts| lines(texts))}
            </p>
        </div>
    }
}

/// How the page sends frames and moves rooms: through the socket in the
/// browser; the server renders the page but never runs its handlers.
#[derive(Clone, Copy)]
struct Outbox {
    #[cfg(feature = "hydrate")]
    connection: StoredValue<crate::client::Connection>,
}

impl Outbox {
    fn new(state: ChatState) -> Self {
        #[cfg(feature = "hydrate")]
        {
            Outbox {
                connection: StoredValue::new(crate::client::connect(state)),
            }
        }
        #[cfg(not(feature = "hydrate"))]
        {
            let _ = state;
            Outbox {}
        }
    }

    fn send(&self, msg: ClientMessage) {
        #[cfg(feature = "hydrate")]
        self.connection.with_value(|c| c.send(msg));
        #[cfg(not(feature = "hydrate"))]
        let _ = msg;
    }

    fn switch_room(&self) {
        #[cfg(feature = "hydrate")]
        self.connection.with_value(|c| c.switch_room());
    }

    fn resume(&self) {
        #[cfg(feature = "hydrate")]
        self.connection.with_value(|c| c.resume());
    }
}

/// Counts unread messages while the tab is hidden.
fn watch_visibility(state: ChatState) {
    #[cfg(feature = "hydrate")]
    crate::client::watch_visibility(state);
    #[cfg(not(feature = "hydrate"))]
    let _ = state;
}

fn now_ms() -> f64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0.0
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

/// The buttons of a message and of a person online: the same for each, so
/// plain markup (views with a closure per button weighed 3.7 KB in the
/// gzipped WASM). Which show is CSS's call; one handler per list reads
/// `data-action` on the button and `data-on` on the item.
const MESSAGE_ACTIONS: &str = concat!(
    r#"<button type="button" class="edit" data-testid="edit-button" data-action="edit">Edit</button>"#,
    r#"<button type="button" class="delete" data-testid="delete-button" data-action="delete">Delete</button>"#,
);
const PERSON_ACTIONS: &str = concat!(
    r#"<button type="button" data-testid="kick-button" data-action="kick">Kick</button>"#,
    r#"<button type="button" data-testid="mute-button" data-action="mute">Mute 10 min</button>"#,
    r#"<button type="button" data-testid="ban-button" data-action="ban">Ban 1 day</button>"#,
);

/// The texts one per line (without `join`'s generic code in the WASM).
fn lines(texts: &[String]) -> String {
    let mut all = String::new();
    for text in texts {
        if !all.is_empty() {
            all.push('\n');
        }
        all.push_str(text);
    }
    all
}

/// Acts on a moderation button: `on` is the message id, or the person.
fn moderate(state: ChatState, outbox: Outbox, action: &str, on: String) {
    let frame = match (action, crate::protocol::parse_uuid(&on)) {
        ("delete", Some(id)) => ClientMessage::Delete { id },
        ("edit", Some(id)) => {
            let current = state.entries.with_untracked(|entries| {
                entries.iter().find_map(|entry| match entry {
                    Entry::Message(m) if m.id == id => Some(m.text.clone()),
                    _ => None,
                })
            });
            let Some(text) = current.and_then(|current| ask("New text", &current)) else {
                return;
            };
            ClientMessage::Edit { id, text }
        }
        ("kick", _) => ClientMessage::Kick { pseudo: on },
        ("mute", _) => ClientMessage::Mute {
            pseudo: on,
            seconds: 600,
        },
        ("ban", _) => ClientMessage::Ban {
            pseudo: on,
            seconds: 86_400,
            redact_minutes: 0,
        },
        _ => return,
    };
    outbox.send(frame);
}

/// The moderation button a click landed on, if any: its `data-action` and
/// what it acts on (its item's `data-on`).
fn clicked(ev: &leptos::ev::MouseEvent) -> Option<(String, String)> {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        // The buttons hold only text: the click's target is the button.
        let button = ev.target()?.dyn_into::<web_sys::Element>().ok()?;
        let action = button.get_attribute("data-action")?;
        let item = button.closest("[data-on]").ok()??;
        Some((action, item.get_attribute("data-on")?))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ev;
        None
    }
}

/// Asks the person for a text (the browser's own dialog: keyboard-ready
/// and announced by screen readers); `None` when cancelled or unchanged.
fn ask(question: &str, current: &str) -> Option<String> {
    #[cfg(feature = "hydrate")]
    {
        let window = web_sys::window()?;
        let answer = window
            .prompt_with_message_and_default(question, current)
            .ok()??;
        (answer != current && MessageText::parse(&answer).is_ok()).then_some(answer)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (question, current);
        None
    }
}

fn capitalize(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// "general · Chat", or "(3) general · Chat" with unread messages.
fn page_title(room: &str, unread: u32) -> String {
    match unread {
        0 => format!("{room} · Chat"),
        n => format!("({n}) {room} · Chat"),
    }
}

fn set_title(title: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(document) = web_sys::window().and_then(|w| w.document()) {
        document.set_title(title);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = title;
}

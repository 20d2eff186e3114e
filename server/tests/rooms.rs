//! Rooms as people see them, across two instances: the room list with its
//! counts, who is online in a room, who is typing, and the limit on new
//! rooms. Each client keeps a view built only from the frames it receives,
//! as the page does.

mod common;

use app::protocol::{ClientMessage, ErrorCode, RoomSummary, ServerEvent, ONLINE_SHOWN};
use common::{Chat, Endpoint, Instance, Redis, WAIT};
use std::collections::BTreeSet;

/// What one client knows, from its frames alone.
#[derive(Debug, Default)]
struct View {
    count: u64,
    online: BTreeSet<String>,
    more: u64,
    rooms: Vec<RoomSummary>,
    typing: Vec<String>,
    messages: Vec<String>,
}

impl View {
    fn apply(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::Count { count } => self.count = count,
            ServerEvent::Online { names, more } => {
                self.online = names.into_iter().collect();
                self.more = more;
            }
            ServerEvent::OnlineChanged {
                added,
                removed,
                more,
            } => {
                for name in removed {
                    self.online.remove(&name);
                }
                self.online.extend(added);
                self.more = more;
            }
            ServerEvent::Rooms { rooms } => self.rooms = rooms,
            ServerEvent::Typing { pseudo } => self.typing.push(pseudo),
            ServerEvent::Message(m) => self.messages.push(m.text),
            _ => {}
        }
    }

    fn online(&self) -> Vec<&str> {
        self.online.iter().map(String::as_str).collect()
    }

    fn rooms(&self) -> Vec<(&str, u64)> {
        self.rooms
            .iter()
            .map(|r| (r.name.as_str(), r.count))
            .collect()
    }
}

/// A participant and their view.
struct Person {
    chat: Chat,
    view: View,
}

impl Person {
    /// Opens the room's page without joining: a reader.
    async fn watch(server: &impl Endpoint, room: &str) -> Person {
        let (chat, _, count) = Chat::open(server, &format!("?room={room}")).await;
        let view = View {
            count,
            ..View::default()
        };
        Person { chat, view }
    }

    /// Opens the room and joins it, keeping what arrives before `joined`.
    async fn join(server: &impl Endpoint, room: &str, pseudo: &str) -> Person {
        let mut person = Person::watch(server, room).await;
        let chat = &mut person.chat;
        chat.send(&ClientMessage::Join {
            pseudo: pseudo.into(),
            session: Some(chat.session),
        })
        .await;
        loop {
            match chat.event().await {
                ServerEvent::Joined { .. } => break,
                ServerEvent::Error { message, .. } => panic!("{pseudo} cannot join: {message}"),
                event => person.view.apply(event),
            }
        }
        person
    }

    /// Reads frames until the view satisfies `done`.
    async fn until(&mut self, what: &str, done: impl Fn(&View) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&self.view) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.chat.event()).await {
                Ok(event) => self.view.apply(event),
                Err(_) => panic!("timed out waiting for {what}; view: {:?}", self.view),
            }
        }
    }
}

/// The count and the online list agree.
fn consistent(view: &View) -> bool {
    view.online.len() as u64 + view.more == view.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_lists_online_lists_and_counts_agree_across_instances() {
    let redis = Redis::start();
    let (a, b) = Instance::pair(Some(&redis), &[]).await;
    let mut alice = Person::join(&a, "lobby", "alice").await;
    let mut bob = Person::join(&b, "lobby", "bob").await;
    let mut carol = Person::join(&b, "side", "carol").await;

    for person in [&mut alice, &mut bob] {
        person
            .until("alice and bob in the lobby", |v| {
                v.online() == ["alice", "bob"] && consistent(v)
            })
            .await;
    }
    carol
        .until("carol alone in her room", |v| {
            v.online() == ["carol"] && consistent(v)
        })
        .await;
    for person in [&mut alice, &mut bob, &mut carol] {
        person
            .until("both rooms listed, busiest first", |v| {
                v.rooms().starts_with(&[("lobby", 2), ("side", 1)])
            })
            .await;
    }

    // Messages stay in their room.
    bob.chat.say("lobby only").await;
    alice
        .until("bob's message", |v| {
            v.messages.contains(&"lobby only".into())
        })
        .await;
    // Nothing of the lobby reached carol: the next message she gets is
    // one said after, in her room.
    carol.chat.say("side only").await;
    carol
        .until("carol's own message", |v| {
            v.messages.contains(&"side only".into())
        })
        .await;
    assert_eq!(carol.view.messages, ["side only"]);

    // A rename and a departure reach every online list as changes.
    bob.chat
        .send(&ClientMessage::Rename {
            pseudo: "robert".into(),
        })
        .await;
    alice
        .until("bob renamed", |v| {
            v.online() == ["alice", "robert"] && consistent(v)
        })
        .await;
    carol.chat.client.close().await;
    alice
        .until("the empty room leaves the list", |v| {
            v.rooms().iter().all(|(room, _)| *room != "side")
        })
        .await;
    bob.chat.client.close().await;
    alice
        .until("robert gone", |v| v.online() == ["alice"] && consistent(v))
        .await;
}

/// Default settings: 24 people from one address arrive in a new room at
/// once on two instances (the room is opened once, not 24 times), then
/// half leave while the rest talk and new readers open the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_lists_stay_right_while_people_join_and_leave_at_once_on_two_instances() {
    let redis = Redis::start();
    let (a, b) = Instance::pair(Some(&redis), &[]).await;
    let servers = [&a, &b];
    let mut readers = vec![
        Person::watch(&a, "crowd").await,
        Person::watch(&b, "crowd").await,
    ];
    const PEOPLE: usize = 24;
    let names: Vec<String> = (0..PEOPLE).map(|i| format!("p{i:02}")).collect();
    let joins = names
        .iter()
        .enumerate()
        .map(|(i, name)| Person::join(servers[i % 2], "crowd", name));
    let mut people = futures::future::join_all(joins).await;

    // Half of them leave while the others talk and new readers open the
    // page, on both instances at once.
    let leaving: Vec<Person> = people.drain(..PEOPLE / 2).collect();
    let leaves = leaving.into_iter().map(|p| p.chat.client.close());
    let talks = people.iter_mut().map(|p| p.chat.say("still here"));
    let late = (0..4).map(|i| Person::watch(servers[i % 2], "crowd"));
    let (_, _, late) = tokio::join!(
        futures::future::join_all(leaves),
        futures::future::join_all(talks),
        futures::future::join_all(late),
    );
    readers.extend(late);

    let staying = &names[PEOPLE / 2..];
    for reader in readers.iter_mut().chain(people.iter_mut()) {
        reader
            .until("the online list of those who stayed", |v| {
                v.online()
                    .iter()
                    .copied()
                    .eq(staying.iter().map(String::as_str))
                    && consistent(v)
            })
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_stamped_by_the_server_shown_to_others_and_not_stored() {
    let redis = Redis::start();
    let (server, other) = Instance::pair(Some(&redis), &[]).await;
    let mut alice = Person::join(&server, "general", "alice").await;
    let mut bob = Person::join(&other, "general", "bob").await;
    let mut ben = Person::join(&other, "general", "ben").await;

    // Whatever name the frame carries, the server says who typed.
    bob.chat
        .client
        .send_text(r#"{"type":"typing","pseudo":"alice"}"#)
        .await;
    // On the other instance and on the typist's own.
    alice.until("bob typing", |v| v.typing == ["bob"]).await;
    ben.until("bob typing", |v| v.typing == ["bob"]).await;
    // Not echoed to the typist; repeated frames are thinned out.
    for _ in 0..5 {
        bob.chat.send(&ClientMessage::Typing).await;
    }
    bob.chat.say("done").await;
    bob.until("bob's own message", |v| !v.messages.is_empty())
        .await;
    assert!(bob.view.typing.is_empty(), "{:?}", bob.view.typing);
    alice
        .until("bob's message", |v| v.messages == ["done"])
        .await;
    assert_eq!(alice.view.typing, ["bob"]);

    // Not in the history a newcomer gets.
    let (_, history, _) = Chat::open(&server, "").await;
    assert!(history
        .iter()
        .all(|e| !matches!(e, ServerEvent::Typing { .. })));

    // Only a participant types.
    let (mut watcher, _, _) = Chat::open(&server, "").await;
    watcher.send(&ClientMessage::Typing).await;
    assert_eq!(watcher.expect_error().await, ErrorCode::NotJoined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_opens_only_a_few_new_rooms_a_minute() {
    // Default settings: 5 new rooms a minute per address.
    let redis = Redis::start();
    let server = Instance::configured(Some(&redis), &[]).await;
    let mut kept = Vec::new();
    for i in 0..5 {
        kept.push(Chat::join_room(&server, &format!("new{i}"), "maker").await);
    }
    let (mut sixth, _, _) = Chat::open(&server, "?room=new5").await;
    sixth
        .send(&ClientMessage::Join {
            pseudo: "maker".into(),
            session: None,
        })
        .await;
    assert_eq!(sixth.expect_error().await, ErrorCode::TooManyRooms);
    // The refused join left nobody behind.
    assert_eq!(Chat::open(&server, "?room=new5").await.2, 0);
    // Rooms with people in them are not new: entering them is free.
    let _visitor = Chat::join_room(&server, "new0", "visitor").await;
    let _general = Chat::join(&server, "maker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_room_shows_a_capped_online_list_that_adds_up_to_its_count() {
    let redis = Redis::start();
    let server = Instance::configured(Some(&redis), &[]).await;
    let mut people = Vec::new();
    for i in 0..ONLINE_SHOWN + 5 {
        people.push(Chat::join(&server, &format!("p{i}")).await);
    }
    let (mut reader, _, count) = Chat::open(&server, "").await;
    assert_eq!(count, ONLINE_SHOWN as u64 + 5);
    match reader.event().await {
        ServerEvent::Online { names, more } => {
            assert_eq!(names.len(), ONLINE_SHOWN);
            assert_eq!(more, 5);
        }
        other => panic!("expected the online list, got {other:?}"),
    }
}

/// An IPv6 host gets a whole /64: new rooms count per /64, as connections
/// do, not per address (else one host has billions of allowances). Through
/// a trusted proxy's header, on default limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_host_opens_new_rooms_as_one_address() {
    let server = Instance::configured(None, &[("TRUSTED_PROXY_HEADER", "X-Forwarded-For")]).await;
    let mut kept = Vec::new();
    for i in 0..6 {
        let from = format!("2001:db8:1:2::{:x}", i + 1);
        let url = server.chat_url(&format!("?room=v6-{i}"));
        let client = common::try_connect(&url, &[("X-Forwarded-For", &from)], None)
            .await
            .expect("the socket opens");
        let mut chat = common::Chat::from_client(client).await;
        chat.send(&ClientMessage::Join {
            pseudo: "maker".into(),
            session: None,
        })
        .await;
        let answer = chat
            .expect(|e| matches!(e, ServerEvent::Joined { .. } | ServerEvent::Error { .. }))
            .await;
        match (i, answer) {
            (0..5, ServerEvent::Joined { .. }) => kept.push(chat),
            (5, ServerEvent::Error { code, .. }) => assert_eq!(code, ErrorCode::TooManyRooms),
            (i, other) => panic!("room {i}: {other:?}"),
        }
    }
}

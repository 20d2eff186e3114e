//! One relay connection: registration, then forwarding.

use super::Relay;
use crate::auth;
use crate::broker::{self, BrokerError, Subscription};
use crate::fanout::{close, CloseReason, ConnId, Kind, Peer, Topic};
use crate::metrics;
use crate::ws::{self, Handler, Outbound, Preamble, Refusal, Socket};
use app::relay::{check_frame, registration_action, RelayReply};
use axum::extract::ws::Utf8Bytes;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub async fn run<S: Socket>(relay: Arc<Relay>, socket: S, bearer: Option<String>) {
    let id = Uuid::new_v4();
    let started = Instant::now();
    let (peer, queue) = Peer::new(Kind::Relay, relay.outbound_queue);
    metrics::connection_opened(Kind::Relay);
    tracing::info!(conn = %id, kind = "relay", "connection opened");
    let session = RelaySession {
        relay: relay.clone(),
        id,
        peer: peer.clone(),
        registered: None,
        bearer,
    };
    let outbound = Outbound {
        peer,
        queue,
        preamble: Preamble::default(),
    };
    // The session lives in the connection's future, which gives it back.
    let (reason, session) = ws::drive(socket, outbound, session, &relay.limits).await;
    // Boxed, like every step outside the connection's long life: awaited
    // in place, its state would size the task of every idle connection.
    // Nothing here borrows the session, which would keep its space in the
    // task across that wait.
    let action = Box::pin(session.leave()).await;
    metrics::connection_closed(Kind::Relay);
    tracing::info!(
        conn = %id,
        kind = "relay",
        action = action.as_ref().map(Topic::name),
        duration_ms = started.elapsed().as_millis() as u64,
        reason,
        "connection closed"
    );
}

/// The action a client registered for.
struct Registered {
    /// Its registration message, as recorded, kept for the webhook's
    /// "unregistered" (only with webhooks: an idle connection holds no more
    /// than it needs).
    data: Option<Utf8Bytes>,
    topic: Topic,
    /// The instance follows the action for this client, once it was asked
    /// to (undone when dropped).
    subscription: Option<Subscription>,
}

struct RelaySession {
    relay: Arc<Relay>,
    id: ConnId,
    peer: Peer,
    registered: Option<Registered>,
    /// The token of an `Authorization: Bearer` header, if any.
    bearer: Option<String>,
}

fn error_frame(error: String) -> Utf8Bytes {
    RelayReply::Error { error }.encode().into()
}

impl Handler for RelaySession {
    const KIND: Kind = Kind::Relay;

    async fn on_text(&mut self, text: Utf8Bytes) -> Option<CloseReason> {
        let Some(registered) = &self.registered else {
            return self.register(text).await;
        };
        if let Err(reason) = check_frame(&text) {
            metrics::error("relay", "invalid_json");
            self.peer.send(error_frame(reason.to_string()));
            return None;
        }
        let action = registered.topic.name();
        tracing::debug!(conn = %self.id, action, message = %text, "relay message");
        let relay = &self.relay;
        let (broker, topic) = (relay.broker.as_ref(), &registered.topic);
        let sent = broker::broadcast(broker, &relay.hub, relay.instance, topic, text, self.id);
        // Local delivery happened; the sender learns that the other
        // instances' clients missed it, rather than hearing nothing.
        match sent.await {
            Ok(()) => {}
            Err(err @ BrokerError::Missed(_)) => {
                self.peer
                    .send(error_frame(format!("not delivered everywhere: {err}")));
            }
            Err(err) => {
                let why = format!("delivered to the clients of this server only: {err}");
                self.peer.send(error_frame(why));
            }
        }
        None
    }

    fn refusal(&self, refusal: Refusal) -> Utf8Bytes {
        error_frame(match refusal {
            Refusal::TooLarge(max) => format!("message larger than {max} bytes"),
            Refusal::RateLimited => "too many messages: slow down".into(),
            Refusal::Binary => "binary frames are not supported: send JSON as text".into(),
        })
    }

    /// A binary first frame is not a registration: refused like any other.
    fn on_binary(&self) -> Option<CloseReason> {
        self.registered
            .is_none()
            .then_some(close::REGISTRATION_REFUSED)
    }
}

impl RelaySession {
    /// Unregisters the client, if it registered; returns its action.
    async fn leave(self) -> Option<Topic> {
        let (relay, id) = (&self.relay, self.id);
        let mut registered = self.registered?;
        relay.hub.remove(&registered.topic, id);
        registered.subscription.take();
        // On shutdown the instance's entries are removed all at once.
        if !relay.shutdown.is_cancelled() {
            relay.presence.unregister(registered.topic.name(), id).await;
        }
        if let (Some(outbox), Some(data)) = (&relay.outbox, &registered.data) {
            let action = registered.topic.name();
            outbox.relay("unregistered", action, id, data).await;
        }
        Some(registered.topic)
    }

    /// With `RELAY_AUTH=required`: checks the token (the registration's
    /// `token`, else the Bearer header) and returns the registration to
    /// record, without the token and with the token's `sub`, and the `sub`.
    fn authorize(
        &self,
        action: &str,
        text: Utf8Bytes,
    ) -> Result<(Utf8Bytes, Option<String>), auth::Refused> {
        let Some(verifier) = &self.relay.auth else {
            return Ok((text, None));
        };
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|_| auth::Refused::Malformed)?;
        let token = match fields.remove("token") {
            Some(serde_json::Value::String(token)) => token,
            Some(_) => return Err(auth::Refused::Malformed),
            None => self.bearer.clone().ok_or(auth::Refused::Missing)?,
        };
        let grant = verifier.verify(&token)?;
        if !grant.allows(action) {
            return Err(auth::Refused::OutOfScope);
        }
        tracing::info!(conn = %self.id, action, sub = grant.sub.as_deref(), "relay token accepted");
        match &grant.sub {
            Some(sub) => fields.insert("sub".into(), sub.clone().into()),
            None => fields.remove("sub"),
        };
        let registration = serde_json::Value::Object(fields).to_string().into();
        Ok((registration, grant.sub))
    }

    async fn register(&mut self, text: Utf8Bytes) -> Option<CloseReason> {
        let action = match registration_action(&text) {
            Ok(action) => action,
            Err(reason) => {
                metrics::error("relay", "registration");
                self.peer.send(error_frame(reason.to_string()));
                return Some(close::REGISTRATION_REFUSED);
            }
        };
        let (text, subject) = match self.authorize(&action, text) {
            Ok(granted) => granted,
            Err(refused) => {
                metrics::error("relay", refused.label());
                tracing::info!(conn = %self.id, action, reason = refused.label(), "relay registration refused");
                self.peer.send(error_frame(refused.to_string()));
                return Some(close::TOKEN_REFUSED);
            }
        };
        // Needed for the registration only: not kept for the connection's life.
        self.bearer = None;
        let topic = Topic::Action(action.as_str().into());
        // Recorded before any await, so that a connection cut short during
        // registration is still unregistered when it closes.
        let relay = self.relay.clone();
        self.registered = Some(Registered {
            data: relay.outbox.as_ref().map(|_| text.clone()),
            topic: topic.clone(),
            subscription: None,
        });
        // Listed under its token's subject, so that the server API can
        // disconnect it.
        if let Some(sub) = subject {
            self.peer.mark([crate::identity::subject_mark(&sub)]);
        }
        relay.presence.register(&action, self.id, &text).await;
        if let Some(outbox) = &relay.outbox {
            outbox.relay("registered", &action, self.id, &text).await;
        }
        // "registered" means "you get every later frame": the instance
        // follows the action before the reply, and the client listens
        // right after it, with no frame in between.
        let subscription = broker::subscribe(&relay.broker, topic.clone()).await;
        if let Some(registered) = &mut self.registered {
            registered.subscription = Some(subscription);
        }
        let reply = RelayReply::Registered {
            id: self.id,
            action: action.clone(),
        };
        let peer = self.peer.clone();
        relay
            .hub
            .insert_after(reply.encode().into(), &topic, self.id, peer);
        tracing::info!(conn = %self.id, action, "relay client registered");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::Shared;
    use crate::fanout::Hub;
    use crate::testing::{self, Remote};
    use governor::Quota;
    use std::num::NonZeroU32;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn relay(shared: &Shared) -> Arc<Relay> {
        let hub = Arc::new(Hub::default());
        let inbox = Arc::new(testing::HubInbox(hub.clone()));
        let parts = testing::parts(shared, hub, inbox);
        let per_second = |n| Quota::per_second(NonZeroU32::new(n).unwrap());
        let shutdown = CancellationToken::new();
        Arc::new(Relay {
            instance: parts.instance,
            broker: parts.broker,
            presence: parts.presence,
            hub: parts.hub,
            guard: parts.guard,
            auth: None,
            limits: ws::Limits {
                max_message_bytes: 1024,
                keepalive: ws::Keepalive::start(Duration::from_secs(20), shutdown.clone()),
                coalesce: Duration::ZERO,
                frames: per_second(100),
                bytes: Some(per_second(100_000)),
            },
            outbound_queue: 16,
            shutdown,
            tasks: TaskTracker::new(),
            outbox: None,
        })
    }

    fn connect(relay: &Arc<Relay>) -> Remote {
        let (socket, remote) = testing::socket();
        tokio::spawn(run(relay.clone(), socket, None));
        remote
    }

    async fn registered(relay: &Arc<Relay>, action: &str) -> (Remote, Uuid) {
        let mut client = connect(relay);
        client.text(&format!(r#"{{"action":"{action}"}}"#));
        let reply = client.next().await.expect("a reply");
        match RelayReply::decode(&reply) {
            Some(RelayReply::Registered { id, .. }) => (client, id),
            other => panic!("not registered: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_first_frame_without_an_action_is_refused_and_closed() {
        let relay = relay(&Shared::default());
        for first in [r#"{"no":"action"}"#, "not json", r#"{"action":""}"#] {
            let mut client = connect(&relay);
            client.text(first);
            let reply = client.next().await.expect("an error");
            assert!(matches!(
                RelayReply::decode(&reply),
                Some(RelayReply::Error { .. })
            ));
            assert_eq!(client.next().await, Err(Some(close::POLICY)), "{first}");
        }
        let mut client = connect(&relay);
        client.binary(b"{\"action\":\"a\"}");
        assert!(client.next().await.is_ok(), "an error frame first");
        assert_eq!(client.next().await, Err(Some(close::POLICY)));
    }

    #[tokio::test]
    async fn frames_go_to_the_other_clients_of_the_action_on_every_instance() {
        let shared = Shared::default();
        let (here, there) = (relay(&shared), relay(&shared));
        let (mut a, _) = registered(&here, "lights").await;
        let (mut b, _) = registered(&there, "lights").await;
        let (mut c, _) = registered(&here, "lights").await;
        let (elsewhere, _) = registered(&there, "other").await;
        let frame = r#"{ "on" : true }"#;
        a.text(frame);
        assert_eq!(b.next().await.unwrap(), frame);
        assert_eq!(c.next().await.unwrap(), frame);
        // Not JSON: refused to its sender alone, which stays connected.
        b.text("{oops");
        let reply = b.next().await.unwrap();
        assert!(matches!(
            RelayReply::decode(&reply),
            Some(RelayReply::Error { .. })
        ));
        // What each gets next is the fence: nothing crossed before it.
        elsewhere.text(r#"{"x":1}"#);
        c.text(r#"{"fence":1}"#);
        assert_eq!(a.next().await.unwrap(), r#"{"fence":1}"#);
        assert_eq!(b.next().await.unwrap(), r#"{"fence":1}"#);
    }

    /// What an idle relay connection's task holds for its whole life: the
    /// upgrade's, the session's and the connection's futures, the session
    /// in the last (a debug build's figures, 760 bytes with some room, of
    /// which the session is 216; the task was 576 bytes besides a boxed
    /// connection future of 1,064 when the session waited in place).
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let relay = relay(&Shared::default());
        let session = move |socket| run(relay, socket, None);
        let task = testing::task_size::<_, _, Option<crate::admission::capacity::Slot>>(&session);
        assert!(task <= 800, "task: {task} bytes");
        let session = std::mem::size_of::<RelaySession>();
        assert!(session <= 240, "session: {session} bytes");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_leaves_the_registry() {
        let shared = Shared::default();
        let relay = relay(&shared);
        let (client, id) = registered(&relay, "a").await;
        assert_eq!(shared.relay_clients("a"), vec![id]);
        drop(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !shared.relay_clients("a").is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "still registered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!relay.hub.has_listeners(&Topic::Action("a".into())));
    }
}
